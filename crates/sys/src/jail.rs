//! The process-isolation system calls `squib-jailer` needs and `std` lacks.
//!
//! Every function is a thin, safe wrapper over one Linux system call (or a fixed sequence the
//! caller cannot get wrong) and reports failure as the `errno`-carrying [`io::Error`]; the
//! jailer maps that into Firecracker's error texts. What `std` already offers safely (`chown`,
//! `fchown`, `mkdir`, `chdir`, `setuid`/`setgid` at exec through `CommandExt`) is not repeated
//! here.
//!
//! The two process-duplicating calls ([`fork`] and [`clone_into_new_pid_ns`]) need a
//! [`SingleThreaded`] token, made while the process has one thread: after a fork only the calling
//! thread exists in the child, so a lock held by another thread (the allocator's, stdio's) would
//! stay locked forever. The jailer is single-threaded by construction; the check turns a
//! violation into an error instead of a hang.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `O_NOFOLLOW`, for `OpenOptionsExt::custom_flags` (std has no constant for it).
pub const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;

/// Which side of a process duplication the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkResult {
    /// The new process.
    Child,
    /// The original process; the new process's pid (as seen from the caller's pid namespace).
    Parent(i32),
}

/// A resource [`set_rlimit`] can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_FSIZE`: the largest file the process may create, in bytes.
    FileSize,
    /// `RLIMIT_NOFILE`: one more than the highest file descriptor the process may open.
    OpenFiles,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_long(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Close every file descriptor above stderr (`close_range(3, ~0, CLOSE_RANGE_UNSHARE)`).
///
/// Call it first thing in `main`, before anything in the process owns a descriptor: an
/// `OwnedFd` opened earlier would be left pointing at a closed (or reused) number.
pub fn close_fds_above_stdio() -> io::Result<()> {
    // SAFETY: close_range takes plain integers and touches no memory of ours. Closing
    // descriptors other Rust objects may own is an I/O-safety concern the caller accepts (see
    // the doc comment); it cannot corrupt memory.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        )
    })
}

/// Move the calling process into a new mount namespace (`unshare(CLONE_NEWNS)`).
pub fn unshare_mount_ns() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })
}

/// Make every mount under `/` a recursive slave (`mount(NULL, "/", NULL, MS_SLAVE|MS_REC)`), so
/// nothing this namespace does propagates back to the host and `pivot_root` is allowed.
pub fn make_root_rslave() -> io::Result<()> {
    // SAFETY: the target is a NUL-terminated literal; the other pointers are NULL, which mount
    // accepts for a propagation change.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        )
    })
}

/// Bind-mount `path` over itself, recursively (`MS_BIND|MS_REC`), making it a mount point.
pub fn bind_mount_onto_itself(path: &Path) -> io::Result<()> {
    let p = cstring(path)?;
    // SAFETY: `p` is a NUL-terminated string that outlives the call; fstype and data may be NULL
    // for a bind mount.
    check(unsafe {
        libc::mount(
            p.as_ptr(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = cstring(new_root)?;
    let put_old = cstring(put_old)?;
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
}

/// Lazily unmount `path` (`umount2(path, MNT_DETACH)`).
pub fn umount_detach(path: &Path) -> io::Result<()> {
    let p = cstring(path)?;
    // SAFETY: `p` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) })
}

/// Create the character device node `path` with permission bits `mode` and number
/// `major:minor` (`mknod(path, S_IFCHR | mode, makedev(major, minor))`).
pub fn mknod_char(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cstring(path)?;
    // SAFETY: `p` is a NUL-terminated string that outlives the call; the mode and device number
    // are plain integers.
    check(unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    })
}

/// Set both the soft and the hard limit of `resource` to `value`.
pub fn set_rlimit(resource: Resource, value: u64) -> io::Result<()> {
    let resource = match resource {
        Resource::FileSize => libc::RLIMIT_FSIZE,
        Resource::OpenFiles => libc::RLIMIT_NOFILE,
    };
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit owned by this frame; setrlimit only reads it.
    check(unsafe { libc::setrlimit(resource, &raw const limit) })
}

/// Join the network namespace `ns` refers to (`setns(fd, CLONE_NEWNET)`).
pub fn join_net_ns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed, hence open for the duration of the call.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })
}

