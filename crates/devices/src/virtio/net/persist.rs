//! Snapshot state of a [`Net`] device (the device-specific part; the VMM saves the queues).
//!
//! [`NetState`] holds what the guest negotiated (acked features) and the host configuration
//! needed to rebuild the device: `iface_id`, the tap name, the MAC and MTU (which determine the
//! offered features and configuration space) and both rate limiters' bucket configurations.
//! Restoring opens the tap by name, or by `NetConstructorArgs::host_dev_name_override`
//! (Firecracker's `network_overrides`), and returns an inactive device with its acked features
//! set; the VMM then calls `activate` with the restored queues (which also re-applies the tap
//! offloads). The frame interceptor (MMDS) is not state of the device: `has_interceptor` tells
//! the VMM to attach its MMDS stack again.
//!
//! Deviation: a rate limiter restores full buckets (Firecracker also saves the current budget).
//! A frame held on the host when the snapshot was taken is not saved (the tap may drop frames
//! anyway).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Net, NetBackend, NetConfig, NetError};
use crate::persist::Persist;
use crate::rate_limiter::{MonotonicClock, RateLimiter, TokenBucketConfig};
use crate::virtio::VirtioDevice;

/// A rate limiter's configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiterState {
    /// The bandwidth bucket.
    pub bandwidth: Option<TokenBucketConfig>,
    /// The ops bucket.
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterState {
    /// Captures `limiter`'s buckets.
    pub fn save(limiter: &RateLimiter) -> Self {
        Self {
            bandwidth: limiter
                .bandwidth()
                .map(crate::rate_limiter::TokenBucket::config),
            ops: limiter.ops().map(crate::rate_limiter::TokenBucket::config),
        }
    }

    /// A limiter with these buckets, full, on the monotonic clock.
    pub fn restore(&self) -> RateLimiter {
        let clock: Arc<MonotonicClock> = Arc::new(MonotonicClock);
        RateLimiter::with_clock(
            self.bandwidth.and_then(|b| b.build(clock.clone())),
            self.ops.and_then(|b| b.build(clock.clone())),
            clock,
        )
    }
}

/// The saved state of a [`Net`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// `iface_id`.
    pub iface_id: String,
    /// The tap's name.
    pub tap_if_name: String,
    /// The configured MAC.
    pub guest_mac: Option<[u8; 6]>,
    /// The configured MTU.
    pub mtu: Option<u16>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// RX rate limiter.
    pub rx_rate_limiter: RateLimiterState,
    /// TX rate limiter.
    pub tx_rate_limiter: RateLimiterState,
    /// A frame interceptor (MMDS) was attached.
    pub has_interceptor: bool,
}

/// What a restore needs besides the state.
#[derive(Clone, Debug, Default)]
pub struct NetConstructorArgs {
    /// Open this tap instead of the saved one (`network_overrides`).
    pub host_dev_name_override: Option<String>,
}

/// Why a [`Net`] could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum NetPersistError {
    /// Re-creating the device (opening the tap) failed.
    #[error("Failed to create a network device: {0}")]
    CreateNet(#[from] NetError),
}

impl Net {
    fn config_from_state(state: &NetState, host_dev_name: String) -> NetConfig {
        NetConfig {
            iface_id: state.iface_id.clone(),
            host_dev_name,
            guest_mac: state.guest_mac,
            mtu: state.mtu,
            rx_rate_limiter: state.rx_rate_limiter.restore(),
            tx_rate_limiter: state.tx_rate_limiter.restore(),
        }
    }

    /// Restores on `backend` instead of opening a tap (tests, other backends).
    pub fn restore_with_backend(
        state: &NetState,
        backend: Box<dyn NetBackend>,
    ) -> Result<Self, NetPersistError> {
        let name = backend.name().to_owned();
        let mut net = Self::with_backend(Self::config_from_state(state, name), backend)?;
        net.set_acked_features(state.acked_features);
        Ok(net)
    }
}

impl Persist for Net {
    type State = NetState;
    type ConstructorArgs = NetConstructorArgs;
    type Error = NetPersistError;

    fn save(&self) -> NetState {
        let (acked_features, rx, tx) = self.persist_parts();
        NetState {
            iface_id: self.iface_id().to_owned(),
            tap_if_name: self.host_dev_name().to_owned(),
            guest_mac: self.guest_mac(),
            mtu: self.mtu(),
            acked_features,
            rx_rate_limiter: RateLimiterState::save(rx),
            tx_rate_limiter: RateLimiterState::save(tx),
            has_interceptor: self.has_interceptor(),
        }
    }

    fn restore(args: NetConstructorArgs, state: &NetState) -> Result<Self, NetPersistError> {
        let name = args
            .host_dev_name_override
            .unwrap_or_else(|| state.tap_if_name.clone());
        let mut net = Self::new(Self::config_from_state(state, name))?;
        net.set_acked_features(state.acked_features);
        debug_assert!(!net.is_activated());
        Ok(net)
    }
}
