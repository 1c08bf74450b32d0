//! The virtio-mem metric group, shaped like Firecracker's `VirtioMemDeviceMetrics`: counters
//! are the increase since the previous flush, `*_agg` are `{"min_us","max_us","sum_us"}`
//! request latencies.

use serde::Serialize;

use crate::metrics::{Counter, LatencyAggregate};

/// Counters of the virtio-mem device.
#[derive(Debug, Default, Serialize)]
pub struct VirtioMemMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Queue events or requests that could not be handled.
    pub queue_event_fails: Counter,
    /// Queue events handled.
    pub queue_event_count: Counter,
    /// Plug request latency.
    pub plug_agg: LatencyAggregate,
    /// Plug requests.
    pub plug_count: Counter,
    /// Bytes plugged.
    pub plug_bytes: Counter,
    /// Plug requests refused.
    pub plug_fails: Counter,
    /// Unplug request latency.
    pub unplug_agg: LatencyAggregate,
    /// Unplug requests.
    pub unplug_count: Counter,
    /// Bytes unplugged.
    pub unplug_bytes: Counter,
    /// Unplug requests refused.
    pub unplug_fails: Counter,
    /// Unplugged ranges that could not be released to the host.
    pub unplug_discard_fails: Counter,
    /// Unplug-all request latency.
    pub unplug_all_agg: LatencyAggregate,
    /// Unplug-all requests.
    pub unplug_all_count: Counter,
    /// Unplug-all requests that failed.
    pub unplug_all_fails: Counter,
    /// State request latency.
    pub state_agg: LatencyAggregate,
    /// State requests.
    pub state_count: Counter,
    /// State requests refused.
    pub state_fails: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_metrics_serialize_in_firecracker_order() {
        let m = VirtioMemMetrics::default();
        m.plug_count.inc();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.starts_with(
                r#"{"activate_fails":0,"queue_event_fails":0,"queue_event_count":0,"plug_agg":{"#
            ),
            "{json}"
        );
        assert!(json.contains(r#""plug_count":1,"#), "{json}");
        assert!(
            json.ends_with(r#""state_count":0,"state_fails":0}"#),
            "{json}"
        );
    }
}
