//! The `block` metric group of one drive.
//!
//! Shaped like Firecracker's `BlockDeviceMetrics`: the VMM serializes each drive's group as
//! `block_<drive_id>` and their sum as `block`. Every field is the increase since the previous
//! flush, except `read_agg`/`write_agg` (see [`LatencyAggregate`]):
//!
//! ```json
//! {"activate_fails":0,"cfg_fails":0,"no_avail_buffer":0,"event_fails":0,"execute_fails":0,
//!  "invalid_reqs_count":0,"flush_count":0,"queue_event_count":0,"rate_limiter_event_count":0,
//!  "update_count":0,"update_fails":0,"read_bytes":0,"write_bytes":0,"read_count":0,
//!  "write_count":0,"read_agg":{"min_us":0,"max_us":0,"sum_us":0},
//!  "write_agg":{"min_us":0,"max_us":0,"sum_us":0},"rate_limiter_throttled_events":0,
//!  "io_engine_throttled_events":0,"remaining_reqs_count":0}
//! ```
//!
//! `io_engine_throttled_events` and `remaining_reqs_count` belong to the `Async` (io_uring) engine
//! and stay 0 with `Sync`.

use serde::Serialize;

use crate::metrics::{Counter, LatencyAggregate};

/// Counters of one virtio-blk device (Firecracker's `BlockDeviceMetrics`).
#[derive(Debug, Default, Serialize)]
pub struct BlockMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Configuration-space accesses outside the configuration space, or writes to it.
    pub cfg_fails: Counter,
    /// Queue events that found no available buffer.
    pub no_avail_buffer: Counter,
    /// Queue or timer events that could not be handled (bad ring index, used-ring write failure,
    /// interrupt failure, timer failure).
    pub event_fails: Counter,
    /// Valid requests whose I/O on the backing file failed (including short transfers).
    pub execute_fails: Counter,
    /// Malformed requests (bad chains, directions, lengths, sectors, writes to a read-only disk).
    pub invalid_reqs_count: Counter,
    /// Flush requests executed.
    pub flush_count: Counter,
    /// Queue events handled.
    pub queue_event_count: Counter,
    /// Rate-limiter timer events handled.
    pub rate_limiter_event_count: Counter,
    /// Successful `PATCH /drives` updates.
    pub update_count: Counter,
    /// Failed `PATCH /drives` updates.
    pub update_fails: Counter,
    /// Bytes read from the backing file into the guest.
    pub read_bytes: Counter,
    /// Bytes written from the guest to the backing file.
    pub write_bytes: Counter,
    /// Successful read requests.
    pub read_count: Counter,
    /// Successful write requests.
    pub write_count: Counter,
    /// Duration of read requests.
    pub read_agg: LatencyAggregate,
    /// Duration of write requests.
    pub write_agg: LatencyAggregate,
    /// Times the rate limiter stopped queue processing.
    pub rate_limiter_throttled_events: Counter,
    /// Times a full `Async` in-flight table stopped queue processing until a completion.
    pub io_engine_throttled_events: Counter,
    /// `Async` requests still in flight when the device was reset (waited for, then discarded).
    pub remaining_reqs_count: Counter,
}

impl BlockMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_block_metrics_serialize_as_firecracker_block_group() {
        let m = BlockMetrics::new();
        m.read_bytes.add(512);
        m.read_agg.record(3);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"activate_fails":0,"cfg_fails":0,"no_avail_buffer":0,"event_fails":0,"#,
                r#""execute_fails":0,"invalid_reqs_count":0,"flush_count":0,"#,
                r#""queue_event_count":0,"rate_limiter_event_count":0,"update_count":0,"#,
                r#""update_fails":0,"read_bytes":512,"write_bytes":0,"read_count":0,"#,
                r#""write_count":0,"read_agg":{"min_us":3,"max_us":3,"sum_us":3},"#,
                r#""write_agg":{"min_us":0,"max_us":0,"sum_us":0},"#,
                r#""rate_limiter_throttled_events":0,"io_engine_throttled_events":0,"#,
                r#""remaining_reqs_count":0}"#
            )
        );
    }
}
