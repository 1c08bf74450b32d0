//! io_uring behind a safe API, for the block device's `Async` engine.
//!
//! # What this module owns
//!
//! [`IoUring`] owns one io_uring instance (the `io-uring` crate's), a bounded table of the
//! operations the kernel may still be working on, and everything those operations point at. The
//! operations are vectored reads and writes between a file and guest memory, and `fsync`:
//! [`IoUring::submit_read`], [`IoUring::submit_write`] and [`IoUring::submit_fsync`] queue an
//! entry, [`IoUring::submit`] hands queued entries to the kernel, and [`IoUring::completions`]
//! reaps finished ones as `(user_data, result)` pairs. [`IoUring::register_eventfd`] makes the
//! kernel signal an eventfd for every completion, so an event loop can wait for them with epoll.
//!
//! # Why the submission functions are safe
//!
//! The kernel reads and writes the buffers of an operation after the submitting call returns, so
//! the usual `io_uring` contract ("the buffers stay valid until the completion is reaped") cannot
//! be expressed with a borrow. Instead, the caller hands over the *owners* and this module keeps
//! them alive:
//!
//! - Buffers are named as guest-physical ranges of a [`GuestMemoryMmap`], never as raw pointers.
//!   This module translates them to host addresses itself (vm-memory's `get_slices`), and stores
//!   a clone of the `GuestMemoryMmap` (reference-counted handles on its mappings) with the
//!   operation. The mappings therefore cannot be unmapped while the kernel may touch them.
//! - The file is an `Arc<File>`, cloned into the operation, so the descriptor number cannot be
//!   closed and reused for another file while the operation is queued or running.
//! - The `iovec` array is heap-allocated per operation and kept with it.
//! - An operation's keep-alives are dropped only when its completion has been reaped. Dropping
//!   the `IoUring` first waits for every outstanding operation; if waiting fails, the keep-alives
//!   are leaked (the memory stays mapped for the life of the process) rather than released early.
//!
//! Guest memory is `GuestMemoryMmap<()>` (no dirty bitmap: squib does not track dirty pages yet;
//! with one, reads would have to mark their buffers dirty). It is shared with the guest and is
//! only ever accessed through vm-memory's volatile accessors, which already assume that another
//! agent (the guest's vCPUs) may write it at any time; the kernel writing it asynchronously is
//! one more such agent. No Rust reference to guest
//! memory exists for it to invalidate. Which bytes the kernel writes is the caller's business:
//! the block device only submits the device-writable buffers of a descriptor chain.
//!
//! # Capacity
//!
//! At most `entries` operations (the table size, equal to the submission queue size) are
//! outstanding at once; a further submission fails with [`SubmitError::Full`] and the caller
//! retries after reaping. The completion queue is twice as large, so it can never overflow.
//!
//! # Threading
//!
//! `IoUring` is `Send`, and everything that submits, waits or reaps takes `&mut self`: one owner
//! at a time (the block device, behind its mutex). Completions may be posted by kernel worker
//! threads at any time; they are only consumed under `&mut self`. Waiting ([`IoUring::wait`],
//! `Drop`) blocks the calling thread until the kernel completes at least one operation.
//!
//! The kernel finishes some operations (buffered reads that waited for a page) as *task work* on
//! the thread that submitted them: it interrupts that thread's blocking system calls, which then
//! fail with `EINTR` (an event loop's `epoll_wait` must retry), and posts the completion, and
//! signals the registered eventfd, as that thread returns to user space.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types};
use squib_core::GuestMemoryMmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};

/// An operation the kernel finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The value the caller passed when submitting.
    pub user_data: u64,
    /// The system call's result: bytes transferred (reads and writes), 0 (`fsync`), or a negated
    /// `errno`.
    pub result: i32,
}

/// Why an operation was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// `capacity()` operations are already outstanding; reap completions first.
    #[error("the io_uring is full")]
    Full,
    /// A buffer is not entirely inside guest memory.
    #[error("buffer {addr:#x} (+{len:#x}) is not in guest memory")]
    InvalidBuffer {
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: usize,
    },
    /// More buffers than an `iovec` count can hold.
    #[error("too many buffers")]
    TooManyBuffers,
}

