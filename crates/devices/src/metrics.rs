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

/// Firecracker's `LatencyAggregateMetrics`: minimum, maximum and sum of durations in
/// microseconds.
///
/// Serializes as `{"min_us":..,"max_us":..,"sum_us":..}`: the minimum and maximum over the
/// window since the previous serialization (0 if nothing was recorded) and the sum's delta; the
/// window then restarts.
#[derive(Debug)]
pub struct LatencyAggregate {
    min_us: AtomicU64,
    max_us: AtomicU64,
    /// Sum of all recorded durations.
    pub sum_us: Counter,
}

impl Default for LatencyAggregate {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyAggregate {
    /// No samples yet.
    pub const fn new() -> Self {
        Self {
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            sum_us: Counter::new(),
        }
    }

    /// Records one duration.
    pub fn record(&self, us: u64) {
        self.min_us.fetch_min(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.add(us);
    }

    /// Smallest duration in the current window (`None` if empty).
    pub fn min_us(&self) -> Option<u64> {
        let v = self.min_us.load(Ordering::Relaxed);
        (v != u64::MAX).then_some(v)
    }

    /// Largest duration in the current window.
    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

impl Serialize for LatencyAggregate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let min = self.min_us.swap(u64::MAX, Ordering::Relaxed);
        let max = self.max_us.swap(0, Ordering::Relaxed);
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("min_us", &if min == u64::MAX { 0 } else { min })?;
        map.serialize_entry("max_us", &max)?;
        map.serialize_entry("sum_us", &self.sum_us)?;
        map.end()
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

    #[test]
    fn test_latency_aggregate_window() {
        let l = LatencyAggregate::new();
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":0,"max_us":0,"sum_us":0}"#
        );
        l.record(5);
        l.record(2);
        l.record(9);
        assert_eq!(l.min_us(), Some(2));
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":2,"max_us":9,"sum_us":16}"#
        );
        assert_eq!(l.min_us(), None);
        assert_eq!(l.sum_us.count(), 16);
    }
}
