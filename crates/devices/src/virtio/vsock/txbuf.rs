//! A connection's bounded TX buffer: guest data its host socket could not take yet.
//!
//! The device must consume every TX packet the guest posts (the buffers go back on the used
//! ring), so when a host reader is slow the data waits here. The buffer never grows past
//! [`TX_BUF_SIZE`] (64 KiB, Firecracker's `CONN_TX_BUF_SIZE`, which is also the `buf_alloc`
//! the device advertises): a guest that respects the credit it was given never overflows it,
//! and one that does not gets its connection reset instead of growing host memory. The storage
//! is allocated on first use and released when the buffer drains. Single-threaded (owned by one
//! connection on the VMM thread).

use std::collections::VecDeque;
use std::io::{self, Write};

/// Capacity of a connection's TX buffer.
pub const TX_BUF_SIZE: u32 = 64 * 1024;

const CAP: usize = TX_BUF_SIZE as usize;

/// The buffer would overflow: the guest sent more than its credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Attempted to push data to a full TX buffer")]
pub struct TxBufFull;

/// A byte FIFO of at most [`TX_BUF_SIZE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct TxBuf {
    data: VecDeque<u8>,
}

impl TxBuf {
    #[cfg_attr(not(test), expect(dead_code, reason = "used by tests"))]
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends all of `src`, or nothing if it does not fit.
    pub(crate) fn push(&mut self, src: &[u8]) -> Result<(), TxBufFull> {
        if src.len() > CAP - self.data.len() {
            return Err(TxBufFull);
        }
        if self.data.capacity() == 0 {
            self.data.reserve_exact(CAP);
        }
        self.data.extend(src);
        Ok(())
    }

    /// Writes as much as `sink` takes; returns the number of bytes written. `WouldBlock` after
    /// a partial write is not an error.
    pub(crate) fn flush_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.data.is_empty() {
            let (front, _) = self.data.as_slices();
            match sink.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.data.drain(..n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.data.is_empty() {
            self.clear();
        }
        Ok(total)
    }

    /// Drops everything and releases the storage.
    pub(crate) fn clear(&mut self) {
        self.data = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.taken.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_txbuf_bounded_fifo() {
        let mut b = TxBuf::default();
        assert_eq!(b.data.capacity(), 0);
        b.push(&[1; 1000]).unwrap();
        b.push(&vec![2; CAP - 1000]).unwrap();
        assert_eq!(b.push(&[3]), Err(TxBufFull));
        assert_eq!(b.len(), CAP);
        let mut s = Sink {
            taken: Vec::new(),
            room: 1500,
        };
        assert_eq!(b.flush_to(&mut s).unwrap(), 1500);
        assert_eq!(&s.taken[..1000], &[1; 1000][..]);
        assert_eq!(&s.taken[1000..], &[2; 500][..]);
        b.push(&[4; 1500]).unwrap();
        s.room = usize::MAX;
        assert_eq!(b.flush_to(&mut s).unwrap(), CAP);
        assert!(b.is_empty());
        assert_eq!(b.data.capacity(), 0, "storage released when drained");
        let mut s = Sink {
            taken: Vec::new(),
            room: 0,
        };
        b.push(&[5]).unwrap();
        assert_eq!(
            b.flush_to(&mut s).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(b.len(), 1);
    }
}