/// The direction of a vectored transfer.
#[derive(Clone, Copy)]
enum Dir {
    /// File → guest memory.
    Read,
    /// Guest memory → file.
    Write,
}

/// A heap-allocated `iovec` array, kept with its operation until the completion is reaped.
struct IoVecs(Box<[libc::iovec]>);

// SAFETY: `iovec` is `!Send` only because it holds a raw pointer. The pointers here are host
// addresses of guest memory that this module never dereferences; only the kernel does, and the
// mappings they point into are kept alive by the same operation's `GuestMemoryMmap` clone, which
// is itself `Send`. Moving the array to another thread changes nothing about that.
unsafe impl Send for IoVecs {}

/// Everything an outstanding operation points at.
struct Op {
    user_data: u64,
    _file: Arc<File>,
    _mem: Option<GuestMemoryMmap>,
    _iovecs: Option<IoVecs>,
}

/// An io_uring instance with a bounded table of outstanding operations (see the module docs).
pub struct IoUring {
    ring: io_uring::IoUring,
    /// Outstanding operations; the kernel's `user_data` is the index.
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
}

impl std::fmt::Debug for IoUring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUring")
            .field("capacity", &self.capacity())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// The opcodes the engine needs, with their names for the error message.
const REQUIRED_OPS: [(u8, &str); 3] = [
    (opcode::Readv::CODE, "IORING_OP_READV"),
    (opcode::Writev::CODE, "IORING_OP_WRITEV"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
];

impl IoUring {
    /// Creates a ring for up to `entries` outstanding operations (rounded up to a power of two by
    /// the kernel) and checks that the kernel supports every opcode this module uses.
    ///
    /// Fails with the OS error of `io_uring_setup` (`ENOSYS` without io_uring, `EPERM` when it is
    /// disabled by `kernel.io_uring_disabled`) or of the probe, or with
    /// [`io::ErrorKind::Unsupported`] when an opcode is missing.
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = io_uring::IoUring::new(entries)
            .map_err(|e| io::Error::new(e.kind(), format!("Error calling io_uring_setup: {e}")))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("Error probing the io_uring subsystem: {e}"),
            )
        })?;
        if let Some((_, name)) = REQUIRED_OPS.iter().find(|(op, _)| !probe.is_supported(*op)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the host kernel's io_uring does not support {name}"),
            ));
        }
        let capacity = ring.params().sq_entries() as usize;
        Ok(Self {
            ring,
            ops: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
        })
    }

    /// Makes the kernel signal `eventfd` whenever it posts a completion. The kernel checks that
    /// the descriptor is an eventfd (`EBADF`/`EINVAL` otherwise) and takes its own reference to
    /// it, so `eventfd` may be closed later without harm.
    pub fn register_eventfd(&self, eventfd: &impl AsRawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(eventfd.as_raw_fd())
    }

    /// The most operations that can be outstanding at once.
    pub fn capacity(&self) -> usize {
        self.ops.len()
    }

    /// Operations queued or running whose completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.ops.len() - self.free.len()
    }

    /// Whether a submission would fail with [`SubmitError::Full`].
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Queues a vectored read of `file` at byte `offset` into the guest-memory ranges `bufs`
    /// (filled in order). The completion's result is the number of bytes read.
    pub fn submit_read(
        &mut self,
        file: &Arc<File>,
        offset: u64,
        mem: &GuestMemoryMmap,
        bufs: impl IntoIterator<Item = (GuestAddress, usize)>,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        self.submit_rw(Dir::Read, file, offset, mem, bufs, user_data)
    }

    /// Queues a vectored write of the guest-memory ranges `bufs` (in order) to `file` at byte
    /// `offset`. The completion's result is the number of bytes written.
    pub fn submit_write(
        &mut self,
        file: &Arc<File>,
        offset: u64,
        mem: &GuestMemoryMmap,
        bufs: impl IntoIterator<Item = (GuestAddress, usize)>,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        self.submit_rw(Dir::Write, file, offset, mem, bufs, user_data)
    }

    /// Queues an `fsync` (data and metadata) of `file`. It starts only after every operation
    /// queued before it has completed (`IOSQE_IO_DRAIN`), so it covers writes still in flight.
    pub fn submit_fsync(&mut self, file: &Arc<File>, user_data: u64) -> Result<(), SubmitError> {
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
            .build()
            .flags(squeue::Flags::IO_DRAIN);
        self.push(
            entry,
            Op {
                user_data,
                _file: Arc::clone(file),
                _mem: None,
                _iovecs: None,
            },
        )
    }

    fn submit_rw(
        &mut self,
        dir: Dir,
        file: &Arc<File>,
        offset: u64,
        mem: &GuestMemoryMmap,
        bufs: impl IntoIterator<Item = (GuestAddress, usize)>,
        user_data: u64,
    ) -> Result<(), SubmitError> {
        if self.is_full() {
            return Err(SubmitError::Full);
        }
        let mut iovecs = Vec::new();
        for (addr, len) in bufs {
            // A range may span several regions; each region is one contiguous host mapping.
            for slice in mem.get_slices(addr, len) {
                let slice = slice.map_err(|_| SubmitError::InvalidBuffer { addr: addr.0, len })?;
                let base = match dir {
                    Dir::Read => slice.ptr_guard_mut().as_ptr(),
                    Dir::Write => slice.ptr_guard().as_ptr().cast_mut(),
                };
                iovecs.push(libc::iovec {
                    iov_base: base.cast(),
                    iov_len: slice.len(),
                });
            }
        }
        let count = u32::try_from(iovecs.len()).map_err(|_| SubmitError::TooManyBuffers)?;
        let iovecs = IoVecs(iovecs.into_boxed_slice());
        let fd = types::Fd(file.as_raw_fd());
        let ptr = iovecs.0.as_ptr();
        let entry = match dir {
            Dir::Read => opcode::Readv::new(fd, ptr, count).offset(offset).build(),
            Dir::Write => opcode::Writev::new(fd, ptr, count).offset(offset).build(),
        };
        self.push(
            entry,
            Op {
                user_data,
                _file: Arc::clone(file),
                _mem: Some(mem.clone()),
                _iovecs: Some(iovecs),
            },
        )
    }

    /// Stores `op` in a free slot and queues `entry` tagged with the slot index.
    fn push(&mut self, entry: squeue::Entry, op: Op) -> Result<(), SubmitError> {
        let slot = self.free.pop().ok_or(SubmitError::Full)?;
        let entry = entry.user_data(slot as u64);
        // SAFETY: `push` requires every address the entry carries to stay valid until the
        // operation completes. They are all owned by `op`: the iovec array (a boxed slice, whose
        // heap address does not change when `op` moves), the guest memory the iovecs point into
        // (`op` holds a clone of the `GuestMemoryMmap`; its regions are reference-counted and
        // unmapped only when the last clone drops; the host addresses came from vm-memory's
        // `get_slices` on that same memory, and without vm-memory's `xen` feature, which squib
        // does not enable, the pointer guards are plain addresses that stay valid while the
        // region is mapped), and the file descriptor (`op` holds an `Arc<File>`, so the number
        // cannot be closed and reused). `op` is stored in `self.ops[slot]` right below, and is
        // taken out only by `Completions::next` after the kernel posted the completion carrying
        // `slot` as its `user_data`, or never (leaked) if `Drop` cannot wait for it. The guest
        // memory is only ever accessed through volatile accessors, so the kernel writing it
        // concurrently invalidates no Rust reference.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Unreachable: the submission queue has `capacity()` entries and every queued entry
            // holds a slot. Keep the accounting right anyway.
            self.free.push(slot);
            return Err(SubmitError::Full);
        }
        self.ops[slot] = Some(op);
        Ok(())
    }

    /// Hands every queued entry to the kernel (`io_uring_enter`); returns how many it took. Does
    /// nothing (no system call) when nothing is queued.
    pub fn submit(&mut self) -> io::Result<usize> {
        if self.ring.submission().is_empty() {
            return Ok(0);
        }
        self.ring.submit()
    }

    /// Submits what is queued and blocks until at least one completion is available to reap (or
    /// returns at once if one already is, or if nothing is outstanding). Retries on `EINTR`.
    pub fn wait(&mut self) -> io::Result<()> {
        if self.in_flight() == 0 {
            return Ok(());
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reaps every completion the kernel has posted so far, releasing what each operation held.
    pub fn completions(&mut self) -> Completions<'_> {
        Completions {
            cq: self.ring.completion(),
            ops: &mut self.ops,
            free: &mut self.free,
        }
    }

    /// Waits for every outstanding operation and discards the completions; returns how many
    /// there were.
    pub fn wait_all_discard(&mut self) -> io::Result<usize> {
        let mut n = 0;
        while self.in_flight() > 0 {
            self.wait()?;
            n += self.completions().count();
        }
        Ok(n)
    }
}

