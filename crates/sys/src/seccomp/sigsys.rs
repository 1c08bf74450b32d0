//! The log lines of a denied system call, for the process's one `SIGSYS` handler
//! ([`crate::signals`], which also stores `seccomp.num_faults`, writes the last metrics line and
//! `_exit`s with 148).
//!
//! Firecracker's behaviour: the filter traps (`SECCOMP_RET_TRAP`), the handler logs
//! `Shutting down VM after intercepting signal 31, code 1.` and
//! `Shutting down VM after intercepting a bad syscall (<nr>).`; a `SIGSYS` that is not a seccomp
//! trap exits with 2 (`UnexpectedError`).
//!
//! The handler runs under the very filter that trapped, possibly inside `malloc` or holding the
//! logger's lock, so these lines allocate nothing and take no lock: they are formatted into a
//! stack buffer and `write(2)`n to a descriptor given at startup ([`set_fatal_log`]), with the
//! logger's prefix (`<RFC 3339 time> [<id>:<thread>[:ERROR]] `). The thread name comes from a
//! thread-local filled when the thread installed its filter. They only use `write` and
//! `clock_gettime`, which every squib filter allows.

use std::{
    cell::Cell,
    fmt::Write as _,
    os::fd::{AsRawFd, OwnedFd},
    os::raw::{c_int, c_void},
    sync::OnceLock,
};

/// `si_code` of a seccomp trap (`SYS_SECCOMP`).
pub const SYS_SECCOMP: c_int = 1;
/// Offset of `si_syscall` in `siginfo_t`, in `c_int`s (as Firecracker reads it).
const SI_OFF_SYSCALL: usize = 6;

/// Where and how the handler logs.
#[derive(Debug)]
pub struct FatalLog {
    /// A descriptor of the log sink (stdout or `--log-path`), owned by the handler from now on.
    pub fd: OwnedFd,
    /// The instance id of the log prefix.
    pub id: String,
    /// `--show-level`: add `:ERROR` to the prefix.
    pub show_level: bool,
}

static FATAL_LOG: OnceLock<FatalLog> = OnceLock::new();

const NAME_LEN: usize = 32;

thread_local! {
    /// The calling thread's name (for the log prefix): const-initialised, no destructor, so
    /// reading it from a signal handler is plain TLS.
    static THREAD_NAME: Cell<([u8; NAME_LEN], usize)> = const { Cell::new(([0; NAME_LEN], 0)) };
}

/// Record the calling thread's name for the handler's log line.
pub(super) fn remember_thread_name() {
    let current = std::thread::current();
    let name = current.name().unwrap_or("main").as_bytes();
    let len = name.len().min(NAME_LEN);
    let mut buf = [0u8; NAME_LEN];
    buf[..len].copy_from_slice(&name[..len]);
    THREAD_NAME.with(|c| c.set((buf, len)));
}

/// Where the `SIGSYS` lines go (without it they are not written); a second call keeps the
/// first `log`. The handler itself is installed by [`crate::signals::install`].
pub fn set_fatal_log(log: FatalLog) {
    let _ = FATAL_LOG.set(log);
}

/// A fixed buffer for `core::fmt` (no allocation); output past its end is dropped.
struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn log_line(args: std::fmt::Arguments<'_>) {
    let Some(log) = FATAL_LOG.get() else {
        return;
    };
    let mut line = StackBuf {
        buf: [0; 512],
        len: 0,
    };
    write_timestamp(&mut line);
    let (name, len) = THREAD_NAME.with(Cell::get);
    let name = std::str::from_utf8(&name[..len]).unwrap_or("?");
    let name = if name.is_empty() { "main" } else { name };
    let _ = write!(line, " [{}:{name}", log.id);
    if log.show_level {
        let _ = line.write_str(":ERROR");
    }
    let _ = writeln!(line, "] {args}");
    let mut done = 0;
    while done < line.len {
        // SAFETY: writes bytes of our own live stack buffer to a descriptor we own; `write` is
        // async-signal-safe.
        let n = unsafe {
            libc::write(
                log.fd.as_raw_fd(),
                line.buf[done..].as_ptr().cast::<c_void>(),
                line.len - done,
            )
        };
        match usize::try_from(n) {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn` (UTC), as the logger prints it.
fn write_timestamp(out: &mut StackBuf) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts) };
    let secs = ts.tv_sec.max(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ts.tv_nsec
    );
}

/// `Shutting down VM after intercepting signal 31, code <code>.`
pub(crate) fn log_signal(code: c_int) {
    log_line(format_args!(
        "Shutting down VM after intercepting signal {}, code {code}.",
        libc::SIGSYS
    ));
}

/// `Shutting down VM after intercepting a bad syscall (<nr>).`
pub(crate) fn log_bad_syscall(syscall: c_int) {
    log_line(format_args!(
        "Shutting down VM after intercepting a bad syscall ({syscall})."
    ));
}

/// The number of the denied system call.
///
/// # Safety
/// `info` is the valid `siginfo_t` of a `SIGSYS` with `si_code == SYS_SECCOMP`.
pub(crate) unsafe fn trapped_syscall(info: *const libc::siginfo_t) -> c_int {
    // SAFETY: for SYS_SECCOMP the kernel fills the `_sigsys` member; `si_syscall` is the `int`
    // at byte 24 of siginfo_t (x86_64 and aarch64), inside the 128-byte structure.
    unsafe { *info.cast::<c_int>().add(SI_OFF_SYSCALL) }
}
