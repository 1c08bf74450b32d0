//! `/drives/{id}` PUT and PATCH bodies (`Drive` / `PartialDrive` in the swagger).
//!
//! A drive is either **virtio-block** (`path_on_host` required; `is_read_only` defaults to
//! false, `io_engine` to `Sync`) or **vhost-user-block** (`socket` set; `path_on_host`,
//! `is_read_only` and `io_engine` must then be omitted). The path/body id match is checked by
//! the API layer; root-device uniqueness by [`crate::vm_config::VmConfig::apply`].

use serde::{Deserialize, Serialize, Serializer};

use super::limits::{MAX_SHORT_STRING_LEN, check_path, check_resource_id, check_string};
use super::rate_limiter::{RateLimiterConfig, RawRateLimiterConfig, convert_opt};

/// Block cache strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Ignore guest flushes.
    #[default]
    Unsafe,
    /// Honour guest flushes.
    Writeback,
}

/// Block I/O engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Synchronous I/O.
    #[default]
    Sync,
    /// io_uring (Firecracker: host kernel > 5.10.51).
    Async,
}

/// Raw `PUT /drives/{id}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDriveConfig {
    /// Drive id.
    pub drive_id: String,
    /// Boot partition UUID (root device only).
    #[serde(default)]
    pub partuuid: Option<String>,
    /// Root device flag.
    pub is_root_device: bool,
    /// Cache strategy.
    #[serde(default)]
    pub cache_type: CacheType,
    /// Read-only flag (virtio-block).
    #[serde(default)]
    pub is_read_only: Option<bool>,
    /// Backing file (virtio-block).
    #[serde(default)]
    pub path_on_host: Option<String>,
    /// Rate limiter (virtio-block).
    #[serde(default)]
    pub rate_limiter: Option<RawRateLimiterConfig>,
    /// I/O engine (virtio-block).
    #[serde(default)]
    pub io_engine: Option<IoEngine>,
    /// vhost-user backend socket (vhost-user-block).
    #[serde(default)]
    pub socket: Option<String>,
}

/// Validated drive.
///
/// Serializes every key, as `GET /vm/config` does:
/// `{"drive_id":..,"partuuid":null,"is_root_device":..,"cache_type":"Unsafe","is_read_only":..,
/// "path_on_host":..,"rate_limiter":null,"io_engine":"Sync","socket":null}`. For a vhost-user
/// drive `is_read_only`, `path_on_host` and `io_engine` are `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriveConfig {
    /// Drive id.
    pub drive_id: String,
    /// Boot partition UUID.
    pub partuuid: Option<String>,
    /// Root device flag.
    pub is_root_device: bool,
    /// Cache strategy.
    pub cache_type: CacheType,
    /// Read-only flag: `Some` (default false) for virtio-block, `None` for vhost-user.
    pub is_read_only: Option<bool>,
    /// Backing file (virtio-block).
    pub path_on_host: Option<String>,
    /// Rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
    /// I/O engine (meaningful for virtio-block only).
    pub io_engine: IoEngine,
    /// vhost-user backend socket.
    pub socket: Option<String>,
}

impl DriveConfig {
    /// The drive id.
    pub fn id(&self) -> &str {
        &self.drive_id
    }

    /// `true` for a vhost-user-block drive.
    pub fn is_vhost_user(&self) -> bool {
        self.socket.is_some()
    }

    /// Effective read-only flag (false when unset).
    pub fn read_only(&self) -> bool {
        self.is_read_only.unwrap_or(false)
    }
}

#[derive(Serialize)]
struct DriveView<'a> {
    drive_id: &'a str,
    partuuid: Option<&'a str>,
    is_root_device: bool,
    cache_type: CacheType,
    is_read_only: Option<bool>,
    path_on_host: Option<&'a str>,
    rate_limiter: Option<&'a RateLimiterConfig>,
    io_engine: Option<IoEngine>,
    socket: Option<&'a str>,
}

