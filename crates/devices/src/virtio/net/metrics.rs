//! The `net` metric group (per device: Firecracker's `net_<iface_id>`; the VMM sums them into
//! `net`).
//!
//! Shaped exactly like Firecracker's `NetDeviceMetrics` (same fields, same order); each counter
//! is the increase since the previous flush, `tap_write_agg` is a latency aggregate:
//!
//! ```json
//! {"activate_fails":0,"cfg_fails":0,"no_rx_avail_buffer":0,"no_tx_avail_buffer":0,
//!  "event_fails":0,"rx_queue_event_count":0,"rx_event_rate_limiter_count":0,
//!  "rx_rate_limiter_throttled":0,"rx_tap_event_count":0,"rx_bytes_count":0,
//!  "rx_packets_count":0,"rx_fails":0,"rx_count":0,"tap_read_fails":0,"tap_write_fails":0,
//!  "tap_write_agg":{"min_us":0,"max_us":0,"sum_us":0},"tx_bytes_count":0,
//!  "tx_malformed_frames":0,"tx_fails":0,"tx_count":0,"tx_packets_count":0,
//!  "tx_queue_event_count":0,"tx_rate_limiter_event_count":0,"tx_rate_limiter_throttled":0,
//!  "tx_spoofed_mac_count":0,"tx_remaining_reqs_count":0}
//! ```
//!
//! Counters are lock-free; a metrics writer may serialize them from any thread.

use serde::Serialize;

use crate::metrics::{Counter, LatencyAggregate};

/// Counters of one virtio-net device (Firecracker's `NetDeviceMetrics`).
#[derive(Debug, Default, Serialize)]
pub struct NetMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Configuration-space accesses refused (driver writes, out-of-range reads).
    pub cfg_fails: Counter,
    /// RX attempts that found no (or not enough) guest buffers.
    pub no_rx_avail_buffer: Counter,
    /// TX queue events that found no chain.
    pub no_tx_avail_buffer: Counter,
    /// Events that could not be handled (eventfd reads, interrupts, broken rings, tap errors).
    pub event_fails: Counter,
    /// RX queue notifications.
    pub rx_queue_event_count: Counter,
    /// RX rate-limiter timer events.
    pub rx_event_rate_limiter_count: Counter,
    /// Times the RX rate limiter held a frame back.
    pub rx_rate_limiter_throttled: Counter,
    /// Tap readiness events.
    pub rx_tap_event_count: Counter,
    /// Bytes given to the guest (virtio header included).
    pub rx_bytes_count: Counter,
    /// Frames given to the guest.
    pub rx_packets_count: Counter,
    /// RX errors: malformed RX chains, frames too large for the guest's buffers, short reads.
    pub rx_fails: Counter,
    /// Successful RX frame deliveries.
    pub rx_count: Counter,
    /// Tap reads that failed (other than "nothing queued").
    pub tap_read_fails: Counter,
    /// Tap writes that failed.
    pub tap_write_fails: Counter,
    /// Duration of tap writes.
    pub tap_write_agg: LatencyAggregate,
    /// Bytes sent by the guest (virtio header included).
    pub tx_bytes_count: Counter,
    /// TX frames too large, or without a virtio header.
    pub tx_malformed_frames: Counter,
    /// Malformed TX chains (bad descriptors, device-writable buffers).
    pub tx_fails: Counter,
    /// Successful tap writes.
    pub tx_count: Counter,
    /// Frames sent to the tap.
    pub tx_packets_count: Counter,
    /// TX queue notifications.
    pub tx_queue_event_count: Counter,
    /// TX rate-limiter timer events.
    pub tx_rate_limiter_event_count: Counter,
    /// Times the TX rate limiter held a frame back.
    pub tx_rate_limiter_throttled: Counter,
    /// TX frames whose source MAC is not the configured guest MAC (sent anyway).
    pub tx_spoofed_mac_count: Counter,
    /// Chains still available after each TX chain was taken (Firecracker's queue-depth gauge).
    pub tx_remaining_reqs_count: Counter,
}

impl NetMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_net_metrics_serialize_as_firecracker_net_group() {
        let m = NetMetrics::new();
        m.rx_bytes_count.add(7);
        let json = serde_json::to_string(&m).unwrap();
        let expected = concat!(
            r#"{"activate_fails":0,"cfg_fails":0,"no_rx_avail_buffer":0,"no_tx_avail_buffer":0,"#,
            r#""event_fails":0,"rx_queue_event_count":0,"rx_event_rate_limiter_count":0,"#,
            r#""rx_rate_limiter_throttled":0,"rx_tap_event_count":0,"rx_bytes_count":7,"#,
            r#""rx_packets_count":0,"rx_fails":0,"rx_count":0,"tap_read_fails":0,"#,
            r#""tap_write_fails":0,"tap_write_agg":{"min_us":0,"max_us":0,"sum_us":0},"#,
            r#""tx_bytes_count":0,"tx_malformed_frames":0,"tx_fails":0,"tx_count":0,"#,
            r#""tx_packets_count":0,"tx_queue_event_count":0,"tx_rate_limiter_event_count":0,"#,
            r#""tx_rate_limiter_throttled":0,"tx_spoofed_mac_count":0,"#,
            r#""tx_remaining_reqs_count":0}"#
        );
        assert_eq!(json, expected);
    }
}
