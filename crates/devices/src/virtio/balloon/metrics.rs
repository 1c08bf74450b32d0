//! The `balloon` metric group, shaped like Firecracker's `BalloonDeviceMetrics`; each field is
//! the increase since the previous flush:
//!
//! ```json
//! {"activate_fails":0,"inflate_count":0,"stats_updates_count":0,"stats_update_fails":0,
//!  "deflate_count":0,"event_fails":0,"free_page_report_count":0,"free_page_report_freed":0,
//!  "free_page_report_fails":0,"free_page_hint_count":0,"free_page_hint_freed":0,
//!  "free_page_hint_fails":0}
//! ```

use serde::Serialize;

use crate::metrics::Counter;

/// Counters of the virtio-balloon device.
#[derive(Debug, Default, Serialize)]
pub struct BalloonMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Inflate queue events.
    pub inflate_count: Counter,
    /// Statistics buffers received.
    pub stats_updates_count: Counter,
    /// Statistics entries or buffers that could not be used.
    pub stats_update_fails: Counter,
    /// Deflate queue events.
    pub deflate_count: Counter,
    /// Malformed requests and failed queue operations.
    pub event_fails: Counter,
    /// Free-page-reporting ranges received.
    pub free_page_report_count: Counter,
    /// Bytes released through free-page reporting.
    pub free_page_report_freed: Counter,
    /// Free-page-reporting ranges that could not be released.
    pub free_page_report_fails: Counter,
    /// Free-page hints received.
    pub free_page_hint_count: Counter,
    /// Bytes released through free-page hinting.
    pub free_page_hint_freed: Counter,
    /// Free-page hints that could not be released.
    pub free_page_hint_fails: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_balloon_metrics_serialize_as_firecracker_group() {
        let m = BalloonMetrics::default();
        m.inflate_count.inc();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.starts_with(r#"{"activate_fails":0,"inflate_count":1,"#),
            "{json}"
        );
        assert!(json.ends_with(r#""free_page_hint_fails":0}"#), "{json}");
    }
}
