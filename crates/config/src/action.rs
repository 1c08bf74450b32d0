//! The API → VMM action vocabulary.
//!
//! Every mutating Firecracker request becomes one [`ApiAction`] carrying an already-validated
//! payload. The API controller checks [`ApiAction::admit`] (phase and capability profile) before
//! queuing it; the VMM checks it again when it dequeues (the phase may have moved meanwhile).
//! [`ActionClass`] selects the per-class timeout. [`ApiResponse`] is the VMM's answer.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use squib_core::{CapabilityProfile, LifecyclePhase};

use crate::schemas::{
    actions::InstanceAction,
    balloon::{BalloonConfig, BalloonStartCmd, BalloonStatsUpdate, BalloonUpdate},
    boot_source::BootSource,
    cpu_config::CpuConfig,
    drive::{DriveConfig, DriveUpdate},
    entropy::EntropyConfig,
    hotplug_memory::{HotplugMemoryConfig, HotplugMemoryUpdate},
    logger::LoggerConfig,
    machine_config::{MachineConfig, MachineConfigUpdate},
    metrics::MetricsConfig,
    mmds::MmdsConfig,
    network_interface::{NetworkInterfaceConfig, NetworkInterfaceUpdate},
    pmem::{PmemConfig, PmemUpdate},
    serial::SerialConfig,
    snapshot::{SnapshotCreateParams, SnapshotLoadParams},
    vm::VmStateUpdate,
    vsock::VsockConfig,
};

/// Firecracker's text for a pre-boot-only request after boot.
pub const NOT_SUPPORTED_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
/// Firecracker's text for a post-boot-only request before boot.
pub const NOT_SUPPORTED_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";
/// squib's text for a request arriving while boot orchestration runs.
pub const NOT_SUPPORTED_DURING_BOOT: &str =
    "The requested operation cannot be served during boot orchestration.";
/// squib's text once the VMM has shut down.
pub const VMM_SHUT_DOWN: &str = "VMM is shut down";

/// One mutating API operation, with its validated payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ApiAction {
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /cpu-config`.
    PutCpuConfig(CpuConfig),
    /// `PUT /boot-source`.
    PutBootSource(BootSource),
    /// `PUT /drives/{id}` (pre-boot insert; post-boot hot-plug).
    PutDrive(DriveConfig),
    /// `PATCH /drives/{id}`.
    PatchDrive(DriveUpdate),
    /// `DELETE /drives/{id}`.
    DeleteDrive(String),
    /// `PUT /pmem/{id}`.
    PutPmem(PmemConfig),
    /// `PATCH /pmem/{id}`.
    PatchPmem(PmemUpdate),
    /// `DELETE /pmem/{id}`.
    DeletePmem(String),
    /// `PUT /network-interfaces/{id}`.
    PutNetworkInterface(NetworkInterfaceConfig),
    /// `PATCH /network-interfaces/{id}`.
    PatchNetworkInterface(NetworkInterfaceUpdate),
    /// `DELETE /network-interfaces/{id}`.
    DeleteNetworkInterface(String),
    /// `PUT /vsock`.
    PutVsock(VsockConfig),
    /// `PUT /balloon`.
    PutBalloon(BalloonConfig),
    /// `PATCH /balloon`.
    PatchBalloon(BalloonUpdate),
    /// `PATCH /balloon/statistics`.
    PatchBalloonStatistics(BalloonStatsUpdate),
    /// `PATCH /balloon/hinting/start`.
    StartBalloonHinting(BalloonStartCmd),
    /// `PATCH /balloon/hinting/status` (squib seed: also routed as a PATCH).
    BalloonHintingStatus,
    /// `PATCH /balloon/hinting/stop`.
    StopBalloonHinting,
    /// `PUT /logger`.
    PutLogger(LoggerConfig),
    /// `PUT /metrics`.
    PutMetrics(MetricsConfig),
    /// `PUT /serial`.
    PutSerial(SerialConfig),
    /// `PUT /entropy`.
    PutEntropy(EntropyConfig),
    /// `PUT /mmds` (replace the data store).
    PutMmds(serde_json::Value),
    /// `PATCH /mmds` (RFC 7396 merge patch).
    PatchMmds(serde_json::Value),
    /// `PUT /mmds/config`.
    PutMmdsConfig(MmdsConfig),
    /// `PUT /hotplug/memory`.
    PutHotplugMemory(HotplugMemoryConfig),
    /// `PATCH /hotplug/memory`.
    PatchHotplugMemory(HotplugMemoryUpdate),
    /// `PUT /actions`.
    Instance(InstanceAction),
    /// `PATCH /vm`.
    PatchVm(VmStateUpdate),
    /// `PUT /snapshot/create`.
    CreateSnapshot(SnapshotCreateParams),
    /// `PUT /snapshot/load`.
    LoadSnapshot(SnapshotLoadParams),
    /// Internal: orderly shutdown of the VMM (signals, `--no-api` end). Never from HTTP.
    Shutdown,
}

/// When an action may run, relative to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admissibility {
    /// Only before the microVM is started.
    PreBoot,
    /// Only once the microVM exists.
    PostBoot,
    /// Either.
    Any,
}

/// Why an action was refused before reaching the VMM. `Display` is the `fault_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Pre-boot-only action after start.
    #[error("{NOT_SUPPORTED_AFTER_START}")]
    AfterStart,
    /// Post-boot-only action before start.
    #[error("{NOT_SUPPORTED_BEFORE_START}")]
    BeforeStart,
    /// Boot orchestration in progress.
    #[error("{NOT_SUPPORTED_DURING_BOOT}")]
    DuringBoot,
    /// The VMM is gone for good.
    #[error("{VMM_SHUT_DOWN}")]
    ShutDown,
    /// The host's capability profile does not support this.
    #[error("{0}")]
    Unsupported(String),
}