impl Serialize for DriveConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DriveView {
            drive_id: &self.drive_id,
            partuuid: self.partuuid.as_deref(),
            is_root_device: self.is_root_device,
            cache_type: self.cache_type,
            is_read_only: self.is_read_only,
            path_on_host: self.path_on_host.as_deref(),
            rate_limiter: self.rate_limiter.as_ref(),
            io_engine: (!self.is_vhost_user()).then_some(self.io_engine),
            socket: self.socket.as_deref(),
        }
        .serialize(serializer)
    }
}

/// Error for a vhost-user drive that also carries virtio-block fields.
pub const VHOST_USER_FIELDS: &str = "Invalid drive: path_on_host, is_read_only and io_engine must be omitted for a vhost-user-block drive (socket is set)";
/// Error for a virtio-block drive without a backing file.
pub const MISSING_PATH_ON_HOST: &str = "Invalid drive: path_on_host is required for a virtio-block drive (or set socket for vhost-user-block)";

impl TryFrom<RawDriveConfig> for DriveConfig {
    type Error = String;

    fn try_from(raw: RawDriveConfig) -> Result<Self, Self::Error> {
        check_resource_id(&raw.drive_id)?;
        if let Some(p) = &raw.partuuid {
            check_string("partuuid", p, MAX_SHORT_STRING_LEN)?;
        }
        let rate_limiter = convert_opt(raw.rate_limiter)?;
        let is_read_only = if let Some(socket) = &raw.socket {
            check_path("socket", socket)?;
            if raw.path_on_host.is_some() || raw.is_read_only.is_some() || raw.io_engine.is_some() {
                return Err(VHOST_USER_FIELDS.to_owned());
            }
            None
        } else {
            let Some(path) = &raw.path_on_host else {
                return Err(MISSING_PATH_ON_HOST.to_owned());
            };
            check_path("path_on_host", path)?;
            Some(raw.is_read_only.unwrap_or(false))
        };
        Ok(Self {
            drive_id: raw.drive_id,
            partuuid: raw.partuuid,
            is_root_device: raw.is_root_device,
            cache_type: raw.cache_type,
            is_read_only,
            path_on_host: raw.path_on_host,
            rate_limiter,
            io_engine: raw.io_engine.unwrap_or_default(),
            socket: raw.socket,
        })
    }
}

/// Raw `PATCH /drives/{id}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDriveUpdate {
    /// Drive id.
    pub drive_id: String,
    /// New backing file.
    #[serde(default)]
    pub path_on_host: Option<String>,
    /// New rate limiter.
    #[serde(default)]
    pub rate_limiter: Option<RawRateLimiterConfig>,
}

/// Validated `PATCH /drives/{id}` body. An empty update (id only) is valid: for vhost-user it
/// requests a config refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DriveUpdate {
    /// Drive id.
    pub drive_id: String,
    /// New backing file.
    pub path_on_host: Option<String>,
    /// New rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl DriveUpdate {
    /// The drive id.
    pub fn id(&self) -> &str {
        &self.drive_id
    }
}

impl TryFrom<RawDriveUpdate> for DriveUpdate {
    type Error = String;

