//! The `Async` I/O engine: io_uring (through `squib_sys::io_uring`) plus the device's bounded
//! in-flight table.
//!
//! # What it owns
//!
//! [`AsyncEngine`] owns the ring, the eventfd the kernel signals on every completion (exposed to
//! the event loop through [`VirtioDevice::completion_events`](crate::virtio::VirtioDevice)), and
//! the in-flight table: for each submitted request, the descriptor chain's head index, the guest
//! address of its status byte, what it was and when it started. The table has one entry per queue
//! slot ([`MAX_QUEUE_SIZE`](crate::virtio::MAX_QUEUE_SIZE)); when it is full the device stops
//! draining the queue (`io_engine_throttled_events`) and resumes on the next completion.
//!
//! Reads and writes are one vectored `readv`/`writev` per request, straight between the backing
//! file and the chain's data buffers (no bounce buffer); a flush is an `fsync` that the kernel
//! starts only after everything submitted before it has completed. squib-sys keeps the guest
//! memory mappings and the file alive until each completion is reaped, so nothing here is
//! `unsafe`.
//!
//! # Generations
//!
//! A request's `user_data` is its table index plus the table's generation. A device reset waits
//! for every outstanding completion and discards them ([`AsyncEngine::discard_all`]); should that
//! wait fail, the generation still moves on, so a late completion of an old request can never be
//! mistaken for a new request that reuses its table entry.
//!
//! # Threading
//!
//! Owned by the device, used under its mutex: submissions and reaping on the VMM thread (queue
//! and completion events), `discard_all` on whichever thread resets the device (a vCPU thread),
//! blocking it until the kernel is done with the outstanding requests.

use std::io;
use std::time::Instant;

use squib_core::GuestMemoryMmap;
use squib_sys::io_uring::{IoUring, SubmitError};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::io::Disk;
use super::request::{Request, RequestType};

/// What an in-flight request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read `len` bytes into the guest.
    Read(u32),
    /// Write `len` bytes from the guest.
    Write(u32),
    /// `fsync`.
    Flush,
}

/// One submitted, not yet completed request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    /// Head index of the descriptor chain (the used-ring id).
    pub(crate) head: u16,
    /// Where the status byte goes.
    pub(crate) status: GuestAddress,
    /// What the request does.
    pub(crate) op: Op,
    /// Submission time (for `read_agg` / `write_agg`).
    pub(crate) start: Instant,
}

/// The io_uring engine of one block device (see the [module docs](self)).
pub(crate) struct AsyncEngine {
    ring: IoUring,
    evt: [EventFd; 1],
    table: Vec<Option<InFlight>>,
    free: Vec<u16>,
    generation: u32,
    /// Queue draining stopped because the table was full; a completion resumes it.
    pub(crate) throttled: bool,
    /// Test seam: keep submissions queued in the ring instead of handing them to the kernel, so
    /// tests can hold requests in flight deterministically.
    #[cfg(test)]
    pub(crate) hold: bool,
}

impl std::fmt::Debug for AsyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncEngine")
            .field("ring", &self.ring)
            .field("in_flight", &self.in_flight())
            .field("throttled", &self.throttled)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be submitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// The in-flight table (or the ring) is full.
    #[error("the io_uring engine is full")]
    Full,
    /// The ring refused the buffers.
    #[error("{0}")]
    Submit(#[source] SubmitError),
    /// The request type has no asynchronous form.
    #[error("request type {0:?} is not asynchronous")]
    NotAsync(RequestType),
}

impl AsyncEngine {
    /// A ring and table for `capacity` in-flight requests, with its completion eventfd
    /// registered. The error is the ring's (`io_uring_setup`, probe) or the eventfd's.
    pub(crate) fn new(capacity: u16) -> io::Result<Self> {
        let ring = IoUring::new(u32::from(capacity))?;
        let evt = EventFd::new(EFD_NONBLOCK)?;
        ring.register_eventfd(&evt)?;
        Ok(Self {
            ring,
            evt: [evt],
            table: vec![None; usize::from(capacity)],
            free: (0..capacity).rev().collect(),
            generation: 0,
            throttled: false,
            #[cfg(test)]
            hold: false,
        })
    }

