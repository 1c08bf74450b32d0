//! The `vsock` metric group.
//!
//! Shaped like Firecracker's `VsockDeviceMetrics` (same fields, same order); each field is the
//! increase since the previous flush. There is one vsock device per microVM, so the group is the
//! device's own. Counters are lock-free atomics: the device updates them on the VMM thread and a
//! metrics writer may serialize them from any thread.

use serde::Serialize;

use crate::metrics::Counter;

/// Counters of the virtio-vsock device (Firecracker's `VsockDeviceMetrics`).
#[derive(Debug, Default, Serialize)]
pub struct VsockMetrics {
    /// Activations the device refused.
    pub activate_fails: Counter,
    /// Driver writes to the (read-only) configuration space.
    pub cfg_fails: Counter,
    /// RX queue events that could not be handled.
    pub rx_queue_event_fails: Counter,
    /// TX queue events that could not be handled.
    pub tx_queue_event_fails: Counter,
    /// Event queue events that could not be handled (including a reset event with no buffer).
    pub ev_queue_event_fails: Counter,
    /// Muxer (listening socket, handshake, unknown source) events that could not be handled.
    pub muxer_event_fails: Counter,
    /// Connection socket events that could not be handled.
    pub conn_event_fails: Counter,
    /// RX queue events handled.
    pub rx_queue_event_count: Counter,
    /// TX queue events handled.
    pub tx_queue_event_count: Counter,
    /// Bytes read from host sockets and given to the guest.
    pub rx_bytes_count: Counter,
    /// Bytes written from the guest to host sockets.
    pub tx_bytes_count: Counter,
    /// Packets given to the guest by connections.
    pub rx_packets_count: Counter,
    /// Guest packets delivered to connections.
    pub tx_packets_count: Counter,
    /// Connections added to the connection table.
    pub conns_added: Counter,
    /// Connections scheduled for forced termination (RST).
    pub conns_killed: Counter,
    /// Connections removed from the connection table.
    pub conns_removed: Counter,
    /// Times the kill queue was rebuilt from the connection table.
    pub killq_resync: Counter,
    /// Failed flushes of a connection's TX buffer to its host socket.
    pub tx_flush_fails: Counter,
    /// Failed writes of guest data to a host socket.
    pub tx_write_fails: Counter,
    /// Failed reads from a host socket.
    pub rx_read_fails: Counter,
}

impl VsockMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vsock_metrics_serialize_as_firecracker_vsock_group() {
        let m = VsockMetrics::new();
        m.conns_added.add(2);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            concat!(
                r#"{"activate_fails":0,"cfg_fails":0,"rx_queue_event_fails":0,"#,
                r#""tx_queue_event_fails":0,"ev_queue_event_fails":0,"muxer_event_fails":0,"#,
                r#""conn_event_fails":0,"rx_queue_event_count":0,"tx_queue_event_count":0,"#,
                r#""rx_bytes_count":0,"tx_bytes_count":0,"rx_packets_count":0,"#,
                r#""tx_packets_count":0,"conns_added":2,"conns_killed":0,"conns_removed":0,"#,
                r#""killq_resync":0,"tx_flush_fails":0,"tx_write_fails":0,"rx_read_fails":0}"#
            )
        );
    }
}
