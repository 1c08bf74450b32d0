//! The `i8042` metric group.
//!
//! Serializes as Firecracker's `i8042` object, each field the increase since the previous flush:
//!
//! ```json
//! {"error_count":0,"missed_read_count":0,"missed_write_count":0,"read_count":0,
//!  "reset_count":0,"write_count":0}
//! ```

use serde::Serialize;

use crate::metrics::Counter;

/// Counters of one i8042 controller (Firecracker's `I8042DeviceMetrics`).
#[derive(Debug, Default, Serialize)]
pub struct I8042Metrics {
    /// Errors (failed reset signal, failed keyboard interrupt).
    pub error_count: Counter,
    /// Reads that were not one byte at the data or status port.
    pub missed_read_count: Counter,
    /// Writes that were not one byte, to an unknown port, or an unsupported command.
    pub missed_write_count: Counter,
    /// Bytes read by the guest.
    pub read_count: Counter,
    /// CPU resets requested by the guest (command 0xFE).
    pub reset_count: Counter,
    /// Writes handled.
    pub write_count: Counter,
}

impl I8042Metrics {
    /// All counters at zero.
    pub const fn new() -> Self {
        Self {
            error_count: Counter::new(),
            missed_read_count: Counter::new(),
            missed_write_count: Counter::new(),
            read_count: Counter::new(),
            reset_count: Counter::new(),
            write_count: Counter::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_i8042_metrics_serialize_as_firecracker_group() {
        let m = I8042Metrics::new();
        m.reset_count.inc();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"error_count":0,"missed_read_count":0,"missed_write_count":0,"read_count":0,"reset_count":1,"write_count":0}"#
        );
    }
}