    fn try_from(raw: RawDriveUpdate) -> Result<Self, Self::Error> {
        check_resource_id(&raw.drive_id)?;
        if let Some(p) = &raw.path_on_host {
            check_path("path_on_host", p)?;
        }
        Ok(Self {
            drive_id: raw.drive_id,
            path_on_host: raw.path_on_host,
            rate_limiter: convert_opt(raw.rate_limiter)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<DriveConfig, String> {
        let raw: RawDriveConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        DriveConfig::try_from(raw)
    }

    fn patch(json: &str) -> Result<DriveUpdate, String> {
        let raw: RawDriveUpdate = serde_json::from_str(json).map_err(|e| e.to_string())?;
        DriveUpdate::try_from(raw)
    }

    #[test]
    fn test_should_serialize_virtio_drive_like_firecracker() {
        let d =
            put(r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"/img"}"#).unwrap();
        assert_eq!(d.id(), "rootfs");
        assert!(!d.read_only());
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"drive_id":"rootfs","partuuid":null,"is_root_device":true,"cache_type":"Unsafe","is_read_only":false,"path_on_host":"/img","rate_limiter":null,"io_engine":"Sync","socket":null}"#
        );
    }

    #[test]
    fn test_should_accept_full_virtio_drive() {
        let d = put(
            r#"{"drive_id":"d1","partuuid":"abc-1","is_root_device":false,"cache_type":"Writeback",
                "is_read_only":true,"path_on_host":"/img","io_engine":"Async",
                "rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#,
        )
        .unwrap();
        assert_eq!(d.cache_type, CacheType::Writeback);
        assert_eq!(d.io_engine, IoEngine::Async);
        assert!(d.read_only());
        assert!(d.rate_limiter.unwrap().ops.is_some());
    }

    #[test]
    fn test_should_serialize_vhost_user_drive() {
        let d = put(r#"{"drive_id":"v","is_root_device":false,"socket":"/s.sock"}"#).unwrap();
        assert!(d.is_vhost_user());
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"drive_id":"v","partuuid":null,"is_root_device":false,"cache_type":"Unsafe","is_read_only":null,"path_on_host":null,"rate_limiter":null,"io_engine":null,"socket":"/s.sock"}"#
        );
    }

    #[test]
    fn test_should_reject_mixed_or_missing_backends() {
        assert_eq!(
            put(r#"{"drive_id":"v","is_root_device":false,"socket":"/s","path_on_host":"/i"}"#)
                .unwrap_err(),
            VHOST_USER_FIELDS
        );
        assert_eq!(
            put(r#"{"drive_id":"v","is_root_device":false,"socket":"/s","io_engine":"Sync"}"#)
                .unwrap_err(),
            VHOST_USER_FIELDS
        );
        assert_eq!(
            put(r#"{"drive_id":"v","is_root_device":false}"#).unwrap_err(),
            MISSING_PATH_ON_HOST
        );
    }

    #[test]
    fn test_should_reject_bad_ids_with_firecracker_texts() {
        assert_eq!(
            put(r#"{"drive_id":"a-b","is_root_device":false,"path_on_host":"/i"}"#).unwrap_err(),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        assert_eq!(
            put(r#"{"drive_id":"","is_root_device":false,"path_on_host":"/i"}"#).unwrap_err(),
            "The ID cannot be empty."
        );
        assert_eq!(
            patch(r#"{"drive_id":"a b"}"#).unwrap_err(),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
    }

    #[test]
    fn test_should_reject_bad_paths_and_fields() {
        assert_eq!(
            put(r#"{"drive_id":"d","is_root_device":false,"path_on_host":""}"#).unwrap_err(),
            "Invalid path_on_host: must not be empty"
        );
        let long = format!(
            r#"{{"drive_id":"d","is_root_device":false,"path_on_host":"/i","partuuid":"{}"}}"#,
            "a".repeat(257)
        );
        assert_eq!(
            put(&long).unwrap_err(),
            "Invalid partuuid: exceeds 256 bytes (got 257 bytes)"
        );
        assert!(
            put(r#"{"drive_id":"d","path_on_host":"/i"}"#)
                .unwrap_err()
                .starts_with("missing field `is_root_device`")
        );
        assert!(
            put(r#"{"drive_id":"d","is_root_device":false,"path_on_host":"/i","cache_type":"X"}"#)
                .unwrap_err()
                .starts_with("unknown variant `X`, expected `Unsafe` or `Writeback`")
        );
    }

    #[test]
    fn test_should_parse_patch() {
        let u = patch(r#"{"drive_id":"d","path_on_host":"/new"}"#).unwrap();
        assert_eq!(u.id(), "d");
        assert_eq!(u.path_on_host.as_deref(), Some("/new"));
        assert!(patch(r#"{"drive_id":"d"}"#).is_ok());
        assert_eq!(
            patch(r#"{"drive_id":"d","path_on_host":""}"#).unwrap_err(),
            "Invalid path_on_host: must not be empty"
        );
        assert!(
            patch(r#"{"drive_id":"d","is_read_only":true}"#)
                .unwrap_err()
                .starts_with("unknown field")
        );
    }
}
