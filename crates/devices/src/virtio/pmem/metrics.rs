//! The `pmem` metric group, shaped like Firecracker's `PmemMetrics`; each field is the increase
//! since the previous flush:
//!
//! ```json
//! {"activate_fails":0,"cfg_fails":0,"event_fails":0,"queue_event_count":0,
//!  "rate_limiter_throttled_events":0,"rate_limiter_event_count":0}
//! ```
//!
//! `read_only_writes` (guest writes to a read-only window, dropped) is squib's own and not
//! serialized, so the group keeps Firecracker's shape.

use serde::Serialize;

use crate::metrics::Counter;

/// Counters of one virtio-pmem device.
#[derive(Debug, Default, Serialize)]
pub struct PmemMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Configuration-space accesses the device refused.
    pub cfg_fails: Counter,
    /// Malformed requests and failed queue operations.
    pub event_fails: Counter,
    /// Queue events handled.
    pub queue_event_count: Counter,
    /// Times the rate limiter stopped queue processing.
    pub rate_limiter_throttled_events: Counter,
    /// Rate-limiter timer events handled.
    pub rate_limiter_event_count: Counter,
    /// Guest writes to a read-only window (dropped).
    #[serde(skip)]
    pub read_only_writes: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pmem_metrics_serialize_as_firecracker_group() {
        let m = PmemMetrics::default();
        m.read_only_writes.inc();
        m.event_fails.inc();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            concat!(
                r#"{"activate_fails":0,"cfg_fails":0,"event_fails":1,"queue_event_count":0,"#,
                r#""rate_limiter_throttled_events":0,"rate_limiter_event_count":0}"#
            )
        );
    }
}
