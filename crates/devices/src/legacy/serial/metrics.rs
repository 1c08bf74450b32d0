//! The `uart` metric group.
//!
//! Serializes as Firecracker's `uart` object, each field the increase since the previous flush:
//!
//! ```json
//! {"error_count":0,"flush_count":0,"missed_read_count":0,"missed_write_count":0,
//!  "read_count":0,"write_count":0,"rate_limiter_dropped_bytes":0}
//! ```
//!
//! `input_dropped_bytes` (stdin bytes that did not fit the input queue) is squib-only and is
//! not serialized, to keep the group's shape identical to Firecracker's.

use serde::Serialize;

use crate::metrics::Counter;

/// Counters of one UART (Firecracker's `SerialDeviceMetrics`).
#[derive(Debug, Default, Serialize)]
pub struct SerialMetrics {
    /// Failed guest writes (output sink or interrupt errors).
    pub error_count: Counter,
    /// Explicit flushes of the output sink requested by the VMM.
    pub flush_count: Counter,
    /// Guest reads that were not one byte at a register offset.
    pub missed_read_count: Counter,
    /// Guest writes that were not one byte at a register offset, or bytes the sink lost.
    pub missed_write_count: Counter,
    /// Bytes the guest read from the receive buffer.
    pub read_count: Counter,
    /// Bytes the guest transmitted (including those the rate limiter dropped).
    pub write_count: Counter,
    /// Transmitted bytes dropped by the output rate limiter.
    pub rate_limiter_dropped_bytes: Counter,
    /// Host input bytes dropped because the input queue was full (not serialized).
    #[serde(skip)]
    pub input_dropped_bytes: Counter,
}

impl SerialMetrics {
    /// All counters at zero.
    pub const fn new() -> Self {
        Self {
            error_count: Counter::new(),
            flush_count: Counter::new(),
            missed_read_count: Counter::new(),
            missed_write_count: Counter::new(),
            read_count: Counter::new(),
            write_count: Counter::new(),
            rate_limiter_dropped_bytes: Counter::new(),
            input_dropped_bytes: Counter::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_serial_metrics_serialize_as_firecracker_uart_group() {
        let m = SerialMetrics::new();
        m.write_count.add(3);
        m.input_dropped_bytes.inc();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"error_count":0,"flush_count":0,"missed_read_count":0,"missed_write_count":0,"read_count":0,"write_count":3,"rate_limiter_dropped_bytes":0}"#
        );
    }
}
