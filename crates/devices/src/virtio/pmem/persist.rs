//! Snapshot state of a pmem device: its configuration, where its window was, the driver's
//! features and the rate limiter (Firecracker's `PmemState`). The VMM maps the backing file
//! again at the saved address and passes the mapping to [`Pmem::restore`], which checks that
//! it matches (the file may have changed size since).

use serde::{Deserialize, Serialize};
use squib_sys::pmem::PmemMapping;

use super::{Pmem, PmemDeviceConfig, PmemError};
use crate::persist::Persist;
use crate::rate_limiter::RateLimiter;
use crate::rate_limiter::persist::{RateLimiterRestoreError, RateLimiterState};
use crate::virtio::VirtioDevice;

/// A pmem device as a snapshot saves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmemState {
    /// Device id.
    pub id: String,
    /// Backing file.
    pub path_on_host: String,
    /// Root device.
    pub root_device: bool,
    /// Mapped read-only.
    pub read_only: bool,
    /// Guest address of the window.
    pub guest_addr: u64,
    /// Window size.
    pub size: u64,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Rate limiter buckets.
    pub rate_limiter: RateLimiterState,
}

/// Why a pmem device cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum PmemRestoreError {
    /// Creating the device failed.
    #[error("{0}")]
    Pmem(#[from] PmemError),
    /// The rate limiter state is invalid.
    #[error("{0}")]
    RateLimiter(#[from] RateLimiterRestoreError),
    /// The backing file's window differs from the saved one.
    #[error("Restored pmem size {saved} does not match backing file mapping size {mapped}")]
    SizeMismatch {
        /// Saved size.
        saved: u64,
        /// Size of the new mapping.
        mapped: u64,
    },
    /// The new mapping is not at the saved address.
    #[error("Restored pmem address {saved:#x} does not match the mapping at {mapped:#x}")]
    AddressMismatch {
        /// Saved address.
        saved: u64,
        /// Address of the new mapping.
        mapped: u64,
    },
    /// The mapping's access mode differs from the saved one.
    #[error("Restored pmem read_only={0} does not match the mapping")]
    ModeMismatch(bool),
}

impl Persist for Pmem {
    type State = PmemState;
    type ConstructorArgs = PmemMapping;
    type Error = PmemRestoreError;

    fn save(&self) -> PmemState {
        PmemState {
            id: self.config.id.clone(),
            path_on_host: self.config.path_on_host.clone(),
            root_device: self.config.root_device,
            read_only: self.mapping.read_only(),
            guest_addr: self.mapping.guest_addr(),
            size: self.mapping.len(),
            acked_features: self.acked_features,
            rate_limiter: Persist::save(self.rate_limiter()),
        }
    }

    fn restore(mapping: PmemMapping, state: &PmemState) -> Result<Self, PmemRestoreError> {
        if mapping.len() != state.size {
            return Err(PmemRestoreError::SizeMismatch {
                saved: state.size,
                mapped: mapping.len(),
            });
        }
        if mapping.guest_addr() != state.guest_addr {
            return Err(PmemRestoreError::AddressMismatch {
                saved: state.guest_addr,
                mapped: mapping.guest_addr(),
            });
        }
        if mapping.read_only() != state.read_only {
            return Err(PmemRestoreError::ModeMismatch(state.read_only));
        }
        let limiter = <RateLimiter as Persist>::restore((), &state.rate_limiter)?;
        let mut dev = Pmem::new(
            PmemDeviceConfig {
                id: state.id.clone(),
                path_on_host: state.path_on_host.clone(),
                root_device: state.root_device,
            },
            mapping,
            limiter,
        )?;
        dev.ack_features(state.acked_features);
        Ok(dev)
    }
}
