//! `PUT /snapshot/create` and `PUT /snapshot/load` bodies.
//!
//! Load takes exactly one of `mem_backend` and the deprecated `mem_file_path`. Firecracker
//! reports a violation as a serde error *after* parsing, so the `fault_message` is
//! ``An error occurred when deserializing the json body of a request: too many fields: either
//! `mem_backend` or `mem_file_path` exclusively is required.`` (no line/column); `TryFrom`
//! returns exactly that text (bare texts: [`TOO_MANY_FIELDS`], [`MISSING_FIELD`]).
//! `enable_diff_snapshots` (deprecated) is folded into `track_dirty_pages`. The override
//! objects, like Firecracker's, ignore unknown fields.

use serde::{Deserialize, Serialize};

use super::limits::{check_list_len, check_path, check_resource_id, check_uds_path};
use super::network_interface::check_host_dev_name;

/// Both `mem_backend` and `mem_file_path` given (Firecracker's text).
pub const TOO_MANY_FIELDS: &str =
    "too many fields: either `mem_backend` or `mem_file_path` exclusively is required";
/// Neither `mem_backend` nor `mem_file_path` given (Firecracker's text).
pub const MISSING_FIELD: &str =
    "missing field: either `mem_backend` or `mem_file_path` is required";
/// How Firecracker wraps serde errors in a `fault_message`.
const SERDE_PREFIX: &str = "An error occurred when deserializing the json body of a request: ";

/// Snapshot kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// Full memory.
    #[default]
    Full,
    /// Only pages dirtied since the last snapshot (needs `track_dirty_pages`).
    Diff,
}

/// Raw `PUT /snapshot/create` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshotCreateParams {
    /// Snapshot kind (default `Full`).
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    /// microVM state file.
    pub snapshot_path: String,
    /// Guest memory file.
    pub mem_file_path: String,
}

/// Validated `PUT /snapshot/create` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SnapshotCreateParams {
    /// Snapshot kind.
    pub snapshot_type: SnapshotType,
    /// microVM state file.
    pub snapshot_path: String,
    /// Guest memory file.
    pub mem_file_path: String,
}

impl TryFrom<RawSnapshotCreateParams> for SnapshotCreateParams {
    type Error = String;

    fn try_from(raw: RawSnapshotCreateParams) -> Result<Self, Self::Error> {
        check_path("snapshot_path", &raw.snapshot_path)?;
        check_path("mem_file_path", &raw.mem_file_path)?;
        Ok(Self {
            snapshot_type: raw.snapshot_type,
            snapshot_path: raw.snapshot_path,
            mem_file_path: raw.mem_file_path,
        })
    }
}

/// Memory backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemBackendType {
    /// Map a memory file.
    File,
    /// Hand guest memory faults to a userfaultfd handler listening on a Unix socket.
    Uffd,
}

/// Memory backend (`MemoryBackend` in the swagger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    /// Backend kind.
    pub backend_type: MemBackendType,
    /// Memory file (`File`) or UFFD handler socket (`Uffd`).
    pub backend_path: String,
}

/// Huge-page choice at restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotHugePages {
    /// Reuse the snapshot's setting.
    #[default]
    Snapshot,
    /// Regular pages.
    None,
    /// Transparent huge pages.
    Transparent,
    /// hugetlbfs 2 MiB pages (needs a UFFD backend).
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Replace an interface's tap at restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    /// Interface id.
    pub iface_id: String,
    /// New tap device name.
    pub host_dev_name: String,
}

/// Replace the vsock Unix socket at restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    /// New host-side socket path.
    pub uds_path: String,
}

