//! Firecracker's process signal handlers, the only ones in the process: the `signals` and
//! `seccomp` metrics and the signal-specific exit codes.
//!
//! | signal | metric | action |
//! |---|---|---|
//! | SIGBUS, SIGSEGV, SIGXFSZ, SIGXCPU, SIGHUP, SIGILL | `signals.<name>` = 1 | log hook, metrics hook, exit 149/150/151/154/156/157 |
//! | SIGSYS from a seccomp trap | `seccomp.num_faults` = 1 | the two seccomp lines ([`crate::seccomp::sigsys`]), metrics hook, exit 148 |
//! | SIGSYS of another origin | none | the signal line, exit 2 (`UnexpectedError`) |
//! | SIGPIPE | `signals.sigpipe` += 1 | none (the failed write returns `EPIPE`) |
//!
//! The hooks (installed once with [`install`]) are the binary's last word, best effort, like
//! Firecracker's handler: a log line (not for `SIGSYS`, whose lines are written without
//! allocating or locking, because the handler runs under the filter that trapped, maybe inside
//! `malloc`) and a last metrics line (`try_lock`, never blocking); then the process ends with
//! `_exit` and the signal's exit code.
//!
//! Threading: the handlers run on whichever thread took the signal; everything they touch is a
//! relaxed atomic, a `OnceLock` set before they can run, or a `try_lock`.

use std::sync::OnceLock;

use libc::{c_int, c_void, siginfo_t};
use squib_core::metrics::{METRICS, StoreMetric};

/// The binary's last words, called from a fatal signal handler before `_exit`.
#[derive(Debug, Clone, Copy)]
pub struct FatalHooks {
    /// Logs `Shutting down VM after intercepting signal <signo>, code <code>.` (not called for
    /// `SIGSYS`, which logs without the logger).
    pub log: fn(signo: c_int, code: c_int),
    /// Writes a last metrics line (must not block: `try_lock`).
    pub flush_metrics: fn(),
}

static HOOKS: OnceLock<FatalHooks> = OnceLock::new();

/// `(signal, metric, exit code)` of every fatal signal (Firecracker's `FcExitCode`).
fn fatal_signal(signo: c_int) -> Option<(&'static StoreMetric, i32)> {
    let s = &METRICS.signals;
    Some(match signo {
        libc::SIGSYS => (&METRICS.seccomp.num_faults, 148),
        libc::SIGBUS => (&s.sigbus, 149),
        libc::SIGSEGV => (&s.sigsegv, 150),
        libc::SIGXFSZ => (&s.sigxfsz, 151),
        libc::SIGXCPU => (&s.sigxcpu, 154),
        libc::SIGHUP => (&s.sighup, 156),
        libc::SIGILL => (&s.sigill, 157),
        _ => return None,
    })
}

/// `FcExitCode::UnexpectedError`.
const UNEXPECTED_ERROR_EXIT_CODE: c_int = 2;

fn exit_now(code: c_int) -> ! {
    // SAFETY: `_exit` is async-signal-safe and ends the process without running destructors
    // or atexit handlers (which could allocate or issue denied system calls).
    unsafe { libc::_exit(code) }
}

extern "C" fn handle_fatal(num: c_int, info: *mut siginfo_t, _ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler.
    let (signo, code) = unsafe { ((*info).si_signo, (*info).si_code) };
    if num != signo {
        exit_now(UNEXPECTED_ERROR_EXIT_CODE);
    }
    let Some((metric, exit_code)) = fatal_signal(num) else {
        exit_now(UNEXPECTED_ERROR_EXIT_CODE);
    };
    if num == libc::SIGSYS {
        handle_sigsys(info, code, metric, exit_code);
    }
    metric.store(1);
    if let Some(hooks) = HOOKS.get() {
        (hooks.log)(num, code);
        (hooks.flush_metrics)();
    }
    exit_now(exit_code);
}

/// `SIGSYS`: Firecracker's two lines for a seccomp trap (`SYS_SECCOMP`), the metric, a last
/// metrics line, exit 148; any other `SIGSYS` logs the signal line and exits 2.
#[cfg(target_os = "linux")]
fn handle_sigsys(info: *mut siginfo_t, code: c_int, metric: &StoreMetric, exit_code: i32) -> ! {
    use crate::seccomp::sigsys;
    sigsys::log_signal(code);
    if code != sigsys::SYS_SECCOMP {
        exit_now(UNEXPECTED_ERROR_EXIT_CODE);
    }
    metric.store(1);
    // SAFETY: for SYS_SECCOMP the kernel fills the `_sigsys` member of the valid `siginfo_t`.
    let syscall = unsafe { sigsys::trapped_syscall(info) };
    sigsys::log_bad_syscall(syscall);
    if let Some(hooks) = HOOKS.get() {
        (hooks.flush_metrics)();
    }
    exit_now(exit_code);
}

/// `SIGSYS` without seccomp (not Linux): the generic path.
#[cfg(not(target_os = "linux"))]
fn handle_sigsys(_info: *mut siginfo_t, code: c_int, metric: &StoreMetric, exit_code: i32) -> ! {
    metric.store(1);
    if let Some(hooks) = HOOKS.get() {
        (hooks.log)(libc::SIGSYS, code);
        (hooks.flush_metrics)();
    }
    exit_now(exit_code);
}

extern "C" fn handle_sigpipe(_num: c_int, _info: *mut siginfo_t, _ctx: *mut c_void) {
    METRICS.signals.sigpipe.inc();
}

/// Installs the handlers (once per process; Firecracker installs them, `SIGSYS` included,
/// whether or not seccomp filters are on) with `hooks` for the fatal ones.
pub fn install(hooks: FatalHooks) -> std::io::Result<()> {
    if HOOKS.set(hooks).is_err() {
        return Ok(());
    }
    for signo in [
        libc::SIGSYS,
        libc::SIGBUS,
        libc::SIGSEGV,
        libc::SIGXFSZ,
        libc::SIGXCPU,
        libc::SIGHUP,
        libc::SIGILL,
    ] {
        register(signo, handle_fatal)?;
    }
    register(libc::SIGPIPE, handle_sigpipe)
}

type Handler = extern "C" fn(c_int, *mut siginfo_t, *mut c_void);

/// `sigaction(signo, SA_SIGINFO handler)`.
fn register(signo: c_int, handler: Handler) -> std::io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags, SIG_DFL).
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act.sa_mask` is a valid, writable `sigset_t` owned by this frame.
    unsafe { libc::sigemptyset(&raw mut act.sa_mask) };
    // SAFETY: `act` is fully initialised and outlives the call; the old action is not wanted.
    let rc = unsafe { libc::sigaction(signo, &raw const act, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fatal_signals_map_to_firecrackers_exit_codes() {
        let codes: Vec<i32> = [
            libc::SIGSYS,
            libc::SIGBUS,
            libc::SIGSEGV,
            libc::SIGXFSZ,
            libc::SIGXCPU,
            libc::SIGHUP,
            libc::SIGILL,
        ]
        .into_iter()
        .map(|s| fatal_signal(s).unwrap().1)
        .collect();
        assert_eq!(codes, [148, 149, 150, 151, 154, 156, 157]);
        assert!(fatal_signal(libc::SIGPIPE).is_none());
    }
}
