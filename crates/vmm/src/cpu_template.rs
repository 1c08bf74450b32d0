//! The guest CPU of a boot: which CPU template applies, and the templated CPUID and MSRs every
//! vCPU gets.
//!
//! Firecracker keeps one template slot: a static template from `machine-config`
//! (`cpu_template`) or a custom one from `PUT /cpu-config`, whichever came last (`VmConfig`
//! keeps that rule). This module turns the slot into a `squib_arch::template::CpuTemplate`
//! ([`resolve`]: static templates are checked against the host's vendor and model here), and
//! computes what the vCPUs share ([`GuestCpu::prepare`]): the supported CPUID with the template
//! applied, and the template's MSR values read from a fresh vCPU with vCPU 0's CPUID. The
//! arithmetic is `squib-arch`'s; the hypervisor only reports tables and reads MSRs.

use squib_arch::{
    CpuidConfig, normalize_cpuid,
    template::{
        BitFilter, CpuTemplate, CpuidModifier, CpuidReg, HostCpu, MsrModifier, StaticTemplate,
        TemplateError, apply_cpuid_template, apply_msr_template, static_template,
        static_template_warning,
    },
};
use squib_config::schemas::{
    cpu_config::{CpuConfig, CpuidRegister, KvmCapability},
    machine_config::CpuTemplate as StaticName,
};
use squib_config::vm_config::VmConfig;
use squib_hv::{CapabilityModifier, CpuidEntry, HypervisorX86, MsrEntry};

use crate::error::StartMicrovmError;

/// The low 64 bits of a bitmap half (x86 bitmaps are at most 64 bits wide).
fn low64(v: u128) -> u64 {
    u64::try_from(v & u128::from(u64::MAX)).unwrap_or(u64::MAX)
}

/// A custom template (`PUT /cpu-config`) as template data.
pub fn from_cpu_config(cfg: &CpuConfig) -> CpuTemplate {
    CpuTemplate {
        capabilities: cfg
            .kvm_capabilities
            .iter()
            .map(|c| match *c {
                KvmCapability::Add(n) => CapabilityModifier::Add(n),
                KvmCapability::Remove(n) => CapabilityModifier::Remove(n),
            })
            .collect(),
        cpuid: cfg
            .cpuid_modifiers
            .iter()
            .map(|m| CpuidModifier {
                leaf: m.leaf,
                subleaf: m.subleaf,
                flags: m.flags,
                registers: m
                    .modifiers
                    .iter()
                    .map(|r| {
                        let reg = match r.register {
                            CpuidRegister::Eax => CpuidReg::Eax,
                            CpuidRegister::Ebx => CpuidReg::Ebx,
                            CpuidRegister::Ecx => CpuidReg::Ecx,
                            CpuidRegister::Edx => CpuidReg::Edx,
                        };
                        let bits = BitFilter::new(low64(r.bitmap.filter), low64(r.bitmap.value));
                        (reg, bits)
                    })
                    .collect(),
            })
            .collect(),
        msrs: cfg
            .msr_modifiers
            .iter()
            .map(|m| MsrModifier {
                // The parser bounds MSR addresses to 32 bits.
                index: u32::try_from(m.addr).unwrap_or(u32::MAX),
                bits: BitFilter::new(low64(m.bitmap.filter), low64(m.bitmap.value)),
            })
            .collect(),
    }
}

/// The template this boot uses (an empty one when none is configured). `supported` is the
/// hypervisor's CPUID table, which describes the host CPU for the static templates' checks.
pub fn resolve(
    config: &VmConfig,
    supported: &[CpuidEntry],
) -> Result<CpuTemplate, StartMicrovmError> {
    if let Some(custom) = &config.cpu_config {
        return Ok(from_cpu_config(custom));
    }
    let name = match config.machine_config.cpu_template {
        None | Some(StaticName::None) => return Ok(CpuTemplate::default()),
        Some(name) => name,
    };
    let host = HostCpu::from_cpuid(supported)?;
    let template = match name {
        StaticName::C3 => StaticTemplate::C3,
        StaticName::T2 => StaticTemplate::T2,
        StaticName::T2S => StaticTemplate::T2S,
        StaticName::T2CL => StaticTemplate::T2CL,
        StaticName::T2A => StaticTemplate::T2A,
        // Refused at admission on x86_64; an ARM template on an x86 CPU is a vendor mismatch.
        StaticName::V1N1 | StaticName::None => return Err(TemplateError::VendorMismatch.into()),
    };
    let resolved = static_template(template, &host)?;
    if let Some(warning) = static_template_warning(template, &host) {
        tracing::warn!("{warning}");
    }
    Ok(resolved)
}

