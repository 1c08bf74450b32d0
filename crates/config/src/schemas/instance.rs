//! `GET /` and `GET /version` response bodies.

use serde::{Deserialize, Serialize};
pub use squib_core::VmState;

/// `GET /` body: `{id, state, vmm_version, app_name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Instance id (`--id`).
    pub id: String,
    /// Wire state: "Not started" | "Running" | "Paused".
    pub state: VmState,
    /// VMM build version.
    pub vmm_version: String,
    /// Always "Firecracker".
    pub app_name: String,
}

impl InstanceInfo {
    /// The `app_name` Firecracker reports and launchers check.
    pub const APP_NAME: &'static str = "Firecracker";

    /// A not-started instance.
    pub fn new(id: impl Into<String>, vmm_version: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            state: VmState::NotStarted,
            vmm_version: vmm_version.into(),
            app_name: Self::APP_NAME.to_owned(),
        }
    }
}

/// `GET /version` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    /// Firecracker API version squib is compatible with.
    pub firecracker_version: String,
}
