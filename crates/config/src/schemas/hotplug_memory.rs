//! `/hotplug/memory` bodies: virtio-mem hot(un)plug.
//!
//! `PUT` carries the full configuration, `PATCH` a new requested size, `GET` answers
//! [`HotplugMemoryStatus`]. Field names follow Firecracker's `MemoryHotplugConfig`,
//! `MemoryHotplugSizeUpdate` and `MemoryHotplugStatus`. The rules are the seed spec's:
//! - `total_size_mib` in `1..=`[`MAX_TOTAL_SIZE_MIB`] and a multiple of `slot_size_mib`;
//! - `block_size_mib` ≥ 1 (default [`DEFAULT_BLOCK_SIZE_MIB`]);
//! - `slot_size_mib` ≥ 1 and ≥ `block_size_mib` (default [`DEFAULT_SLOT_SIZE_MIB`]);
//! - `requested_size_mib` in `0..=`[`MAX_TOTAL_SIZE_MIB`] (0 unplugs everything).
//!
//! The host-RAM cap is the VMM's business.

use serde::{Deserialize, Serialize};

/// Default block size, MiB: the smallest unit the guest (un)plugs.
pub const DEFAULT_BLOCK_SIZE_MIB: u64 = 2;

/// Default slot size, MiB: the smallest unit the host attaches or detaches.
pub const DEFAULT_SLOT_SIZE_MIB: u64 = 128;

/// Largest `total_size_mib` (1 TiB).
pub const MAX_TOTAL_SIZE_MIB: u64 = 1_048_576;

const fn default_block_size() -> u64 {
    DEFAULT_BLOCK_SIZE_MIB
}

const fn default_slot_size() -> u64 {
    DEFAULT_SLOT_SIZE_MIB
}

/// Raw `PUT /hotplug/memory` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHotplugMemoryConfig {
    /// Total hot-pluggable memory, MiB.
    pub total_size_mib: u64,
    /// Block size, MiB.
    #[serde(default = "default_block_size")]
    pub block_size_mib: u64,
    /// Slot size, MiB.
    #[serde(default = "default_slot_size")]
    pub slot_size_mib: u64,
}

/// Validated `PUT /hotplug/memory` body (the `memory-hotplug` member of `/vm/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HotplugMemoryConfig {
    /// Total hot-pluggable memory, MiB.
    pub total_size_mib: u64,
    /// Block size, MiB.
    pub block_size_mib: u64,
    /// Slot size, MiB.
    pub slot_size_mib: u64,
}

impl TryFrom<RawHotplugMemoryConfig> for HotplugMemoryConfig {
    type Error = String;

    fn try_from(raw: RawHotplugMemoryConfig) -> Result<Self, Self::Error> {
        let RawHotplugMemoryConfig {
            total_size_mib,
            block_size_mib,
            slot_size_mib,
        } = raw;
        if !(1..=MAX_TOTAL_SIZE_MIB).contains(&total_size_mib) {
            return Err(format!(
                "Invalid total_size_mib: must be 1..={MAX_TOTAL_SIZE_MIB}"
            ));
        }
        if block_size_mib == 0 {
            return Err("Invalid block_size_mib: must be >= 1".to_owned());
        }
        if slot_size_mib == 0 {
            return Err("Invalid slot_size_mib: must be >= 1".to_owned());
        }
        if slot_size_mib < block_size_mib {
            return Err(
                "Invalid hotplug-memory: slot_size_mib must be >= block_size_mib".to_owned(),
            );
        }
        if !total_size_mib.is_multiple_of(slot_size_mib) {
            return Err("Invalid total_size_mib: must be a multiple of slot_size_mib".to_owned());
        }
        Ok(Self {
            total_size_mib,
            block_size_mib,
            slot_size_mib,
        })
    }
}

/// Raw `PATCH /hotplug/memory` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHotplugMemoryUpdate {
    /// New requested size, MiB.
    pub requested_size_mib: u64,
}

/// Validated `PATCH /hotplug/memory` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HotplugMemoryUpdate {
    /// New requested size, MiB.
    pub requested_size_mib: u64,
}

impl TryFrom<RawHotplugMemoryUpdate> for HotplugMemoryUpdate {
    type Error = String;