impl ApiAction {
    /// Firecracker's phase rule for this action.
    pub fn admissibility(&self) -> Admissibility {
        use Admissibility::{Any, PostBoot, PreBoot};
        match self {
            Self::PutMachineConfig(_)
            | Self::PatchMachineConfig(_)
            | Self::PutCpuConfig(_)
            | Self::PutBootSource(_)
            | Self::PutVsock(_)
            | Self::PutBalloon(_)
            | Self::PutLogger(_)
            | Self::PutMetrics(_)
            | Self::PutSerial(_)
            | Self::PutEntropy(_)
            | Self::PutMmdsConfig(_)
            | Self::PutHotplugMemory(_)
            | Self::LoadSnapshot(_)
            | Self::Instance(InstanceAction::InstanceStart) => PreBoot,
            Self::Instance(InstanceAction::FlushMetrics | InstanceAction::SendCtrlAltDel)
            | Self::PatchDrive(_)
            | Self::DeleteDrive(_)
            | Self::PatchPmem(_)
            | Self::DeletePmem(_)
            | Self::PatchNetworkInterface(_)
            | Self::DeleteNetworkInterface(_)
            | Self::PatchBalloon(_)
            | Self::PatchBalloonStatistics(_)
            | Self::StartBalloonHinting(_)
            | Self::BalloonHintingStatus
            | Self::StopBalloonHinting
            | Self::PatchHotplugMemory(_)
            | Self::PatchVm(_)
            | Self::CreateSnapshot(_) => PostBoot,
            // PUT on devices after boot is hot-plug: admitted, and the VMM decides.
            Self::PutDrive(_)
            | Self::PutPmem(_)
            | Self::PutNetworkInterface(_)
            | Self::PutMmds(_)
            | Self::PatchMmds(_)
            | Self::Shutdown => Any,
        }
    }

    /// Admission check against the current phase and the host capability profile.
    ///
    /// Profile rejections come first (the seeds reject `SendCtrlAltDel` on Apple Silicon in
    /// every phase), then the phase rules with Firecracker's texts.
    pub fn admit(
        &self,
        phase: LifecyclePhase,
        profile: &CapabilityProfile,
    ) -> Result<(), AdmissionError> {
        if let Some(msg) = self.profile_rejection(profile) {
            return Err(AdmissionError::Unsupported(msg.into_owned()));
        }
        if matches!(self, Self::Shutdown) {
            return Ok(());
        }
        match phase {
            LifecyclePhase::Shutdown => return Err(AdmissionError::ShutDown),
            LifecyclePhase::Starting => return Err(AdmissionError::DuringBoot),
            _ => {}
        }
        match (self.admissibility(), phase.is_pre_boot()) {
            (Admissibility::PreBoot, false) => Err(AdmissionError::AfterStart),
            (Admissibility::PostBoot, true) => Err(AdmissionError::BeforeStart),
            _ => Ok(()),
        }
    }