/// Start a new session (`setsid()`); the caller must not be a process-group leader.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() })
}

/// The session id of the calling process (`getsid(0)`).
pub fn session_id() -> io::Result<i32> {
    // SAFETY: getsid takes a pid and touches no memory of ours.
    let sid = unsafe { libc::getsid(0) };
    if sid == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sid)
    }
}

/// Make descriptor `target` (0, 1 or 2 in practice) a copy of `src` (`dup2`).
pub fn dup2(src: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: `src` is borrowed, hence open; dup2 replaces `target` atomically and touches no
    // memory. The jailer only redirects the standard streams, which no Rust object owns.
    check(unsafe { libc::dup2(src.as_raw_fd(), target) })
}

/// The number of threads in this process, from `/proc/self/status`.
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// Proof that the process was single-threaded when it was made; required by [`fork`] and
/// [`clone_into_new_pid_ns`].
///
/// Take it while `/proc` is still reachable (before `pivot_root`): after that the thread count
/// cannot be read. The token is neither `Send` nor `Sync`, and its holder must not start threads
/// while it lives (the jailer never starts any). When `/proc` is still readable at fork time the
/// count is checked again.
#[derive(Debug)]
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// Verify that the process has exactly one thread.
    pub fn verify() -> io::Result<Self> {
        match thread_count()? {
            1 => Ok(Self(std::marker::PhantomData)),
            n => Err(io::Error::other(format!(
                "refusing to fork a process with {n} threads"
            ))),
        }
    }
}

/// Check the thread count again where `/proc` is still readable.
fn recheck() -> io::Result<()> {
    match thread_count() {
        Ok(1) | Err(_) => Ok(()),
        Ok(n) => Err(io::Error::other(format!(
            "refusing to fork a process with {n} threads"
        ))),
    }
}

/// `fork()`, in a single-threaded process only (see the module docs).
pub fn fork(_token: &SingleThreaded) -> io::Result<ForkResult> {
    recheck()?;
    // SAFETY: the process has exactly one thread (the token's invariant), so the child inherits
    // no lock held by a thread that does not exist in it; fork touches no memory of ours.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent(pid)),
    }
}

/// Duplicate the process into a new PID namespace (`clone(CLONE_NEWPID)` with no new stack: the
/// child continues on a copy of the caller's stack, like `fork`). The child is pid 1 of the new
/// namespace. Single-threaded processes only (see the module docs).
pub fn clone_into_new_pid_ns(_token: &SingleThreaded) -> io::Result<ForkResult> {
    recheck()?;
    // SAFETY: without CLONE_VM the child gets a copy-on-write copy of the address space, so a
    // NULL stack means "keep using the (copied) current stack", exactly as fork does; the parent
    // and child tid pointers and tls are unused (0) because no CLONE_*TID/SETTLS flag is passed.
    // The process is single-threaded (the token's invariant). On x86_64 the raw argument order
    // is flags, stack, parent_tid, child_tid, tls; all the trailing ones are 0 here.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(libc::CLONE_NEWPID),
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => {
            Ok(ForkResult::Parent(i32::try_from(pid).map_err(|_| {
                io::Error::other("clone returned an invalid pid")
            })?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_reject_paths_with_nul() {
        let err = mknod_char(Path::new("a\0b"), 0o600, 1, 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn test_should_count_threads_and_refuse_multithreaded_forks() {
        // The test harness runs tests on their own threads: never single-threaded here.
        assert!(thread_count().unwrap() >= 2);
        assert!(SingleThreaded::verify().is_err());
    }

    #[test]
    fn test_should_report_errno_for_failed_calls() {
        // umount of something that is not a mount point: EINVAL (root) or EPERM (non-root).
        let err = umount_detach(Path::new("/proc/self")).unwrap_err();
        assert!(err.raw_os_error().is_some());
    }
}
