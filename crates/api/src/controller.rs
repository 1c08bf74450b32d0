//! The runtime API controller: read mirror, action channel, admission, timeouts.
//!
//! - **Read mirror.** An [`ArcSwap<ControllerSnapshot>`] holds everything `GET` requests need.
//!   Reads are lock-free and never touch the action channel, so `GET /` answers even while the
//!   VMM is busy with a long action or wedged.
//! - **Action channel.** Mutating requests become an [`ApiAction`] sent with a oneshot reply
//!   over a bounded tokio mpsc channel to the single VMM event loop ([`ActionReceiver`]).
//! - **Admission.** Phase and capability-profile rules are checked before queuing, and stateful
//!   configuration rules are checked against the mirror's configuration document (the same
//!   `VmConfig::apply` the VMM runs), so bad requests never reach the VMM.
//! - **Timeouts.** Each [`ActionClass`] has a timeout ([`TimeoutTable`]). When it fires the
//!   caller gets 504 `VMM action timed out: <label>`; the action is *not* cancelled.
//!
//! Mutating dispatches are serialised by an async mutex so the mirror is updated in the order
//! the VMM executed the actions. The VMM side publishes phase and runtime-status changes with
//! [`RuntimeApiController::publish`], which is synchronous and callable from any thread.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use squib_config::{
    action::{ActionClass, ApiAction, ApiResponse},
    schemas::{
        balloon::{BalloonHintingStatus, BalloonStats},
        hotplug_memory::HotplugMemoryStatus,
        instance::{InstanceInfo, VersionResponse},
    },
    vm_config::VmConfig,
};
use squib_core::{CapabilityProfile, LifecyclePhase};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{
    error::{ApiError, Result},
    server::DEFAULT_MAX_PAYLOAD,
};

/// One queued action and where to send the VMM's answer.
pub type ActionEnvelope = (ApiAction, oneshot::Sender<ApiResponse>);
/// Sending half of the action channel (held by the controller).
pub type ActionSender = mpsc::Sender<ActionEnvelope>;
/// Receiving half of the action channel (consumed by the VMM event loop).
pub type ActionReceiver = mpsc::Receiver<ActionEnvelope>;

/// Firecracker's text for an MMDS store over its limit (answered with 413).
pub const MMDS_LIMIT_EXCEEDED: &str =
    "MMDS limit exceeded error: The MMDS patch request doesn't fit.";

/// Everything a `GET` can be answered from, published atomically.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControllerSnapshot {
    /// Internal lifecycle phase.
    pub phase: LifecyclePhase,
    /// `GET /` body (its `state` is kept equal to `phase.wire_state()` by [`RuntimeApiController::publish`]).
    pub instance_info: InstanceInfo,
    /// `GET /version` value.
    pub firecracker_version: String,
    /// Host capability profile used for admission.
    pub profile: CapabilityProfile,
    /// The configuration document (`GET /vm/config`, `/machine-config`, `/balloon`, `/mmds`, ...).
    pub vm_config: VmConfig,
    /// Latest balloon statistics published by the VMM (`GET /balloon/statistics`).
    pub balloon_stats: Option<BalloonStats>,
    /// Latest free-page-hinting status published by the VMM.
    pub balloon_hinting: Option<BalloonHintingStatus>,
    /// Latest memory-hotplug status published by the VMM (`GET /hotplug/memory`).
    pub hotplug_status: Option<HotplugMemoryStatus>,
    /// MMDS data store limit in bytes (`--mmds-size-limit`).
    pub mmds_size_limit: usize,
}

impl ControllerSnapshot {
    /// A fresh, not-started instance using the seeds' reference capability profile
    /// ([`CapabilityProfile::apple_silicon`]); see [`ControllerSnapshot::with_profile`].
    pub fn new(
        id: impl Into<String>,
        firecracker_version: impl Into<String>,
        vmm_version: impl Into<String>,
    ) -> Self {
        Self {
            phase: LifecyclePhase::Uninitialized,
            instance_info: InstanceInfo::new(id, vmm_version),
            firecracker_version: firecracker_version.into(),
            profile: CapabilityProfile::default(),
            vm_config: VmConfig::default(),
            balloon_stats: None,
            balloon_hinting: None,
            hotplug_status: None,
            mmds_size_limit: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// Replace the capability profile (the backend supplies it).
    #[must_use]
    pub fn with_profile(mut self, profile: CapabilityProfile) -> Self {
        self.profile = profile;
        self
    }

    /// Set the MMDS data store limit.
    #[must_use]
    pub fn with_mmds_size_limit(mut self, limit: usize) -> Self {
        self.mmds_size_limit = limit;
        self
    }

    /// `GET /version` body.
    pub fn version(&self) -> VersionResponse {
        VersionResponse {
            firecracker_version: self.firecracker_version.clone(),
        }
    }
}

/// Per-action-class timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutTable {
    pre_boot_config: Duration,
    instance_start: Duration,
    snapshot_create: Duration,
    snapshot_load: Duration,
    vm_state_change: Duration,
    balloon_resize: Duration,
    other: Duration,
}

impl TimeoutTable {
    /// The specified defaults: config 5 s, InstanceStart 30 s, snapshot create/load 5 min,
    /// pause/resume 5 s, balloon 30 s, other 5 s.
    pub fn from_spec() -> Self {
        Self {
            pre_boot_config: Duration::from_secs(5),
            instance_start: Duration::from_secs(30),
            snapshot_create: Duration::from_secs(300),
            snapshot_load: Duration::from_secs(300),
            vm_state_change: Duration::from_secs(5),
            balloon_resize: Duration::from_secs(30),
            other: Duration::from_secs(5),
        }
    }