    fn profile_rejection<'p>(&self, profile: &'p CapabilityProfile) -> Option<Cow<'p, str>> {
        let template = match self {
            Self::PutMachineConfig(cfg) => cfg.cpu_template,
            Self::PatchMachineConfig(upd) => upd.cpu_template,
            _ => None,
        };
        // A static template of the other architecture (Firecracker cannot even parse it).
        if let Some(t) = template.filter(|t| !t.supported_on(profile.arch)) {
            return Some(Cow::Owned(t.wrong_arch_message(profile.arch)));
        }
        let rejection = match self {
            Self::Instance(InstanceAction::SendCtrlAltDel) => profile.ctrl_alt_del.rejection(),
            Self::PutMachineConfig(cfg) if cfg.smt => profile.smt.rejection(),
            Self::PatchMachineConfig(upd) if upd.smt == Some(true) => profile.smt.rejection(),
            _ => None,
        };
        rejection.map(Cow::Borrowed)
    }

    /// Whether a successful action changes the configuration document ([`crate::vm_config`]).
    pub fn changes_config(&self) -> bool {
        !matches!(
            self,
            Self::Instance(_)
                | Self::PatchVm(_)
                | Self::CreateSnapshot(_)
                | Self::LoadSnapshot(_)
                | Self::StartBalloonHinting(_)
                | Self::BalloonHintingStatus
                | Self::StopBalloonHinting
                | Self::PatchHotplugMemory(_)
                | Self::Shutdown
        )
    }

    /// The timeout class of this action.
    pub fn class(&self) -> ActionClass {
        match self {
            Self::Instance(InstanceAction::InstanceStart) => ActionClass::InstanceStart,
            Self::Instance(InstanceAction::FlushMetrics | InstanceAction::SendCtrlAltDel)
            | Self::Shutdown => ActionClass::Other,
            Self::CreateSnapshot(_) => ActionClass::SnapshotCreate,
            Self::LoadSnapshot(_) => ActionClass::SnapshotLoad,
            Self::PatchVm(_) => ActionClass::VmStateChange,
            Self::PatchBalloon(_) => ActionClass::BalloonResize,
            _ => ActionClass::PreBootConfig,
        }
    }

    /// The deprecation notice for a deprecated input this action carries, if any. The HTTP edge
    /// answers it with `Deprecation: true` and logs it, as Firecracker does.
    pub fn deprecation(&self) -> Option<&'static str> {
        match self {
            Self::PutMachineConfig(cfg) if cfg.cpu_template.is_some() => {
                Some("PUT /machine-config: cpu_template field is deprecated.")
            }
            Self::PatchMachineConfig(upd) if upd.cpu_template.is_some() => {
                Some("PATCH /machine-config: cpu_template field is deprecated.")
            }
            Self::PutMmdsConfig(cfg) if cfg.is_v1() => {
                Some("PUT /mmds/config: V1 is deprecated. Use V2 instead.")
            }
            Self::PutVsock(cfg) if cfg.vsock_id.is_some() => {
                Some("PUT /vsock: vsock_id field is deprecated.")
            }
            Self::LoadSnapshot(p) if p.uses_deprecated_fields() => Some(
                "PUT /snapshot/load: mem_file_path and enable_diff_snapshots fields are deprecated.",
            ),
            _ => None,
        }
    }
}

/// Per-action-class timeout buckets (see `TimeoutTable` in `squib-api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionClass {
    /// Any configuration PUT/PATCH/DELETE.
    PreBootConfig,
    /// `PUT /actions InstanceStart`.
    InstanceStart,
    /// `PUT /snapshot/create`.
    SnapshotCreate,
    /// `PUT /snapshot/load`.
    SnapshotLoad,
    /// `PATCH /vm`.
    VmStateChange,
    /// `PATCH /balloon`.
    BalloonResize,
    /// FlushMetrics, SendCtrlAltDel, Shutdown.
    Other,
}

impl ActionClass {
    /// The label used in the 504 `fault_message` (`VMM action timed out: <label>`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::PreBootConfig => "pre-boot config",
            Self::InstanceStart => "InstanceStart",
            Self::SnapshotCreate => "PUT /snapshot/create",
            Self::SnapshotLoad => "PUT /snapshot/load",
            Self::VmStateChange => "PATCH /vm",
            Self::BalloonResize => "PATCH /balloon",
            Self::Other => "VMM action",
        }
    }
}

/// The VMM's answer to one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiResponse {
    /// Success without a body (HTTP 204).
    NoContent,
    /// Success with a JSON body (HTTP 200).
    Json(serde_json::Value),
    /// Failure: HTTP status (4xx/5xx; anything else is answered as 400) and `fault_message`.
    Fault {
        /// HTTP status code.
        status: u16,
        /// The `fault_message` text.
        message: String,
    },
}

impl ApiResponse {
    /// A 400 fault.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::Fault {
            status: 400,
            message: message.into(),
        }
    }

    /// `true` for `NoContent` and `Json`.
    pub fn is_success(&self) -> bool {
        !matches!(self, Self::Fault { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::machine_config::{
        CpuTemplate, MachineConfigUpdate, RawMachineConfigUpdate,
    };

    fn patch_template(name: &str) -> ApiAction {
        let raw: RawMachineConfigUpdate =
            serde_json::from_value(serde_json::json!({ "cpu_template": name })).unwrap();
        ApiAction::PatchMachineConfig(MachineConfigUpdate::try_from(raw).unwrap())
    }

    #[test]
    fn test_should_refuse_static_templates_of_the_other_architecture() {
        let x86 = CapabilityProfile::x86_64_kvm();
        let arm = CapabilityProfile::apple_silicon();
        let phase = LifecyclePhase::NotStarted;
        assert_eq!(
            patch_template("V1N1")
                .admit(phase, &x86)
                .unwrap_err()
                .to_string(),
            CpuTemplate::V1N1.wrong_arch_message(squib_core::GuestArch::X86_64)
        );
        assert!(patch_template("T2").admit(phase, &x86).is_ok());
        assert!(patch_template("None").admit(phase, &x86).is_ok());
        assert_eq!(
            patch_template("T2A")
                .admit(phase, &arm)
                .unwrap_err()
                .to_string(),
            CpuTemplate::T2A.wrong_arch_message(squib_core::GuestArch::Aarch64)
        );
        assert!(patch_template("V1N1").admit(phase, &arm).is_ok());
    }
}
