//! squib's OS shim: host facilities `std` lacks, behind safe functions.
//!
//! Owns the `unsafe` FFI for them, each block with a `// SAFETY:` comment stating the invariant
//! that makes it sound. A macOS port provides the same functions.
//!
//! - [`process_cpu_time_us`], [`monotonic_time_us`]: stateless, callable from any thread.
//! - [`guest_memory`] (Linux): [`guest_memory::discard_range`], releasing guest-memory ranges
//!   to the host (`MADV_DONTNEED`, `MADV_REMOVE` for shared file mappings) for the balloon and
//!   virtio-mem; refuses any range not entirely inside guest memory.
//! - [`io_uring`] (Linux): [`io_uring::IoUring`], a safe submission/completion API over io_uring
//!   for the block device's `Async` engine. It owns the ring and keeps everything an outstanding
//!   operation points at alive until its completion is reaped; one owner at a time (`&mut self`).
//! - [`jail`] (Linux): the isolation system calls `squib-jailer` uses (mount namespace,
//!   `pivot_root`, `mknod`, `setrlimit`, `setns`, `close_range`, `fork`/`clone(CLONE_NEWPID)`,
//!   `setsid`, `dup2`), each a safe wrapper returning `io::Result`.
//! - [`memory_backing`] (Linux): [`memory_backing::PageBacking`] (`huge_pages`: normal pages,
//!   `MADV_HUGEPAGE`, or 2 MiB hugetlbfs pages) and anonymous guest memory built with it.
//! - [`pmem`] (Linux): [`pmem::PmemMapping`], a virtio-pmem backing file mapped `MAP_SHARED` as a
//!   2 MiB-aligned guest window (anonymous tail past the end of the file), and its flush
//!   (`msync` + `fdatasync`).
//! - [`snapshot_memory`] (Linux): the snapshot-restore guest-memory backends, `File` (private
//!   lazy mapping of the memory file) and `Uffd` (userfaultfd + Firecracker's handshake).
//! - [`sparse`] (Linux): data extents of a sparse file (`SEEK_DATA`/`SEEK_HOLE`), to merge diff
//!   memory files that came without a dirty list.
//! - [`uffd`] (Linux): a minimal userfaultfd (raw ioctls: create, register, copy, events).
//! - [`uffd_handler`] (Linux): a page-fault handler speaking Firecracker's UFFD protocol, for
//!   tests and as a reference.
//! - [`tap`] (Linux): [`tap::Tap`], a TAP interface opened the way Firecracker opens it
//!   (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking), with the vnet-header-size and offload
//!   ioctls and frame read/write helpers, for virtio-net.
//! - [`signals`]: Firecracker's fatal-signal handlers (metrics, exit codes) and SIGPIPE counting.
//! - [`sink`]: the log/metrics sink opener (file or FIFO, non-blocking, appending).
//! - [`netns`] (Linux): private network namespaces, `IFF_UP`, and raw `AF_PACKET` sockets, for
//!   tests of network devices.
//! - [`seccomp`] (Linux): per-thread seccomp-BPF filters (squib's allow-lists, Firecracker's
//!   `--seccomp-filter` format), their installation, and the `SIGSYS` handler (exit 148).

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(target_os = "linux")]
pub mod guest_memory;
#[cfg(target_os = "linux")]
pub mod io_uring;
#[cfg(target_os = "linux")]
pub mod jail;
#[cfg(target_os = "linux")]
pub mod memory_backing;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod pmem;
#[cfg(target_os = "linux")]
pub mod seccomp;
pub mod signals;
pub mod sink;
#[cfg(target_os = "linux")]
pub mod snapshot_memory;
#[cfg(target_os = "linux")]
pub mod sparse;
#[cfg(target_os = "linux")]
pub mod tap;
#[cfg(target_os = "linux")]
pub mod uffd;
#[cfg(target_os = "linux")]
pub mod uffd_handler;

/// Puts `fd` in non-blocking mode (`O_NONBLOCK`), e.g. a timerfd an event loop reads only
/// after epoll reported it readable, so that a timer re-armed in between cannot block the loop.
#[cfg(target_os = "linux")]
pub fn set_nonblocking(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL on the descriptor `fd` owns (kept open by the borrow for the duration of
    // the call); no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: F_SETFL with an integer argument on the same descriptor; no memory is passed.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
pub use seccomp::{ThreadCategory, install_for_current_thread as install_thread_filter};

/// Thread categories of seccomp filters (no filters on this OS).
#[cfg(not(target_os = "linux"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadCategory {
    /// The VMM thread.
    Vmm,
    /// The API thread.
    Api,
    /// vCPU threads.
    Vcpu,
}

/// Install the calling thread's seccomp filter: nothing to do on this OS.
#[cfg(not(target_os = "linux"))]
pub fn install_thread_filter(_category: ThreadCategory) -> std::io::Result<()> {
    Ok(())
}

/// CPU time consumed by this process so far, in microseconds (`CLOCK_PROCESS_CPUTIME_ID`).
/// Returns 0 if the clock is unavailable.
pub fn process_cpu_time_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec owned by this frame; clock_gettime only writes
    // into it and has no other side effects.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1000)
}

/// `CLOCK_MONOTONIC` now, in microseconds (Firecracker's `get_time_us(ClockType::Monotonic)`,
/// the clock of the jailer's `--start-time-us`). Returns 0 if the clock is unavailable.
pub fn monotonic_time_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec owned by this frame; clock_gettime only writes
    // into it and has no other side effects.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_report_monotonic_process_cpu_time() {
        let a = process_cpu_time_us();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time_us() >= a);
    }
}
