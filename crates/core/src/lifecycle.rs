//! VM lifecycle phases and their wire representation.
//!
//! squib tracks six internal phases; Firecracker's wire format only knows three states
//! (`"Not started"`, `"Running"`, `"Paused"`). [`LifecyclePhase::wire_state`] is the one place
//! where the collapse happens.

use serde::{Deserialize, Serialize};

/// Internal lifecycle phase of a microVM.
///
/// Transitions: `Uninitialized → NotStarted` (first configuration), `NotStarted → Starting`
/// (InstanceStart or snapshot load), `Starting → Running | Paused`, `Running ↔ Paused`, and any
/// phase → `Shutdown` (terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum LifecyclePhase {
    /// Nothing configured yet.
    #[default]
    Uninitialized,
    /// Pre-boot configuration received, waiting for `InstanceStart`.
    NotStarted,
    /// Boot orchestration (memory, vCPUs, devices) in progress.
    Starting,
    /// At least one vCPU is running guest code.
    Running,
    /// Booted, all vCPUs paused.
    Paused,
    /// Terminal: the guest shut down or a fatal error occurred.
    Shutdown,
}

impl LifecyclePhase {
    /// `true` while pre-boot configuration is admissible.
    pub const fn is_pre_boot(self) -> bool {
        matches!(self, Self::Uninitialized | Self::NotStarted)
    }

    /// `true` once the microVM exists (running or paused).
    pub const fn is_post_boot(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// The Firecracker wire state this phase is reported as in `GET /`.
    pub const fn wire_state(self) -> VmState {
        match self {
            Self::Running => VmState::Running,
            Self::Paused => VmState::Paused,
            Self::Uninitialized | Self::NotStarted | Self::Starting | Self::Shutdown => {
                VmState::NotStarted
            }
        }
    }
}

/// The three instance states Firecracker reports in `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum VmState {
    /// `"Not started"` (with a space, as Firecracker spells it).
    #[default]
    #[serde(rename = "Not started")]
    NotStarted,
    /// `"Running"`.
    Running,
    /// `"Paused"`.
    Paused,
}

impl VmState {
    /// The exact wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "Not started",
            Self::Running => "Running",
            Self::Paused => "Paused",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [LifecyclePhase; 6] = [
        LifecyclePhase::Uninitialized,
        LifecyclePhase::NotStarted,
        LifecyclePhase::Starting,
        LifecyclePhase::Running,
        LifecyclePhase::Paused,
        LifecyclePhase::Shutdown,
    ];

    #[test]
    fn test_should_collapse_phases_onto_three_wire_states() {
        let wire: Vec<&str> = ALL.iter().map(|p| p.wire_state().as_str()).collect();
        assert_eq!(
            wire,
            [
                "Not started",
                "Not started",
                "Not started",
                "Running",
                "Paused",
                "Not started"
            ]
        );
    }

    #[test]
    fn test_should_partition_pre_and_post_boot() {
        for p in ALL {
            assert!(!(p.is_pre_boot() && p.is_post_boot()), "{p:?} is both");
        }
        assert!(LifecyclePhase::Uninitialized.is_pre_boot());
        assert!(LifecyclePhase::NotStarted.is_pre_boot());
        assert!(LifecyclePhase::Running.is_post_boot());
        assert!(LifecyclePhase::Paused.is_post_boot());
        assert!(
            !LifecyclePhase::Starting.is_pre_boot() && !LifecyclePhase::Starting.is_post_boot()
        );
        assert!(
            !LifecyclePhase::Shutdown.is_pre_boot() && !LifecyclePhase::Shutdown.is_post_boot()
        );
    }

    #[test]
    fn test_should_serialize_wire_state_with_space() {
        assert_eq!(
            serde_json::to_string(&VmState::NotStarted).unwrap(),
            r#""Not started""#
        );
        assert!(serde_json::from_str::<VmState>(r#""NotStarted""#).is_err());
        assert_eq!(
            serde_json::from_str::<VmState>(r#""Paused""#).unwrap(),
            VmState::Paused
        );
    }
}