/// Iterator over reaped completions ([`IoUring::completions`]). Completions not iterated stay
/// in the completion queue for the next call.
pub struct Completions<'a> {
    cq: io_uring::CompletionQueue<'a>,
    ops: &'a mut Vec<Option<Op>>,
    free: &'a mut Vec<usize>,
}

impl std::fmt::Debug for Completions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions")
            .field("available", &self.cq.len())
            .finish_non_exhaustive()
    }
}

impl Iterator for Completions<'_> {
    type Item = Completion;

    fn next(&mut self) -> Option<Completion> {
        loop {
            let cqe = self.cq.next()?;
            // Every entry this module queues carries the index of an occupied slot; anything else
            // (impossible) is skipped rather than trusted.
            let Ok(slot) = usize::try_from(cqe.user_data()) else {
                continue;
            };
            let Some(op) = self.ops.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            self.free.push(slot);
            return Some(Completion {
                user_data: op.user_data,
                result: cqe.result(),
            });
        }
    }
}

impl Drop for IoUring {
    fn drop(&mut self) {
        // The kernel may still read or write the memory the outstanding operations hold: wait for
        // all of them before their keep-alives go.
        let mut failures = 0;
        while self.in_flight() > 0 {
            match self.wait() {
                Ok(()) => {
                    self.completions().for_each(drop);
                }
                Err(_) if failures < 16 => failures += 1,
                Err(_) => {
                    // Cannot confirm the kernel is done: keep the memory mapped and the files
                    // open for the rest of the process rather than risk a use after unmap.
                    std::mem::forget(std::mem::take(&mut self.ops));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use vm_memory::Bytes;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
    use vmm_sys_util::tempfile::TempFile;

    use super::*;

    fn file_with(bytes: &[u8]) -> (TempFile, Arc<File>) {
        let tmp = TempFile::new().unwrap();
        tmp.as_file().write_all(bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.as_path())
            .unwrap();
        (tmp, Arc::new(f))
    }

    fn mem() -> GuestMemoryMmap {
        // Two adjacent regions, so a range can straddle them.
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000), (GuestAddress(0x2000), 0x2000)])
            .unwrap()
    }

    fn reap_one(ring: &mut IoUring) -> Completion {
        loop {
            ring.wait().unwrap();
            if let Some(c) = ring.completions().next() {
                return c;
            }
        }
    }

    #[test]
    fn test_read_write_fsync_roundtrip_across_regions() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let (tmp, file) = file_with(&data);
        let mem = mem();
        let mut ring = IoUring::new(8).unwrap();
        assert_eq!(ring.capacity(), 8);

        // 1 KiB at file offset 512, into a range straddling the region boundary and a second one.
        let bufs = [(GuestAddress(0x1e00), 0x300), (GuestAddress(0x100), 0x100)];
        ring.submit_read(&file, 512, &mem, bufs, 7).unwrap();
        assert_eq!(ring.in_flight(), 1);
        assert_eq!(ring.submit().unwrap(), 1);
        assert_eq!(
            reap_one(&mut ring),
            Completion {
                user_data: 7,
                result: 1024
            }
        );
        assert_eq!(ring.in_flight(), 0);
        let mut got = vec![0u8; 0x300];
        mem.read_slice(&mut got, GuestAddress(0x1e00)).unwrap();
        assert_eq!(got, data[512..512 + 0x300]);
        let mut got = vec![0u8; 0x100];
        mem.read_slice(&mut got, GuestAddress(0x100)).unwrap();
        assert_eq!(got, data[512 + 0x300..1536]);

        mem.write_slice(&[0xee; 0x200], GuestAddress(0x3000))
            .unwrap();
        ring.submit_write(&file, 0, &mem, [(GuestAddress(0x3000), 0x200)], 8)
            .unwrap();
        ring.submit_fsync(&file, 9).unwrap();
        ring.submit().unwrap();
        let mut done = Vec::new();
        while done.len() < 2 {
            done.push(reap_one(&mut ring));
        }
        done.sort_by_key(|c| c.user_data);
        assert_eq!(
            done,
            [
                Completion {
                    user_data: 8,
                    result: 0x200
                },
                Completion {
                    user_data: 9,
                    result: 0
                }
            ]
        );
        let mut f = tmp.as_file();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut head = [0u8; 0x200];
        f.read_exact(&mut head).unwrap();
        assert_eq!(head, [0xee; 0x200]);
    }

