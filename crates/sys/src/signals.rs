//! Firecracker's process signal handlers: the `signals` (and `seccomp`) metrics and the
//! signal-specific exit codes.
//!
//! | signal | metric | action |
//! |---|---|---|
//! | SIGBUS, SIGSEGV, SIGXFSZ, SIGXCPU, SIGHUP, SIGILL | `signals.<name>` = 1 | fatal hook, exit 149/150/151/154/156/157 |
//! | SIGSYS | `seccomp.num_faults` = 1 | fatal hook, exit 148 |
//! | SIGPIPE | `signals.sigpipe` += 1 | none (the failed write returns `EPIPE`) |
//!
//! The fatal hook (installed once with [`install`]) is the binary's last word: it writes a
//! metrics line and a log line, best effort, like Firecracker's handler; then the process ends
//! with `_exit` and the signal's exit code. Only the metric store and `_exit` are
//! async-signal-safe; the hook must not block (use `try_lock`).

use std::sync::OnceLock;

use libc::{c_int, c_void, siginfo_t};
use squib_core::metrics::{METRICS, StoreMetric};

/// Called from a fatal signal handler with the signal number and `si_code`, before `_exit`.
pub type FatalHook = fn(signo: c_int, code: c_int);

static HOOK: OnceLock<FatalHook> = OnceLock::new();

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

extern "C" fn handle_fatal(num: c_int, info: *mut siginfo_t, _ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler.
    let code = unsafe { (*info).si_code };
    let exit_code = match fatal_signal(num) {
        Some((metric, exit_code)) => {
            metric.store(1);
            exit_code
        }
        None => 2,
    };
    if let Some(hook) = HOOK.get() {
        hook(num, code);
    }
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(exit_code) };
}

extern "C" fn handle_sigpipe(_num: c_int, _info: *mut siginfo_t, _ctx: *mut c_void) {
    METRICS.signals.sigpipe.inc();
}

/// Installs the handlers (once per process) with `hook` for the fatal ones.
pub fn install(hook: FatalHook) -> std::io::Result<()> {
    if HOOK.set(hook).is_err() {
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
