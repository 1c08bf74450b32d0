//! Snapshot state of virtio-mem (Firecracker's `VirtioMemState`): the geometry, the usable
//! and requested sizes, which blocks are plugged, and the driver's features. Restoring maps
//! every slot holding a plugged block again (through the [`SlotMapper`] the VMM supplies);
//! the memory's contents come with the snapshot's memory file.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{MemGeometry, SlotMapper, VirtioMem, VirtioMemError};
use crate::persist::Persist;
use crate::virtio::VirtioDevice;

/// virtio-mem as a snapshot saves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemState {
    /// Guest-physical start of the region.
    pub addr: u64,
    /// Region size, bytes.
    pub region_size: u64,
    /// Block size, bytes.
    pub block_size: u64,
    /// Slot size, bytes.
    pub slot_size: u64,
    /// Usable region size, bytes.
    pub usable_region_size: u64,
    /// Requested size, bytes.
    pub requested_size: u64,
    /// Plugged blocks, one bit per block (bit `i % 64` of word `i / 64`).
    pub plugged_blocks: Vec<u64>,
    /// Features the driver accepted.
    pub acked_features: u64,
}

/// Why virtio-mem cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum VirtioMemRestoreError {
    /// The geometry is invalid, or creating the device failed.
    #[error("{0}")]
    Device(#[from] VirtioMemError),
    /// The sizes or the plugged bitmap do not fit the geometry.
    #[error("invalid saved virtio-mem state: {0}")]
    Invalid(&'static str),
    /// Mapping a plugged slot failed.
    #[error("cannot map a plugged slot: {0}")]
    Map(String),
}

impl Persist for VirtioMem {
    type State = VirtioMemState;
    type ConstructorArgs = Arc<dyn SlotMapper>;
    type Error = VirtioMemRestoreError;

    fn save(&self) -> VirtioMemState {
        let g = self.geometry();
        let blocks = self.plugged_blocks();
        let mut words = vec![0u64; blocks.len().div_ceil(64)];
        for (i, _) in blocks.iter().enumerate().filter(|(_, p)| **p) {
            words[i / 64] |= 1 << (i % 64);
        }
        VirtioMemState {
            addr: g.addr,
            region_size: g.region_size,
            block_size: g.block_size,
            slot_size: g.slot_size,
            usable_region_size: self.usable_region_size,
            requested_size: self.requested_size,
            plugged_blocks: words,
            acked_features: self.acked_features(),
        }
    }

    fn restore(
        mapper: Arc<dyn SlotMapper>,
        s: &VirtioMemState,
    ) -> Result<Self, VirtioMemRestoreError> {
        let geometry = MemGeometry {
            addr: s.addr,
            region_size: s.region_size,
            block_size: s.block_size,
            slot_size: s.slot_size,
        };
        let mut dev = VirtioMem::new(geometry, mapper)?;
        let blocks = usize::try_from(s.region_size / s.block_size).unwrap_or(usize::MAX);
        if s.plugged_blocks.len() != blocks.div_ceil(64) {
            return Err(VirtioMemRestoreError::Invalid("plugged bitmap length"));
        }
        if s.usable_region_size > s.region_size
            || s.requested_size > s.region_size
            || !s.usable_region_size.is_multiple_of(s.slot_size)
        {
            return Err(VirtioMemRestoreError::Invalid("sizes"));
        }
        let plugged: Vec<bool> = (0..blocks)
            .map(|i| s.plugged_blocks[i / 64] & (1 << (i % 64)) != 0)
            .collect();
        if s.plugged_blocks.iter().map(|w| w.count_ones()).sum::<u32>() as usize
            != plugged.iter().filter(|&&p| p).count()
        {
            return Err(VirtioMemRestoreError::Invalid("bits past the last block"));
        }
        dev.ack_features(s.acked_features);
        dev.restore_parts(s.usable_region_size, s.requested_size, plugged)
            .map_err(VirtioMemRestoreError::Map)?;
        Ok(dev)
    }
}