/// Raw `PUT /snapshot/load` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshotLoadParams {
    /// microVM state file.
    pub snapshot_path: String,
    /// Deprecated: memory file (same as a `File` backend).
    #[serde(default)]
    pub mem_file_path: Option<String>,
    /// Memory backend.
    #[serde(default)]
    pub mem_backend: Option<MemBackend>,
    /// Deprecated alias of `track_dirty_pages`.
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    /// Track dirty pages after restore.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Resume after a successful load.
    #[serde(default)]
    pub resume_vm: bool,
    /// Tap replacements.
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// Vsock socket replacement.
    #[serde(default)]
    pub vsock_override: Option<VsockOverride>,
    /// Advance kvmclock by the wall-clock time elapsed (x86).
    #[serde(default)]
    pub clock_realtime: bool,
    /// Huge pages at restore.
    #[serde(default)]
    pub huge_pages: Option<SnapshotHugePages>,
}

/// Validated `PUT /snapshot/load` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SnapshotLoadParams {
    /// microVM state file.
    pub snapshot_path: String,
    /// Memory backend (a deprecated `mem_file_path` becomes a `File` backend).
    pub mem_backend: MemBackend,
    /// Track dirty pages (`track_dirty_pages || enable_diff_snapshots`).
    pub track_dirty_pages: bool,
    /// Resume after a successful load.
    pub resume_vm: bool,
    /// Tap replacements.
    pub network_overrides: Vec<NetworkOverride>,
    /// Vsock socket replacement.
    pub vsock_override: Option<VsockOverride>,
    /// Advance kvmclock at restore.
    pub clock_realtime: bool,
    /// Huge pages at restore.
    pub huge_pages: SnapshotHugePages,
    #[serde(skip)]
    deprecated: bool,
}

impl SnapshotLoadParams {
    /// `true` if the request used `mem_file_path` or `enable_diff_snapshots`.
    pub fn uses_deprecated_fields(&self) -> bool {
        self.deprecated
    }
}

impl TryFrom<RawSnapshotLoadParams> for SnapshotLoadParams {
    type Error = String;

