//! Firecracker's `mmds` metric group.
//!
//! [`MmdsMetrics`] holds lock-free counters shared (through an `Arc`) by every
//! [`crate::MmdsNetworkStack`] and the VMM's metrics writer; [`MmdsMetrics::snapshot`] gives a
//! serde-serializable [`MmdsMetricsSnapshot`] with Firecracker's field names. The stack counts
//! `rx_accepted` (frames it consumed), `tx_frames`/`tx_bytes` (frames it handed out) itself, so
//! the device model needs to count nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! mmds_metrics {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live MMDS counters (atomics; cheap to increment from the VMM thread).
        #[derive(Debug, Default)]
        pub struct MmdsMetrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`MmdsMetrics`], serialized with Firecracker's names.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct MmdsMetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl MmdsMetrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> MmdsMetricsSnapshot {
                MmdsMetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

mmds_metrics! {
    /// Number of frames rerouted to MMDS.
    rx_accepted,
    /// Number of errors while handling a frame through MMDS.
    rx_accepted_err,
    /// Number of uncommon events encountered while processing packets through MMDS.
    rx_accepted_unusual,
    /// The number of buffers which couldn't be parsed as valid Ethernet frames by the MMDS.
    rx_bad_eth,
    /// The number of GET requests with invalid tokens.
    rx_invalid_token,
    /// The number of GET requests with no tokens.
    rx_no_token,
    /// The total number of successful receive operations by the MMDS.
    rx_count,
    /// The total number of bytes sent by the MMDS.
    tx_bytes,
    /// The total number of successful send operations by the MMDS.
    tx_count,
    /// The number of errors raised by the MMDS while attempting to send frames/packets/segments.
    tx_errors,
    /// The number of frames sent by the MMDS.
    tx_frames,
    /// The number of connections successfully accepted by the MMDS TCP handler.
    connections_created,
    /// The number of connections cleaned up by the MMDS TCP handler.
    connections_destroyed,
}

/// Increments a counter by one.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_uses_firecracker_names() {
        let m = MmdsMetrics::default();
        inc(&m.rx_no_token);
        add(&m.tx_bytes, 10);
        let v = serde_json::to_value(m.snapshot()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "rx_accepted",
                "rx_accepted_err",
                "rx_accepted_unusual",
                "rx_bad_eth",
                "rx_invalid_token",
                "rx_no_token",
                "rx_count",
                "tx_bytes",
                "tx_count",
                "tx_errors",
                "tx_frames",
                "connections_created",
                "connections_destroyed"
            ]
        );
        assert_eq!(v["rx_no_token"], 1);
        assert_eq!(v["tx_bytes"], 10);
    }
}