    /// The completion eventfd, as a one-element slice for `completion_events`.
    pub(crate) fn events(&self) -> &[EventFd] {
        &self.evt
    }

    /// Clears the completion eventfd (before reaping, so no wake-up is lost).
    pub(crate) fn clear_event(&self) -> io::Result<()> {
        match self.evt[0].read() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Requests submitted and not yet reaped.
    pub(crate) fn in_flight(&self) -> usize {
        self.table.len() - self.free.len()
    }

    /// Whether a submission would fail with [`EngineError::Full`].
    pub(crate) fn is_full(&self) -> bool {
        self.free.is_empty() || self.ring.is_full()
    }

    /// Queues `req` (chain `head`) on the ring: `IN` → `readv`, `OUT` → `writev`, `FLUSH` →
    /// `fsync`. The kernel sees it at the next [`kick`](Self::kick).
    pub(crate) fn submit(
        &mut self,
        disk: &Disk,
        mem: &GuestMemoryMmap,
        req: &Request,
        head: u16,
    ) -> Result<(), EngineError> {
        let op = match req.kind {
            RequestType::In => Op::Read(req.data_len),
            RequestType::Out => Op::Write(req.data_len),
            RequestType::Flush => Op::Flush,
            other => return Err(EngineError::NotAsync(other)),
        };
        let idx = self.free.pop().ok_or(EngineError::Full)?;
        let user_data = (u64::from(self.generation) << 32) | u64::from(idx);
        let bufs = req.data.iter().map(|s| (s.addr, s.len as usize));
        let file = disk.file();
        let submitted = match op {
            Op::Read(_) => self
                .ring
                .submit_read(file, req.offset(), mem, bufs, user_data),
            Op::Write(_) => self
                .ring
                .submit_write(file, req.offset(), mem, bufs, user_data),
            Op::Flush => self.ring.submit_fsync(file, user_data),
        };
        if let Err(err) = submitted {
            self.free.push(idx);
            return Err(match err {
                SubmitError::Full => EngineError::Full,
                other => EngineError::Submit(other),
            });
        }
        self.table[usize::from(idx)] = Some(InFlight {
            head,
            status: req.status,
            op,
            start: Instant::now(),
        });
        Ok(())
    }

    /// Hands the queued submissions to the kernel.
    pub(crate) fn kick(&mut self) -> io::Result<usize> {
        #[cfg(test)]
        if self.hold {
            return Ok(0);
        }
        self.ring.submit()
    }

    /// Calls `f` with every request the kernel has completed so far and its result (bytes moved,
    /// 0 for a flush, or `-errno`), freeing its table entry.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(InFlight, i32)) {
        for c in self.ring.completions() {
            // The low 16 bits are the table index; bits 32.. the generation.
            #[expect(clippy::cast_possible_truncation, reason = "bit fields of user_data")]
            let (generation, idx) = ((c.user_data >> 32) as u32, c.user_data as u16);
            if generation != self.generation {
                continue;
            }
            if let Some(done) = self.table.get_mut(usize::from(idx)).and_then(Option::take) {
                self.free.push(idx);
                f(done, c.result);
            }
        }
    }

    /// Blocks until at least one completion can be reaped (returns at once if nothing is in
    /// flight).
    pub(crate) fn wait(&mut self) -> io::Result<()> {
        if self.in_flight() == 0 {
            return Ok(());
        }
        self.ring.wait()
    }

    /// Device reset: waits for every outstanding request and forgets them all (no status byte,
    /// no used-ring entry). Returns how many requests were discarded. The table is cleared and
    /// the generation bumped even if waiting fails.
    pub(crate) fn discard_all(&mut self) -> io::Result<usize> {
        let n = self.in_flight();
        let waited = self.ring.wait_all_discard();
        self.generation = self.generation.wrapping_add(1);
        self.table.iter_mut().for_each(|e| *e = None);
        let capacity = u16::try_from(self.table.len()).unwrap_or(u16::MAX);
        self.free = (0..capacity).rev().collect();
        self.throttled = false;
        waited.map(|_| n)
    }
}
