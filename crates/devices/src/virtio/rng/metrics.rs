//! The `entropy` metric group.
//!
//! Shaped like Firecracker's `EntropyDeviceMetrics`; each field is the increase since the
//! previous flush:
//!
//! ```json
//! {"activate_fails":0,"entropy_event_fails":0,"entropy_event_count":0,"entropy_bytes":0,
//!  "host_rng_fails":0,"entropy_rate_limiter_throttled":0,"rate_limiter_event_count":0}
//! ```

use serde::Serialize;

use crate::metrics::Counter;

/// Counters of the virtio-rng device (Firecracker's `EntropyDeviceMetrics`).
#[derive(Debug, Default, Serialize)]
pub struct EntropyMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Queue events that could not be handled, and malformed requests.
    pub entropy_event_fails: Counter,
    /// Queue events handled.
    pub entropy_event_count: Counter,
    /// Random bytes given to the guest.
    pub entropy_bytes: Counter,
    /// Failures of the host's random number generator.
    pub host_rng_fails: Counter,
    /// Times the rate limiter stopped queue processing.
    pub entropy_rate_limiter_throttled: Counter,
    /// Rate-limiter timer events handled.
    pub rate_limiter_event_count: Counter,
}

impl EntropyMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_entropy_metrics_serialize_as_firecracker_entropy_group() {
        let m = EntropyMetrics::new();
        m.entropy_bytes.add(64);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            concat!(
                r#"{"activate_fails":0,"entropy_event_fails":0,"entropy_event_count":0,"#,
                r#""entropy_bytes":64,"host_rng_fails":0,"entropy_rate_limiter_throttled":0,"#,
                r#""rate_limiter_event_count":0}"#
            )
        );
    }
}
