//! Rate-limited logging for guest-triggerable paths.
//!
//! A guest can hit a device error path millions of times per second (a bad port width in a
//! loop, a full FIFO). Such paths must not log unconditionally: they use a [`RateLimitedLog`]
//! per call site (usually a field of the device) through the [`rl_warn!`](crate::rl_warn) /
//! [`rl_error!`](crate::rl_error) / [`rl_info!`](crate::rl_info) macros. Host-only paths log
//! with plain `tracing` macros.
//!
//! The policy is a fixed window: at most `burst` lines per `period`; the rest are counted, and
//! the first line of the next window carries a `suppressed = N` field. The defaults (10 lines
//! per 5 s) match Firecracker's rate-limited logger. Every dropped line is also counted in the
//! `logger.rate_limited_log_count` metric.
//!
//! A `RateLimitedLog` is `Sync` (a tiny mutex) so it can also be a `static`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::rate_limiter::{Clock, MonotonicClock};

/// Default number of lines allowed per window.
pub const DEFAULT_BURST: u32 = 10;
/// Default window length.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Window {
    start: Option<Duration>,
    emitted: u32,
    suppressed: u64,
}

/// Per-call-site log limiter: at most `burst` lines per `period`.
#[derive(Debug)]
pub struct RateLimitedLog {
    burst: u32,
    period: Duration,
    window: Mutex<Window>,
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_PERIOD)
    }
}

impl RateLimitedLog {
    /// A limiter that lets `burst` lines through per `period` (a `burst` of 0 silences the site).
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            window: Mutex::new(Window {
                start: None,
                emitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Decides whether a line may be logged now (monotonic process clock).
    ///
    /// Returns `Some(n)` to log, where `n` is the number of lines suppressed since the previous
    /// logged one; `None` to drop the line (it is counted).
    pub fn check(&self) -> Option<u64> {
        self.check_at(MonotonicClock.now())
    }

    /// [`check`](Self::check) at an explicit monotonic time (for tests and fake clocks).
    pub fn check_at(&self, now: Duration) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = w
            .start
            .is_none_or(|start| now.saturating_sub(start) >= self.period);
        if expired {
            w.start = Some(now);
            w.emitted = 0;
        }
        if w.emitted < self.burst {
            w.emitted += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            squib_core::metrics::METRICS
                .logger
                .rate_limited_log_count
                .inc();
            None
        }
    }

    /// Lines dropped since the last one that was let through.
    pub fn suppressed(&self) -> u64 {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .suppressed
    }
}

/// Shared body of the `rl_*` macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __rl_log {
    ($level:ident, $limiter:expr, $($arg:tt)+) => {
        if let ::std::option::Option::Some(suppressed) = ($limiter).check() {
            if suppressed > 0 {
                ::tracing::$level!(suppressed, $($arg)+);
            } else {
                ::tracing::$level!($($arg)+);
            }
        }
    };
}

/// `tracing::error!` through a [`RateLimitedLog`]: `rl_error!(limiter, "fmt", args...)`.
#[macro_export]
macro_rules! rl_error {
    ($limiter:expr, $($arg:tt)+) => { $crate::__rl_log!(error, $limiter, $($arg)+) };
}

/// `tracing::warn!` through a [`RateLimitedLog`]: `rl_warn!(limiter, "fmt", args...)`.
#[macro_export]
macro_rules! rl_warn {
    ($limiter:expr, $($arg:tt)+) => { $crate::__rl_log!(warn, $limiter, $($arg)+) };
}

/// `tracing::info!` through a [`RateLimitedLog`]: `rl_info!(limiter, "fmt", args...)`.
#[macro_export]
macro_rules! rl_info {
    ($limiter:expr, $($arg:tt)+) => { $crate::__rl_log!(info, $limiter, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn test_rate_limited_log_burst_then_suppress() {
        let rl = RateLimitedLog::new(2, 5 * SEC);
        assert_eq!(rl.check_at(SEC), Some(0));
        assert_eq!(rl.check_at(SEC), Some(0));
        assert_eq!(rl.check_at(2 * SEC), None);
        assert_eq!(rl.check_at(3 * SEC), None);
        assert_eq!(rl.suppressed(), 2);
    }

    #[test]
    fn test_rate_limited_log_new_window_reports_suppressed_count() {
        let rl = RateLimitedLog::new(1, 5 * SEC);
        assert_eq!(rl.check_at(Duration::ZERO), Some(0));
        assert_eq!(rl.check_at(SEC), None);
        assert_eq!(rl.check_at(4 * SEC), None);
        assert_eq!(rl.check_at(5 * SEC), Some(2));
        assert_eq!(rl.suppressed(), 0);
    }

    #[test]
    fn test_rate_limited_log_zero_burst_silences() {
        let rl = RateLimitedLog::new(0, SEC);
        assert_eq!(rl.check_at(Duration::ZERO), None);
        assert_eq!(rl.check_at(10 * SEC), None);
        assert_eq!(rl.suppressed(), 2);
    }

    #[test]
    fn test_rate_limited_log_macros_compile_and_limit() {
        let rl = RateLimitedLog::new(1, Duration::from_secs(3600));
        for i in 0..3 {
            crate::rl_warn!(rl, "warn {}", i);
        }
        crate::rl_error!(rl, "error");
        crate::rl_info!(rl, value = 1, "info");
        assert_eq!(rl.suppressed(), 4);
    }
}