    #[test]
    fn test_errors_short_reads_and_capacity() {
        let (tmp, file) = file_with(&[1u8; 512]);
        let mem = mem();
        let mut ring = IoUring::new(2).unwrap();
        // Outside guest memory: refused before the kernel sees it.
        assert!(matches!(
            ring.submit_read(&file, 0, &mem, [(GuestAddress(0x3f00), 0x200)], 1),
            Err(SubmitError::InvalidBuffer {
                addr: 0x3f00,
                len: 0x200
            })
        ));
        assert_eq!(ring.in_flight(), 0);
        // Past the end of the file: a short (zero-byte) read, reported as such.
        ring.submit_read(&file, 4096, &mem, [(GuestAddress(0), 512)], 1)
            .unwrap();
        // A read-only file: the kernel's EBADF comes back as the result.
        let ro = Arc::new(File::open(tmp.as_path()).unwrap());
        ring.submit_write(&ro, 0, &mem, [(GuestAddress(0), 512)], 2)
            .unwrap();
        assert!(ring.is_full());
        assert!(matches!(
            ring.submit_fsync(&file, 3),
            Err(SubmitError::Full)
        ));
        ring.submit().unwrap();
        let mut done = [reap_one(&mut ring), reap_one(&mut ring)];
        done.sort_by_key(|c| c.user_data);
        assert_eq!(
            done[0],
            Completion {
                user_data: 1,
                result: 0
            }
        );
        assert_eq!(
            done[1],
            Completion {
                user_data: 2,
                result: -libc::EBADF
            }
        );
        assert!(!ring.is_full());
        // Nothing outstanding: wait returns at once.
        ring.wait().unwrap();
        assert_eq!(ring.completions().count(), 0);
    }

