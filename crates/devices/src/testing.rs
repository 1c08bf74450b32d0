//! Test doubles shared by this crate's tests and by the VMM's tests.
//!
//! Re-exports the interrupt and clock doubles ([`CountingIrq`], [`FakeClock`]) and adds I/O
//! sinks for device output.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

pub use crate::interrupt::CountingIrq;
pub use crate::rate_limiter::FakeClock;

/// An output sink whose clones share one byte buffer (to inspect what a device wrote).
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An output sink on which every write and flush fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailingWriter;

impl Write for FailingWriter {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "FailingWriter"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "FailingWriter"))
    }
}
