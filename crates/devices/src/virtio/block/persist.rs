//! Snapshot state of a virtio-blk device.
//!
//! Saved: the drive's host configuration (id, backing path, read-only, root/partuuid, cache type,
//! engine), the rate limiter's buckets, the features the driver acked and the configuration
//! generation. Restoring reopens the backing file (a missing file is an error naming it) and
//! returns an inactive device; the transport activates it with the saved queues. Requests in
//! flight are never saved: a snapshot is taken while paused, after the VMM called
//! [`VirtioDevice::prepare_save`], which completes every `Async` request still in flight.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Block, BlockConfig, BlockError, CacheType, IoEngine};
use crate::persist::Persist;
use crate::rate_limiter::RateLimiter;
use crate::rate_limiter::persist::RateLimiterState;
use crate::virtio::VirtioDevice;

/// A block device as a snapshot saves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    /// Drive id.
    pub id: String,
    /// Backing file.
    pub path: PathBuf,
    /// Read-only drive.
    pub read_only: bool,
    /// Root device.
    pub root: bool,
    /// Root partition UUID.
    pub partuuid: Option<String>,
    /// Cache strategy.
    pub cache_type: CacheType,
    /// I/O engine.
    pub io_engine: IoEngine,
    /// Rate limiter buckets.
    pub rate_limiter: RateLimiterState,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Configuration generation.
    pub config_generation: u32,
}

/// Why a block device cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum BlockRestoreError {
    /// Rebuilding the device failed (the backing file, the engine).
    #[error("{0}")]
    Block(#[from] BlockError),
    /// The saved rate limiter is invalid.
    #[error("{0}")]
    RateLimiter(#[from] crate::rate_limiter::persist::RateLimiterRestoreError),
}

impl Persist for Block {
    type State = BlockState;
    type ConstructorArgs = ();
    type Error = BlockRestoreError;

    fn save(&self) -> BlockState {
        BlockState {
            id: self.id().to_owned(),
            path: self.path().to_path_buf(),
            read_only: self.is_read_only(),
            root: self.is_root(),
            partuuid: self.partuuid().map(str::to_owned),
            cache_type: self.cache_type(),
            io_engine: self.io_engine(),
            rate_limiter: self.rate_limiter().save(),
            acked_features: self.acked_features(),
            config_generation: self.config_generation(),
        }
    }

    fn restore((): (), state: &BlockState) -> Result<Self, BlockRestoreError> {
        let mut block = Block::new(BlockConfig {
            id: state.id.clone(),
            path: state.path.clone(),
            read_only: state.read_only,
            root: state.root,
            partuuid: state.partuuid.clone(),
            cache_type: state.cache_type,
            io_engine: state.io_engine,
            rate_limiter: RateLimiter::restore((), &state.rate_limiter)?,
        })?;
        block.ack_features(state.acked_features);
        block.set_config_generation(state.config_generation);
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::rate_limiter::TokenBucket;
    use crate::virtio::features;

    fn config(tmp: &TempFile, engine: IoEngine) -> BlockConfig {
        BlockConfig {
            id: "rootfs".into(),
            path: tmp.as_path().to_path_buf(),
            read_only: true,
            root: true,
            partuuid: Some("0eaa91a0-01".into()),
            cache_type: CacheType::Writeback,
            io_engine: engine,
            rate_limiter: RateLimiter::new(TokenBucket::new(4096, 0, 100), None),
        }
    }

    #[test]
    fn test_round_trip() {
        let tmp = TempFile::new().unwrap();
        tmp.as_file().write_all(&[7u8; 4096]).unwrap();
        for engine in [IoEngine::Sync, IoEngine::Async] {
            let mut block = Block::new(config(&tmp, engine)).unwrap();
            block.ack_features(features::bit(features::VERSION_1));
            block.set_config_generation(3);
            let state = block.save();
            let json = serde_json::to_string(&state).unwrap();
            let back = Block::restore((), &serde_json::from_str(&json).unwrap()).unwrap();
            assert_eq!(back.save(), state);
            assert_eq!(back.capacity(), 8);
            assert!(!back.is_activated());
            assert_eq!(back.io_engine(), engine);
        }
    }

    #[test]
    fn test_missing_backing_file_is_an_error() {
        let tmp = TempFile::new().unwrap();
        let mut state = Block::new(config(&tmp, IoEngine::Sync)).unwrap().save();
        state.path = "/nonexistent/squib-disk".into();
        let err = Block::restore((), &state).unwrap_err().to_string();
        assert!(err.contains("No such file"), "{err}");
    }
}
