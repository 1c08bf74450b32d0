//! Lock-free counters shaped like Firecracker's `SharedIncMetric` (re-exported from
//! [`squib_core::metrics`]).
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
//! what tests and in-process consumers should read. A [`LatencyAggregate`]'s `min_us`/`max_us`
//! persist across flushes; its `sum_us` is a delta.

pub use squib_core::metrics::{Counter, LatencyAggregate, StoreMetric};

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
        assert_eq!(len_u64(7), 7);
    }

    #[test]
    fn test_latency_aggregate_serializes_like_firecracker() {
        let l = LatencyAggregate::new();
        l.record(5);
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":5,"max_us":5,"sum_us":5}"#
        );
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":5,"max_us":5,"sum_us":0}"#
        );
    }
}