    /// The timeout for `class`.
    pub fn get(&self, class: ActionClass) -> Duration {
        match class {
            ActionClass::PreBootConfig => self.pre_boot_config,
            ActionClass::InstanceStart => self.instance_start,
            ActionClass::SnapshotCreate => self.snapshot_create,
            ActionClass::SnapshotLoad => self.snapshot_load,
            ActionClass::VmStateChange => self.vm_state_change,
            ActionClass::BalloonResize => self.balloon_resize,
            ActionClass::Other => self.other,
        }
    }

    /// Override one class's timeout.
    #[must_use]
    pub fn with(mut self, class: ActionClass, timeout: Duration) -> Self {
        let slot = match class {
            ActionClass::PreBootConfig => &mut self.pre_boot_config,
            ActionClass::InstanceStart => &mut self.instance_start,
            ActionClass::SnapshotCreate => &mut self.snapshot_create,
            ActionClass::SnapshotLoad => &mut self.snapshot_load,
            ActionClass::VmStateChange => &mut self.vm_state_change,
            ActionClass::BalloonResize => &mut self.balloon_resize,
            ActionClass::Other => &mut self.other,
        };
        *slot = timeout;
        self
    }
}

impl Default for TimeoutTable {
    fn default() -> Self {
        Self::from_spec()
    }
}

/// The API controller shared by every connection.
#[derive(Debug)]
pub struct RuntimeApiController {
    mirror: ArcSwap<ControllerSnapshot>,
    tx: ActionSender,
    timeouts: TimeoutTable,
    /// Serialises mutating dispatches (Firecracker handles one request at a time).
    write_order: Mutex<()>,
}

impl RuntimeApiController {
    /// A controller publishing `snapshot`, with an action channel of `capacity` (≥ 1).
    pub fn new(
        snapshot: ControllerSnapshot,
        timeouts: TimeoutTable,
        capacity: usize,
    ) -> (Self, ActionReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let controller = Self {
            mirror: ArcSwap::from_pointee(snapshot),
            tx,
            timeouts,
            write_order: Mutex::new(()),
        };
        (controller, rx)
    }

    /// The current read mirror. Lock-free.
    pub fn snapshot(&self) -> Arc<ControllerSnapshot> {
        self.mirror.load_full()
    }

    /// Atomically update the mirror (VMM side: phase changes, runtime statuses). The wire state
    /// is re-derived from the phase, so the two never disagree.
    pub fn publish(&self, update: impl Fn(&mut ControllerSnapshot)) {
        self.mirror.rcu(|cur| {
            let mut next = ControllerSnapshot::clone(cur);
            update(&mut next);
            next.instance_info.state = next.phase.wire_state();
            next
        });
    }

    /// Set the lifecycle phase.
    pub fn set_phase(&self, phase: LifecyclePhase) {
        self.publish(|s| s.phase = phase);
    }

    /// The timeout table in force.
    pub fn timeouts(&self) -> &TimeoutTable {
        &self.timeouts
    }

    /// Admit, pre-validate, queue and await one action.
    ///
    /// Success replies (`NoContent`/`Json`) are returned as `Ok`; VMM faults become
    /// [`ApiError::Vmm`]. On success the action is applied to the mirror's configuration.
    pub async fn dispatch(&self, action: ApiAction) -> Result<ApiResponse> {
        let class = action.class();
        let label = class.label();
        match tokio::time::timeout(self.timeouts.get(class), self.dispatch_ordered(action)).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::error!(
                    "VMM action timed out after {:?}: {label}",
                    self.timeouts.get(class)
                );
                Err(ApiError::Timeout(label))
            }
        }
    }

    async fn dispatch_ordered(&self, action: ApiAction) -> Result<ApiResponse> {
        let _order = self.write_order.lock().await;
        let snap = self.snapshot();
        action.admit(snap.phase, &snap.profile)?;
        let staged = Self::stage(&snap, &action)?;

        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send((action, reply_tx))
            .await
            .map_err(|_| ApiError::EventLoopGone)?;
        let reply = reply_rx.await.map_err(|_| ApiError::EventLoopGone)?;
        match reply {
            ApiResponse::Fault { status, message } => Err(ApiError::Vmm { status, message }),
            ok => {
                if let Some(config) = staged {
                    self.publish(|s| {
                        s.vm_config = config.clone();
                        if s.phase == LifecyclePhase::Uninitialized {
                            s.phase = LifecyclePhase::NotStarted;
                        }
                    });
                }
                Ok(ok)
            }
        }
    }

    /// Apply the action to a copy of the mirror's configuration: stateful validation without a
    /// VMM round trip. Returns the new document, or `None` for actions that don't change it.
    fn stage(snap: &ControllerSnapshot, action: &ApiAction) -> Result<Option<VmConfig>> {
        if !action.changes_config() {
            return Ok(None);
        }
        let mut next = snap.vm_config.clone();
        next.apply(action).map_err(ApiError::BadRequest)?;
        if matches!(action, ApiAction::PutMmds(_) | ApiAction::PatchMmds(_)) {
            let size = next.mmds().map_or(0, |v| v.to_string().len());
            if size > snap.mmds_size_limit {
                return Err(ApiError::PayloadTooLarge(MMDS_LIMIT_EXCEEDED.to_owned()));
            }
        }
        Ok(Some(next))
    }
}