    fn try_from(raw: RawSnapshotLoadParams) -> Result<Self, Self::Error> {
        let deprecated = raw.mem_file_path.is_some() || raw.enable_diff_snapshots;
        let mem_backend = match (raw.mem_backend, raw.mem_file_path) {
            (Some(_), Some(_)) => return Err(format!("{SERDE_PREFIX}{TOO_MANY_FIELDS}.")),
            (None, None) => return Err(format!("{SERDE_PREFIX}{MISSING_FIELD}.")),
            (Some(backend), None) => backend,
            (None, Some(path)) => MemBackend {
                backend_type: MemBackendType::File,
                backend_path: path,
            },
        };
        check_path("snapshot_path", &raw.snapshot_path)?;
        match mem_backend.backend_type {
            MemBackendType::File => check_path("backend_path", &mem_backend.backend_path)?,
            MemBackendType::Uffd => check_uds_path("backend_path", &mem_backend.backend_path)?,
        }
        check_list_len("network_overrides", raw.network_overrides.len())?;
        for o in &raw.network_overrides {
            check_resource_id(&o.iface_id)?;
            check_host_dev_name(&o.host_dev_name)?;
        }
        if let Some(v) = &raw.vsock_override {
            check_uds_path("uds_path", &v.uds_path)?;
        }
        Ok(Self {
            snapshot_path: raw.snapshot_path,
            mem_backend,
            track_dirty_pages: raw.track_dirty_pages || raw.enable_diff_snapshots,
            resume_vm: raw.resume_vm,
            network_overrides: raw.network_overrides,
            vsock_override: raw.vsock_override,
            clock_realtime: raw.clock_realtime,
            huge_pages: raw.huge_pages.unwrap_or_default(),
            deprecated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<SnapshotLoadParams, String> {
        let raw: RawSnapshotLoadParams = serde_json::from_str(json).map_err(|e| e.to_string())?;
        SnapshotLoadParams::try_from(raw)
    }

    fn create(json: &str) -> Result<SnapshotCreateParams, String> {
        let raw: RawSnapshotCreateParams = serde_json::from_str(json).map_err(|e| e.to_string())?;
        SnapshotCreateParams::try_from(raw)
    }

    #[test]
    fn test_should_parse_create() {
        let c = create(r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#).unwrap();
        assert_eq!(c.snapshot_type, SnapshotType::Full);
        let c = create(r#"{"snapshot_path":"/s","mem_file_path":"/m","snapshot_type":"Diff"}"#)
            .unwrap();
        assert_eq!(c.snapshot_type, SnapshotType::Diff);
        assert_eq!(
            create(r#"{"snapshot_path":"","mem_file_path":"/m"}"#).unwrap_err(),
            "Invalid snapshot_path: must not be empty"
        );
        assert!(
            create(r#"{"snapshot_path":"/s"}"#)
                .unwrap_err()
                .starts_with("missing field `mem_file_path`")
        );
    }

    #[test]
    fn test_should_parse_load_with_backend() {
        let l = load(
            r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"Uffd","backend_path":"/u.sock"},
                "resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],
                "vsock_override":{"uds_path":"/v.sock"},"clock_realtime":true,"huge_pages":"2M"}"#,
        )
        .unwrap();
        assert!(!l.uses_deprecated_fields());
        assert_eq!(l.mem_backend.backend_type, MemBackendType::Uffd);
        assert!(l.resume_vm && l.clock_realtime && !l.track_dirty_pages);
        assert_eq!(l.huge_pages, SnapshotHugePages::Hugetlbfs2M);
        assert_eq!(l.network_overrides[0].host_dev_name, "tap1");
    }

    #[test]
    fn test_should_map_deprecated_fields() {
        let l = load(r#"{"snapshot_path":"/s","mem_file_path":"/m","enable_diff_snapshots":true}"#)
            .unwrap();
        assert!(l.uses_deprecated_fields());
        assert!(l.track_dirty_pages);
        assert_eq!(
            l.mem_backend,
            MemBackend {
                backend_type: MemBackendType::File,
                backend_path: "/m".into()
            }
        );
        assert_eq!(l.huge_pages, SnapshotHugePages::Snapshot);
        let l = load(r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"enable_diff_snapshots":true}"#).unwrap();
        assert!(l.uses_deprecated_fields());
    }

    #[test]
    fn test_should_reject_backend_combinations_with_firecracker_text() {
        assert_eq!(
            load(r#"{"snapshot_path":"/s","mem_file_path":"/m","mem_backend":{"backend_type":"File","backend_path":"/m"}}"#)
                .unwrap_err(),
            "An error occurred when deserializing the json body of a request: too many fields: either `mem_backend` or `mem_file_path` exclusively is required."
        );
        assert_eq!(
            load(r#"{"snapshot_path":"/s"}"#).unwrap_err(),
            "An error occurred when deserializing the json body of a request: missing field: either `mem_backend` or `mem_file_path` is required."
        );
    }

    #[test]
    fn test_should_reject_bad_load_fields() {
        assert_eq!(
            load(r#"{"snapshot_path":"/s","mem_file_path":"/m","network_overrides":[{"iface_id":"a-b","host_dev_name":"t"}]}"#)
                .unwrap_err(),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        assert_eq!(
            load(r#"{"snapshot_path":"/s","mem_file_path":"/m","vsock_override":{"uds_path":""}}"#)
                .unwrap_err(),
            "Invalid uds_path: must not be empty"
        );
        assert!(
            load(r#"{"snapshot_path":"/s","mem_file_path":"/m","huge_pages":"1G"}"#)
                .unwrap_err()
                .starts_with("unknown variant `1G`")
        );
        assert!(
            load(r#"{"snapshot_path":"/s","mem_file_path":"/m","bogus":1}"#)
                .unwrap_err()
                .starts_with("unknown field")
        );
        // Override objects ignore unknown fields, like Firecracker's.
        assert!(load(r#"{"snapshot_path":"/s","mem_file_path":"/m","vsock_override":{"uds_path":"/v","x":1}}"#).is_ok());
    }
}
