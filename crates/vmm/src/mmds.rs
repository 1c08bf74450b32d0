//! MMDS glue: the live data store the VMM owns, its guest-facing network stacks, and the
//! adapter that plugs a stack into a virtio-net device as its [`FrameInterceptor`].
//!
//! `PUT`/`PATCH /mmds` update the store (the API mirror keeps a copy for `GET /mmds`);
//! `PUT /mmds/config` sets the version, IPv4 address and `imds_compat`; at boot every interface
//! named in `network_interfaces` gets a [`MmdsNetworkStack`] sharing the store. Threading: the
//! store and stacks are `Arc<Mutex<_>>` shared between the VMM thread (API actions, snapshots)
//! and the net devices' event handling, which also runs on the VMM thread.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use squib_config::schemas::mmds::{MmdsConfig, MmdsVersion as ApiVersion};
use squib_devices::virtio::FrameInterceptor;
use squib_mmds::{Mmds, MmdsMetrics, MmdsNetworkStack, MmdsVersion, TokenAuthorityState};

/// A [`MmdsNetworkStack`] shared with the VMM (for snapshots) and plugged into a net device.
#[derive(Debug, Clone)]
pub struct SharedStack(pub Arc<Mutex<MmdsNetworkStack>>);

impl FrameInterceptor for SharedStack {
    fn detour_frame(&mut self, frame: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .detour_frame(frame)
    }

    fn write_next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_next_frame(buf)
    }

    fn has_pending_frames(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .has_pending_frames()
    }

    fn next_timer(&self) -> Option<(u64, std::time::Duration)> {
        let stack = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Some((stack.next_timer_deadline_ms()?, stack.next_timer_in()?))
    }
}

/// MMDS as a snapshot saves it: the configuration and the token key (tokens survive a restore,
/// as Firecracker's do); the data store itself is not saved, as in Firecracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmdsState {
    /// V2 tokens required.
    pub v2: bool,
    /// `imds_compat`.
    pub imds_compat: bool,
    /// The MMDS IPv4 address.
    pub ipv4_address: Ipv4Addr,
    /// Interfaces MMDS answers on.
    pub network_interfaces: Vec<String>,
    /// Token signing state.
    pub tokens: TokenAuthorityState,
}

/// `PUT /mmds/config` as the VMM keeps it.
#[derive(Debug, Clone)]
struct Settings {
    v2: bool,
    imds_compat: bool,
    ipv4_address: Ipv4Addr,
    network_interfaces: Vec<String>,
}

/// The VMM's MMDS: the store plus the configuration.
#[derive(Debug)]
pub struct MmdsService {
    store: Arc<Mutex<Mmds>>,
    config: Option<Settings>,
    metrics: Arc<MmdsMetrics>,
}

impl MmdsService {
    /// A store limited to `limit` bytes, with tokens bound to `instance_id`.
    pub fn new(limit: usize, instance_id: &str) -> Result<Self, String> {
        let mut mmds = Mmds::new(limit).map_err(|e| e.to_string())?;
        mmds.set_aad(instance_id);
        Ok(Self {
            store: Arc::new(Mutex::new(mmds)),
            config: None,
            metrics: Arc::new(MmdsMetrics::default()),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Mmds> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `PUT /mmds`.
    pub fn put(&self, value: serde_json::Value) -> Result<(), String> {
        self.store().put(value).map_err(|e| e.api_fault_message())
    }

    /// `PATCH /mmds`.
    pub fn patch(&self, value: &serde_json::Value) -> Result<(), String> {
        self.store().patch(value).map_err(|e| e.api_fault_message())
    }

    /// `PUT /mmds/config`.
    pub fn configure(&mut self, config: &MmdsConfig) {
        self.apply(Settings {
            v2: config.version == ApiVersion::V2,
            imds_compat: config.imds_compat,
            ipv4_address: config.ipv4_address,
            network_interfaces: config.network_interfaces.clone(),
        });
    }

    fn apply(&mut self, settings: Settings) {
        let mut store = self.store();
        store.set_version(if settings.v2 {
            MmdsVersion::V2
        } else {
            MmdsVersion::V1
        });
        store.set_imds_compat(settings.imds_compat);
        drop(store);
        self.config = Some(settings);
    }

    /// The shared metric group.
    pub fn metrics(&self) -> &Arc<MmdsMetrics> {
        &self.metrics
    }

    /// A network stack for interface `iface_id`, if MMDS is configured on it.
    pub fn stack_for(&self, iface_id: &str) -> Option<SharedStack> {
        let config = self.config.as_ref()?;
        if !config.network_interfaces.iter().any(|i| i == iface_id) {
            return None;
        }
        let stack =
            MmdsNetworkStack::new_with_defaults(Some(config.ipv4_address), Arc::clone(&self.store))
                .with_metrics(Arc::clone(&self.metrics));
        Some(SharedStack(Arc::new(Mutex::new(stack))))
    }

    /// A stack rebuilt from a snapshot, on this store.
    pub fn restore_stack(&self, state: &squib_mmds::MmdsNetworkStackState) -> SharedStack {
        let stack = MmdsNetworkStack::restore(Arc::clone(&self.store), state)
            .with_metrics(Arc::clone(&self.metrics));
        SharedStack(Arc::new(Mutex::new(stack)))
    }

    /// The snapshot state (`None` when MMDS was never configured).
    pub fn save(&self) -> Option<MmdsState> {
        let config = self.config.as_ref()?;
        Some(MmdsState {
            v2: config.v2,
            imds_compat: config.imds_compat,
            ipv4_address: config.ipv4_address,
            network_interfaces: config.network_interfaces.clone(),
            tokens: self.store().token_state(),
        })
    }

    /// Restores the configuration and token key from a snapshot.
    pub fn restore(&mut self, state: &MmdsState) -> Result<(), String> {
        self.apply(Settings {
            v2: state.v2,
            imds_compat: state.imds_compat,
            ipv4_address: state.ipv4_address,
            network_interfaces: state.network_interfaces.clone(),
        });
        self.store()
            .restore_token_state(&state.tokens)
            .map_err(|e| e.to_string())
    }

    /// Whether MMDS answers on `iface_id`.
    pub fn serves(&self, iface_id: &str) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.network_interfaces.iter().any(|i| i == iface_id))
    }
}