    #[test]
    fn test_eventfd_is_signalled_on_completion() {
        let (_tmp, file) = file_with(&[2u8; 512]);
        let mem = mem();
        let mut ring = IoUring::new(4).unwrap();
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        ring.register_eventfd(&evt).unwrap();
        assert!(evt.read().is_err(), "nothing yet");
        ring.submit_read(&file, 0, &mem, [(GuestAddress(0), 512)], 5)
            .unwrap();
        ring.submit().unwrap();
        let c = reap_one(&mut ring);
        assert_eq!(
            c,
            Completion {
                user_data: 5,
                result: 512
            }
        );
        assert!(evt.read().unwrap() >= 1);
    }

    #[test]
    fn test_drop_and_wait_all_wait_for_outstanding_operations() {
        let (_tmp, file) = file_with(&[3u8; 4096]);
        let mem = mem();
        let mut ring = IoUring::new(4).unwrap();
        for i in 0..4u64 {
            ring.submit_read(&file, 0, &mem, [(GuestAddress(i * 0x1000), 4096)], i)
                .unwrap();
        }
        // Not even submitted yet: wait_all submits them first.
        assert_eq!(ring.wait_all_discard().unwrap(), 4);
        assert_eq!(ring.in_flight(), 0);
        let mut b = [0u8; 4];
        mem.read_slice(&mut b, GuestAddress(0x3ffc)).unwrap();
        assert_eq!(b, [3; 4]);
        for i in 0..4u64 {
            ring.submit_write(&file, 0, &mem, [(GuestAddress(i * 0x1000), 4096)], i)
                .unwrap();
        }
        ring.submit().unwrap();
        // Dropping the ring and then the memory: the ring waits, so nothing is written after.
        drop(ring);
        drop(mem);
    }

    #[test]
    fn test_setup_errors_are_reported() {
        let err = IoUring::new(0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Error calling io_uring_setup: "),
            "{err}"
        );
        assert!(format!("{:?}", IoUring::new(2).unwrap()).contains("capacity: 2"));
    }
}
