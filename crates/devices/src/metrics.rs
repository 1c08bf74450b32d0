//! Lock-free counters shaped like Firecracker's `SharedIncMetric`.
//!
//! Each device keeps its metric group (for example `uart` or `i8042`) as a struct of
//! [`Counter`]s in its own `metrics` module, shared through an `Arc` between the device and the
//! VMM's metrics writer.
//!
//! # JSON shape
//!
//! A group serializes as a flat JSON object of integers, for example
//! `{"error_count":0,"flush_count":0,...}`, exactly like Firecracker's metric groups.
//!
//! As in Firecracker, serializing a [`Counter`] writes the **delta since the previous
//! serialization** and then moves the flush mark: each line of the metrics file reports what
//! happened since the previous line. [`Counter::count`] always returns the running total and is
//! what tests and in-process consumers should read.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, Serializer};

/// A monotonically increasing event counter (Firecracker's `SharedIncMetric`).
///
/// Serializing it emits the increase since the previous serialization (see the module docs).
#[derive(Debug, Default)]
pub struct Counter {
    total: AtomicU64,
    flushed: AtomicU64,
}

impl Counter {
    /// A zeroed counter, usable in `const`/`static` context.
    pub const fn new() -> Self {
        Self {
            total: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping on overflow, which takes centuries at any realistic rate).
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// The running total since creation.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Returns the increase since the previous call (or since creation) and moves the flush mark.
    pub fn take_delta(&self) -> u64 {
        let total = self.total.load(Ordering::Relaxed);
        let previous = self.flushed.swap(total, Ordering::Relaxed);
        total.wrapping_sub(previous)
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.take_delta())
    }
}

/// Converts a byte count to `u64` for metrics (lossless on every supported target).
pub(crate) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counter_inc_add_count() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.count(), 5);
    }

    #[test]
    fn test_counter_serialize_emits_delta_since_previous_flush() {
        let c = Counter::new();
        c.add(3);
        assert_eq!(serde_json::to_string(&c).unwrap(), "3");
        assert_eq!(serde_json::to_string(&c).unwrap(), "0");
        c.inc();
        assert_eq!(serde_json::to_string(&c).unwrap(), "1");
        assert_eq!(c.count(), 4, "the total is unaffected by flushing");
    }
}
