//! Saving and restoring a vsock device.
//!
//! The snapshot holds what the guest saw and how to rebuild the backend: `guest_cid`, the
//! acked features, `uds_path` and the last host port handed out (as Firecracker's
//! `VsockFrontendState`/`VsockBackendState`); the VMM saves the queues separately
//! ([`VirtioDevice::queues`](crate::virtio::VirtioDevice::queues)). Connections are not
//! preserved: the snapshot's creation already wrote `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` into
//! the event queue (the device's `prepare_save`, as Firecracker), so the saved guest memory
//! holds it. [`Persist::restore`] binds a fresh listener (at
//! [`VsockConstructorArgs::uds_path_override`] if given, Firecracker's `vsock_override`) and
//! returns an inactive device that remembers whether that event was still unacknowledged
//! (`pending_event_ack`, Firecracker's field) or still waiting for a buffer; when the VMM
//! activates it with the restored queues, the device interrupts the driver on the event queue
//! again (or delivers the waiting event) and holds RX until the driver acknowledges it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Vsock, VsockConfig, VsockError};
use crate::persist::Persist;
use crate::virtio::VirtioDevice;

/// The vsock device's snapshot state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    /// The guest's CID.
    pub guest_cid: u64,
    /// The listening socket's path.
    pub uds_path: PathBuf,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The last host port given to a host-initiated connection.
    pub local_port_last: u32,
    /// A transport reset was written to the event queue and not yet acknowledged by the driver
    /// (RX is held until it is). Firecracker's `pending_event_ack`.
    pub pending_event_ack: bool,
    /// A transport reset is waiting for an event-queue buffer.
    pub reset_event_pending: bool,
}

/// What a restore needs besides the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VsockConstructorArgs {
    /// Listen here instead of the saved `uds_path` (`vsock_override.uds_path`).
    pub uds_path_override: Option<PathBuf>,
}

impl Persist for Vsock {
    type State = VsockState;
    type ConstructorArgs = VsockConstructorArgs;
    type Error = VsockError;

    fn save(&self) -> VsockState {
        VsockState {
            guest_cid: self.cid(),
            uds_path: self.uds_path().to_path_buf(),
            acked_features: self.acked_features(),
            local_port_last: self.muxer.local_port_last,
            pending_event_ack: self.awaiting_event_ack,
            reset_event_pending: self.reset_event_pending,
        }
    }

    fn restore(args: VsockConstructorArgs, state: &VsockState) -> Result<Self, VsockError> {
        let mut dev = Vsock::new(&VsockConfig {
            guest_cid: state.guest_cid,
            uds_path: args
                .uds_path_override
                .unwrap_or_else(|| state.uds_path.clone()),
        })?;
        dev.ack_features(state.acked_features);
        dev.muxer.local_port_last = state.local_port_last;
        dev.awaiting_event_ack = state.pending_event_ack;
        dev.reset_event_pending = state.reset_event_pending;
        dev.restored = true;
        Ok(dev)
    }
}
