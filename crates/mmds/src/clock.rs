//! Time sources for MMDS, injected so tests control time.
//!
//! Two clocks matter: token expiry ([`crate::token`]) and TCP timers (retransmission, eviction,
//! in [`crate::tcp`]). Tokens default to [`SystemClock`] (milliseconds since the Unix epoch), so a
//! token's expiry keeps its meaning across a snapshot restore in another process; TCP timers
//! default to [`MonotonicClock`]. [`ManualClock`] is a shared, settable clock for tests.
//!
//! Clocks are `Send + Sync` and cheap to call; they are read on the VMM thread.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A millisecond time source.
pub trait Clock: Send + Sync + Debug {
    /// The current time in milliseconds. Only differences and comparisons are meaningful.
    fn now_ms(&self) -> u64;
}

/// Wall-clock milliseconds since the Unix epoch (0 if the host clock is before 1970).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Monotonic milliseconds since this clock was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A monotonic clock starting at 0 now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A settable clock for tests; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
