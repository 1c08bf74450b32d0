//! Host capability profiles: platform differences as data.
//!
//! A hypervisor backend supplies a [`CapabilityProfile`]; the API controller consults it when
//! admitting requests (`smt: true`, `SendCtrlAltDel`, vCPU limits). Two profiles ship:
//!
//! - [`CapabilityProfile::apple_silicon`]: the reference profile of the seed documents
//!   (Hypervisor.framework, aarch64 guests): no SMT, no Ctrl-Alt-Del.
//! - [`CapabilityProfile::x86_64_kvm`]: KVM on x86_64: SMT allowed under Firecracker's
//!   "1 or an even number of vCPUs" rule, Ctrl-Alt-Del available after boot.

use serde::{Deserialize, Serialize};

use crate::MAX_SUPPORTED_VCPUS;

/// Guest CPU architecture a profile boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestArch {
    /// x86_64 guests.
    X86_64,
    /// aarch64 guests.
    Aarch64,
}

/// Whether a platform feature is available; when not, the exact `fault_message` to answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capability {
    /// The feature is available.
    Supported,
    /// The feature is unavailable; requests using it are rejected with this message.
    Unsupported(String),
}

impl Capability {
    /// `true` if supported.
    pub fn is_supported(&self) -> bool {
        matches!(self, Self::Supported)
    }

    /// The rejection message, if unsupported.
    pub fn rejection(&self) -> Option<&str> {
        match self {
            Self::Supported => None,
            Self::Unsupported(msg) => Some(msg),
        }
    }
}

/// What the host platform can do, as seen by the API layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityProfile {
    /// Human-readable profile name (logged at startup).
    pub name: String,
    /// Guest architecture.
    pub arch: GuestArch,
    /// `machine-config.smt: true`.
    pub smt: Capability,
    /// `PUT /actions {"action_type":"SendCtrlAltDel"}`.
    pub ctrl_alt_del: Capability,
    /// Largest `vcpu_count` the host accepts (≤ [`MAX_SUPPORTED_VCPUS`]).
    pub max_vcpus: u8,
}

impl CapabilityProfile {
    /// The seeds' reference profile: Apple Silicon / Hypervisor.framework.
    pub fn apple_silicon() -> Self {
        Self {
            name: "apple-silicon-hvf".to_owned(),
            arch: GuestArch::Aarch64,
            smt: Capability::Unsupported(
                "Invalid arch field for SMT: SMT not supported on Apple Silicon".to_owned(),
            ),
            ctrl_alt_del: Capability::Unsupported(
                "Invalid action: SendCtrlAltDel is x86-only and not supported on aarch64"
                    .to_owned(),
            ),
            max_vcpus: MAX_SUPPORTED_VCPUS,
        }
    }

    /// KVM on x86_64: Firecracker's own rules.
    pub fn x86_64_kvm() -> Self {
        Self {
            name: "x86_64-kvm".to_owned(),
            arch: GuestArch::X86_64,
            smt: Capability::Supported,
            ctrl_alt_del: Capability::Supported,
            max_vcpus: MAX_SUPPORTED_VCPUS,
        }
    }
}

impl Default for CapabilityProfile {
    /// The seeds' reference profile (see [`CapabilityProfile::apple_silicon`]).
    fn default() -> Self {
        Self::apple_silicon()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_describe_platform_differences_as_data() {
        let apple = CapabilityProfile::apple_silicon();
        assert!(
            apple
                .smt
                .rejection()
                .unwrap()
                .contains("SMT not supported on Apple Silicon")
        );
        assert!(
            apple
                .ctrl_alt_del
                .rejection()
                .unwrap()
                .contains("SendCtrlAltDel is x86-only")
        );
        let kvm = CapabilityProfile::x86_64_kvm();
        assert!(kvm.smt.is_supported() && kvm.ctrl_alt_del.is_supported());
        assert_eq!(CapabilityProfile::default(), apple);
    }
}