/// What every vCPU of a boot shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCpu {
    /// The supported CPUID with the template applied (normalised per vCPU later).
    pub cpuid: Vec<CpuidEntry>,
    /// The template's MSRs with their values (added to every vCPU's boot MSRs).
    pub msrs: Vec<MsrEntry>,
}

impl GuestCpu {
    /// Applies `template` to `supported`; reads and filters the template's MSRs on a fresh vCPU
    /// with the CPUID vCPU 0 will have (`vcpu0`), as Firecracker reads them from vCPU 0.
    pub fn prepare(
        x86: &dyn HypervisorX86,
        supported: &[CpuidEntry],
        template: &CpuTemplate,
        vcpu0: &CpuidConfig,
    ) -> Result<Self, StartMicrovmError> {
        let cpuid = apply_cpuid_template(supported, template)?;
        let msrs = if template.msrs.is_empty() {
            Vec::new()
        } else {
            let cpuid0 = normalize_cpuid(&cpuid, vcpu0).map_err(StartMicrovmError::Configure)?;
            let current = x86.probe_msrs(&cpuid0, &template.msr_indices())?;
            apply_msr_template(&current, template)?
        };
        Ok(Self { cpuid, msrs })
    }
}

#[cfg(test)]
mod tests {
    use squib_config::schemas::machine_config::{MachineConfigUpdate, RawMachineConfigUpdate};
    use squib_core::GuestArch;

    use super::*;

    fn intel(signature: u32) -> Vec<CpuidEntry> {
        let w = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        vec![
            CpuidEntry {
                function: 0,
                ebx: w(b"Genu"),
                edx: w(b"ineI"),
                ecx: w(b"ntel"),
                ..CpuidEntry::default()
            },
            CpuidEntry {
                function: 1,
                eax: signature,
                ..CpuidEntry::default()
            },
        ]
    }

    fn with_static(name: &str) -> VmConfig {
        let mut cfg = VmConfig::default();
        let raw: RawMachineConfigUpdate =
            serde_json::from_value(serde_json::json!({ "cpu_template": name })).unwrap();
        let upd = MachineConfigUpdate::try_from(raw).unwrap();
        cfg.apply(&squib_config::ApiAction::PatchMachineConfig(upd))
            .unwrap();
        cfg
    }

    #[test]
    fn test_should_convert_custom_templates_bit_for_bit() {
        let cfg = CpuConfig::from_json(
            br#"{"kvm_capabilities":["!56","9999"],
                 "cpuid_modifiers":[{"leaf":"0x6","subleaf":"0x0","flags":1,
                   "modifiers":[{"register":"edx","bitmap":"0b1x0"}]}],
                 "msr_modifiers":[{"addr":"0x277","bitmap":"0b00000101xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}"#,
            GuestArch::X86_64,
        )
        .unwrap();
        let t = from_cpu_config(&cfg);
        assert_eq!(
            t.capabilities,
            vec![
                CapabilityModifier::Remove(56),
                CapabilityModifier::Add(9999)
            ]
        );
        assert_eq!(
            t.cpuid,
            vec![CpuidModifier {
                leaf: 6,
                subleaf: 0,
                flags: 1,
                registers: vec![(CpuidReg::Edx, BitFilter::new(0b101, 0b100))],
            }]
        );
        assert_eq!(
            t.msrs,
            vec![MsrModifier {
                index: 0x277,
                bits: BitFilter::new(0xff00_0000_0000_0000, 0x0500_0000_0000_0000),
            }]
        );
    }

    #[test]
    fn test_should_resolve_the_template_slot() {
        let host = intel(squib_arch::template::CASCADE_LAKE);
        assert_eq!(
            resolve(&VmConfig::default(), &host).unwrap(),
            CpuTemplate::default()
        );
        assert_eq!(
            resolve(&with_static("T2"), &host).unwrap(),
            StaticTemplate::T2.template()
        );
        assert_eq!(
            resolve(&with_static("None"), &host).unwrap(),
            CpuTemplate::default()
        );
        // Vendor and model checks with Firecracker's texts.
        assert_eq!(
            resolve(&with_static("T2A"), &host).unwrap_err().to_string(),
            "Failed to get CPU template: CPU vendor mismatched between actual CPU and CPU template."
        );
        assert_eq!(
            resolve(&with_static("T2"), &intel(0x000c_06f2))
                .unwrap_err()
                .to_string(),
            "Failed to get CPU template: The current CPU model is not permitted to apply the CPU template."
        );
        // A custom template set after the static one replaces it.
        let mut cfg = with_static("T2");
        cfg.apply(&squib_config::ApiAction::PutCpuConfig(CpuConfig::default()))
            .unwrap();
        assert_eq!(
            resolve(&cfg, &intel(0x000c_06f2)).unwrap(),
            CpuTemplate::default()
        );
    }
}