    fn try_from(raw: RawHotplugMemoryUpdate) -> Result<Self, Self::Error> {
        if raw.requested_size_mib > MAX_TOTAL_SIZE_MIB {
            return Err(format!(
                "Invalid requested_size_mib: must be 0..={MAX_TOTAL_SIZE_MIB}"
            ));
        }
        Ok(Self {
            requested_size_mib: raw.requested_size_mib,
        })
    }
}

/// `GET /hotplug/memory` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotplugMemoryStatus {
    /// Total hot-pluggable memory, MiB.
    pub total_size_mib: u64,
    /// Slot size, MiB.
    pub slot_size_mib: u64,
    /// Block size, MiB.
    pub block_size_mib: u64,
    /// Memory currently plugged, MiB.
    pub plugged_size_mib: u64,
    /// Memory requested, MiB.
    pub requested_size_mib: u64,
}

impl HotplugMemoryStatus {
    /// The status of a freshly configured device (nothing plugged or requested yet).
    pub fn from_config(cfg: &HotplugMemoryConfig) -> Self {
        Self {
            total_size_mib: cfg.total_size_mib,
            slot_size_mib: cfg.slot_size_mib,
            block_size_mib: cfg.block_size_mib,
            plugged_size_mib: 0,
            requested_size_mib: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<HotplugMemoryConfig, String> {
        let raw: RawHotplugMemoryConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        HotplugMemoryConfig::try_from(raw)
    }

    #[test]
    fn test_should_accept_config_with_defaults() {
        let cfg = put(r#"{"total_size_mib":256}"#).unwrap();
        assert_eq!((cfg.block_size_mib, cfg.slot_size_mib), (2, 128));
        assert_eq!(
            serde_json::to_string(&cfg).unwrap(),
            r#"{"total_size_mib":256,"block_size_mib":2,"slot_size_mib":128}"#
        );
    }

    #[test]
    fn test_should_reject_every_invalid_config() {
        let cases = [
            (
                r#"{"total_size_mib":0}"#,
                "Invalid total_size_mib: must be 1..=1048576",
            ),
            (
                r#"{"total_size_mib":1048577}"#,
                "Invalid total_size_mib: must be 1..=1048576",
            ),
            (
                r#"{"total_size_mib":256,"block_size_mib":0}"#,
                "Invalid block_size_mib: must be >= 1",
            ),
            (
                r#"{"total_size_mib":256,"block_size_mib":1,"slot_size_mib":0}"#,
                "Invalid slot_size_mib: must be >= 1",
            ),
            (
                r#"{"total_size_mib":256,"block_size_mib":64,"slot_size_mib":32}"#,
                "Invalid hotplug-memory: slot_size_mib must be >= block_size_mib",
            ),
            (
                r#"{"total_size_mib":100}"#,
                "Invalid total_size_mib: must be a multiple of slot_size_mib",
            ),
        ];
        for (json, msg) in cases {
            assert_eq!(put(json).unwrap_err(), msg, "{json}");
        }
        assert!(
            put(r#"{"total_size_mib":256,"x":1}"#)
                .unwrap_err()
                .starts_with("unknown field `x`")
        );
    }

    #[test]
    fn test_should_bound_requested_size() {
        let ok = HotplugMemoryUpdate::try_from(RawHotplugMemoryUpdate {
            requested_size_mib: 0,
        });
        assert_eq!(ok.unwrap().requested_size_mib, 0);
        let err = HotplugMemoryUpdate::try_from(RawHotplugMemoryUpdate {
            requested_size_mib: MAX_TOTAL_SIZE_MIB + 1,
        });
        assert_eq!(
            err.unwrap_err(),
            "Invalid requested_size_mib: must be 0..=1048576"
        );
    }

    #[test]
    fn test_should_serialize_status() {
        let cfg = put(r#"{"total_size_mib":1024,"block_size_mib":2,"slot_size_mib":128}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&HotplugMemoryStatus::from_config(&cfg)).unwrap(),
            r#"{"total_size_mib":1024,"slot_size_mib":128,"block_size_mib":2,"plugged_size_mib":0,"requested_size_mib":0}"#
        );
    }
}
