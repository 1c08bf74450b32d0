//! Guest-side figures of the Linux devices test: host process memory (`/proc/PID/status`) and
//! throughput arithmetic. The console itself is [`crate::common::linux::Guest`].
//!
//! Threading: plain functions, any thread.

use std::time::Duration;

/// Value of `key` (`VmRSS`, `RssAnon`, ...) in /proc/PID/status, bytes.
pub fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        * 1024
}

/// `bytes` in `d`, as MiB/s.
#[allow(clippy::cast_precision_loss)]
pub fn mib_s(bytes: usize, d: Duration) -> f64 {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    mib / d.as_secs_f64().max(1e-9)
}
