//! virtio-vsock (device id 19) with Firecracker's hybrid Unix-socket backend (`PUT /vsock`).
//!
//! # What lives here
//!
//! - [`Vsock`] (`device.rs`): the virtio device. Three queues of 256 (RX, TX, event), features
//!   `VERSION_1 | IN_ORDER | EVENT_IDX`, an 8-byte read-only configuration space holding
//!   `guest_cid`. TX chains are parsed into packets and handed to the muxer; RX chains are
//!   filled with the packets the muxer owes the guest.
//! - `muxer.rs`: the backend. Listens on `uds_path` for host-initiated connections
//!   (`CONNECT <port>\n` → `OK <host port>\n`), connects guest-initiated ones to
//!   `<uds_path>_<port>`, routes packets to connections (see its docs for limits).
//! - `connection.rs`: one connection's state machine and credit flow control; `txbuf.rs`: its
//!   bounded (64 KiB) buffer for data a slow host reader has not taken yet.
//! - `queues.rs`: the muxer's bounded RX (256) and kill (128) queues.
//! - `packet.rs`: the 44-byte `virtio_vsock_hdr` and chain parsing (payload ≤ 64 KiB).
//! - [`VsockMetrics`] (`metrics.rs`): Firecracker's `vsock` metric group.
//! - `persist.rs`: [`VsockState`]. Connections are not preserved, as in Firecracker: a snapshot
//!   create announces `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` to the guest (the source VM drops its
//!   connections when resumed); restoring rebuilds an inactive device whose activation
//!   re-signals that event if the guest had not acknowledged it.
//!
//! # Wiring (what the VMM does)
//!
//! `Vsock::new(VsockConfig { guest_cid, uds_path })` binds the listening socket (errors are
//! [`VsockError`], whose text Firecracker's API prefixes with `Vsock config error: `). The device
//! goes on an `MmioTransport` like any virtio device and joins the event loop through
//! [`VirtioSubscriber`](super::VirtioSubscriber), which registers its three queue eventfds, its
//! kill timer ([`VirtioDevice::timer_events`](super::VirtioDevice::timer_events)) and the
//! listening socket ([`VirtioDevice::host_event_sources`](super::VirtioDevice::host_event_sources)),
//! then applies the connection sockets the device adds and removes at runtime.
//!
//! # Threading and hostile input
//!
//! `Send`, used behind `Arc<Mutex<Vsock>>` like every virtio device; all processing happens on
//! the VMM thread, sockets are nonblocking (except the connect of a guest-initiated connection,
//! as in Firecracker). Guest packets are bounded (64 KiB payload, 44-byte header checked against
//! the chain), per-connection buffering is bounded by the credit the device advertises, the
//! number of connections by [`MAX_CONNECTIONS`], and the queues of pending work by fixed sizes.

mod connection;
mod device;
pub mod metrics;
mod muxer;
pub mod packet;
pub mod persist;
mod queues;
mod txbuf;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_flow;

use std::path::PathBuf;

pub use self::connection::{CREDIT_UPDATE_THRESHOLD, ConnState, REQUEST_TIMEOUT, SHUTDOWN_TIMEOUT};
pub use self::device::{EVQ_INDEX, RXQ_INDEX, TXQ_INDEX, Vsock};
pub use self::metrics::VsockMetrics;
pub use self::muxer::{CONNECT_LINE_MAX, LISTENER_TOKEN, MAX_CONNECTIONS};
pub use self::packet::{HDR_SIZE, MAX_PKT_BUF_SIZE};
pub use self::persist::{VsockConstructorArgs, VsockState};
pub use self::queues::{KILLQ_SIZE, RXQ_SIZE};
pub use self::txbuf::TX_BUF_SIZE;

/// Number of queues (RX, TX, event).
pub const NUM_QUEUES: usize = 3;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// What `PUT /vsock` configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (Firecracker's API takes a `u32`; the device holds it as virtio's `u64`).
    pub guest_cid: u64,
    /// The listening socket's path; guest connections to port `P` go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// Errors of the Unix-socket backend (Firecracker's `VsockUnixBackendError` texts).
#[derive(Debug, thiserror::Error)]
pub enum VsockUnixBackendError {
    /// Binding the listening socket failed.
    #[error("Error binding to the host-side Unix socket: {0}")]
    UnixBind(#[source] std::io::Error),
    /// Creating the kill timer failed.
    #[error("Error creating the vsock kill timer: {0}")]
    Timer(#[source] std::io::Error),
}

/// Errors building a [`Vsock`] (Firecracker's `VsockConfigError` texts; its API prepends
/// `Vsock config error: `).
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The backend could not be created (the socket path is taken, its directory missing, ...).
    #[error("Cannot create backend for vsock device: {0}")]
    CreateVsockBackend(#[source] VsockUnixBackendError),
    /// The queue eventfds could not be created.
    #[error("Cannot create vsock device: EventFd error: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Proptest case count: `SQUIB_PROPTEST_CASES` (or `PROPTEST_CASES`), else `default`.
#[cfg(test)]
pub(crate) fn proptest_cases(default: u32) -> u32 {
    ["SQUIB_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .unwrap_or(default)
}
