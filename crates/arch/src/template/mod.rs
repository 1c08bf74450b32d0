//! CPU templates: bit filters over the neutral CPUID and MSR lists, as Firecracker applies them.
//!
//! A [`CpuTemplate`] is plain data: per CPUID leaf/subleaf, per register, a [`BitFilter`]
//! (bits to force, and their values); per MSR, a 64-bit filter; plus the hypervisor
//! capabilities to require or drop. Custom templates come from `PUT /cpu-config` (the VMM
//! converts `squib-config`'s `CpuConfig`); static ones ([`StaticTemplate`]: Firecracker's
//! `C3`, `T2`, `T2S`, `T2CL`, `T2A`) are tables in `x86_static.rs`, refused on the wrong CPU
//! vendor or model ([`static_template`]).
//!
//! The pipeline (Firecracker's `configure_vcpus_for_boot`):
//!
//! 1. [`apply_cpuid_template`] on the hypervisor's supported table, once: every modified
//!    leaf/subleaf must exist; its flags are replaced; each register filter is applied in order.
//! 2. [`crate::cpuid::normalize_cpuid`] per vCPU (topology, APIC ids, ... win over the template).
//! 3. MSRs: the template's MSRs are read from a fresh vCPU that has vCPU 0's CPUID (the backend's
//!    `HypervisorX86::probe_msrs`), [`apply_msr_template`] filters them, and
//!    [`with_template_msrs`] adds them to the boot MSRs (which win on a conflict). Every vCPU gets
//!    the same values.
//!
//! [`BitFilter::apply`] is the one bit-modification primitive: templates and normalisation
//! both use it. No hypervisor types; HVF would get the same neutral lists.

mod x86_static;

use std::collections::BTreeMap;

use squib_hv::{CapabilityModifier, CpuidEntry, MsrEntry};

/// Bits to force (`filter`) and their values (`value`, always within `filter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BitFilter {
    filter: u64,
    value: u64,
}

impl BitFilter {
    /// A filter forcing the bits of `filter` to the matching bits of `value`.
    pub const fn new(filter: u64, value: u64) -> Self {
        Self {
            filter,
            value: value & filter,
        }
    }

    /// Forces the bits of `mask` to 1.
    pub const fn set(mask: u64) -> Self {
        Self::new(mask, mask)
    }

    /// Forces the bits of `mask` to 0.
    pub const fn clear(mask: u64) -> Self {
        Self::new(mask, 0)
    }

    /// The forced bits.
    pub const fn filter(self) -> u64 {
        self.filter
    }

    /// Their values.
    pub const fn value(self) -> u64 {
        self.value
    }

    /// `current` with the forced bits replaced.
    pub const fn apply(self, current: u64) -> u64 {
        (current & !self.filter) | self.value
    }

    /// [`BitFilter::apply`] on a 32-bit register (filters wider than 32 bits are truncated).
    pub fn apply32(self, current: u32) -> u32 {
        // Truncation intended: a CPUID register has 32 bits.
        #[allow(clippy::cast_possible_truncation)]
        let out = self.apply(u64::from(current)) as u32;
        out
    }
}

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuidReg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl CpuidReg {
    /// The register's value in `entry`.
    pub fn get(self, entry: &CpuidEntry) -> u32 {
        match self {
            Self::Eax => entry.eax,
            Self::Ebx => entry.ebx,
            Self::Ecx => entry.ecx,
            Self::Edx => entry.edx,
        }
    }

    /// The register in `entry`.
    pub fn get_mut(self, entry: &mut CpuidEntry) -> &mut u32 {
        match self {
            Self::Eax => &mut entry.eax,
            Self::Ebx => &mut entry.ebx,
            Self::Ecx => &mut entry.ecx,
            Self::Edx => &mut entry.edx,
        }
    }
}

/// Applies `bits` to register `reg` of `entry`.
pub fn modify_register(entry: &mut CpuidEntry, reg: CpuidReg, bits: BitFilter) {
    let r = reg.get_mut(entry);
    *r = bits.apply32(*r);
}

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`, the only CPUID entry flag the neutral entry carries.
pub const CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// Modifiers of one CPUID leaf/subleaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidModifier {
    /// Leaf (`EAX` input).
    pub leaf: u32,
    /// Subleaf (`ECX` input).
    pub subleaf: u32,
    /// Entry flags that replace the entry's (bit 0: the subleaf is significant; the obsolete
    /// stateful-function bits have no neutral representation and are ignored).
    pub flags: u32,
    /// Register filters, applied in order.
    pub registers: Vec<(CpuidReg, BitFilter)>,
}

/// Modifier of one MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrModifier {
    /// MSR index.
    pub index: u32,
    /// The filter.
    pub bits: BitFilter,
}

/// A CPU template (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTemplate {
    /// Hypervisor capabilities to require or drop from the backend's default set.
    pub capabilities: Vec<CapabilityModifier>,
    /// CPUID modifiers.
    pub cpuid: Vec<CpuidModifier>,
    /// MSR modifiers.
    pub msrs: Vec<MsrModifier>,
}

impl CpuTemplate {
    /// The MSR indices the template modifies, in template order (duplicates kept).
    pub fn msr_indices(&self) -> Vec<u32> {
        self.msrs.iter().map(|m| m.index).collect()
    }
}

/// Why a template cannot be resolved or applied. `Display` is the text after Firecracker's
/// `Start microvm error: ` (category included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The hypervisor's CPUID has no vendor leaf.
    #[error("Failed to get CPU template: Failed to get CPU vendor information: Invalid leaf: 0")]
    NoVendor,
    /// A static template of the other CPU vendor.
    #[error(
        "Failed to get CPU template: CPU vendor mismatched between actual CPU and CPU template."
    )]
    VendorMismatch,
    /// A static template this CPU model may not use.
    #[error(
        "Failed to get CPU template: The current CPU model is not permitted to apply the CPU template."
    )]
    InvalidCpuModel,
    /// A CPUID modifier names a leaf/subleaf the hypervisor does not offer.
    #[error(
        "System configuration error: Failed to create guest config: Template changes a CPUID entry not supported by KVM: Leaf: {leaf:x}, Subleaf: {subleaf:x}"
    )]
    CpuidNotSupported {
        /// Leaf.
        leaf: u32,
        /// Subleaf.
        subleaf: u32,
    },
    /// An MSR modifier names an MSR the vCPU cannot read.
    #[error(
        "System configuration error: Failed to create guest config: KVM vcpu ioctl failed: Failed to get KVM vcpu msr: {0:#x}"
    )]
    MsrNotReadable(u32),
}

/// Step 1: `supported` with the template's CPUID modifiers applied.
pub fn apply_cpuid_template(
    supported: &[CpuidEntry],
    template: &CpuTemplate,
) -> Result<Vec<CpuidEntry>, TemplateError> {
    let mut out = supported.to_vec();
    for m in &template.cpuid {
        let entry = out
            .iter_mut()
            .find(|e| e.function == m.leaf && e.index == m.subleaf)
            .ok_or(TemplateError::CpuidNotSupported {
                leaf: m.leaf,
                subleaf: m.subleaf,
            })?;
        entry.significant_index = m.flags & CPUID_FLAG_SIGNIFICANT_INDEX != 0;
        for &(reg, bits) in &m.registers {
            modify_register(entry, reg, bits);
        }
    }
    Ok(out)
}

/// Step 3: the template's MSRs with their filters applied to `current` (the values read from
/// the vCPU), sorted by index. Every template MSR must be in `current`.
pub fn apply_msr_template(
    current: &[MsrEntry],
    template: &CpuTemplate,
) -> Result<Vec<MsrEntry>, TemplateError> {
    let mut values = BTreeMap::new();
    for m in &template.msrs {
        let value = match values.get(&m.index) {
            Some(&v) => v,
            None => {
                current
                    .iter()
                    .find(|c| c.index == m.index)
                    .ok_or(TemplateError::MsrNotReadable(m.index))?
                    .value
            }
        };
        values.insert(m.index, m.bits.apply(value));
    }
    Ok(values
        .into_iter()
        .map(|(index, value)| MsrEntry { index, value })
        .collect())
}

/// The boot MSRs followed by the template MSRs they do not already set (boot values win, as
/// in Firecracker).
pub fn with_template_msrs(mut boot: Vec<MsrEntry>, template_msrs: &[MsrEntry]) -> Vec<MsrEntry> {
    for m in template_msrs {
        if !boot.iter().any(|b| b.index == m.index) {
            boot.push(*m);
        }
    }
    boot
}

/// Firecracker's static x86_64 templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticTemplate {
    /// Intel C3.
    C3,
    /// Intel T2.
    T2,
    /// Intel T2S.
    T2S,
    /// Intel T2CL.
    T2CL,
    /// AMD T2A.
    T2A,
}

/// `GenuineIntel`.
pub const VENDOR_INTEL: [u8; 12] = *b"GenuineIntel";
/// `AuthenticAMD`.
pub const VENDOR_AMD: [u8; 12] = *b"AuthenticAMD";

/// Leaf 0x1 EAX bits that make up Firecracker's `CpuModel` (family, model, stepping and their
/// extensions; not the processor type or reserved bits).
const SIGNATURE_MASK: u32 = 0x0fff_0fff;
/// Skylake (family 6, model 0x55, stepping 4).
pub const SKYLAKE: u32 = 0x0005_0654;
/// Cascade Lake (family 6, model 0x55, stepping 7).
pub const CASCADE_LAKE: u32 = 0x0005_0657;
/// Ice Lake (family 6, model 0x6a, stepping 6).
pub const ICE_LAKE: u32 = 0x0006_06a6;
/// Milan (family 0x19, model 1, stepping 1).
pub const MILAN: u32 = 0x00a0_0f11;

/// The host CPU as the hypervisor's CPUID table describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCpu {
    /// Vendor string (leaf 0 EBX, EDX, ECX).
    pub vendor: [u8; 12],
    /// Leaf 0x1 EAX (family/model/stepping).
    pub signature: u32,
}

impl HostCpu {
    /// Reads the vendor and signature from a CPUID table (the hypervisor reports the host's).
    pub fn from_cpuid(entries: &[CpuidEntry]) -> Result<Self, TemplateError> {
        let leaf = |f: u32| entries.iter().find(|e| e.function == f && e.index == 0);
        let l0 = leaf(0).ok_or(TemplateError::NoVendor)?;
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&l0.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&l0.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&l0.ecx.to_le_bytes());
        Ok(Self {
            vendor,
            signature: leaf(1).map_or(0, |e| e.eax),
        })
    }
}

impl StaticTemplate {
    /// The vendor this template is for.
    pub fn vendor(self) -> [u8; 12] {
        match self {
            Self::C3 | Self::T2 | Self::T2S | Self::T2CL => VENDOR_INTEL,
            Self::T2A => VENDOR_AMD,
        }
    }

    /// The CPU signatures (leaf 1 EAX, masked) this template may be used on.
    pub fn models(self) -> &'static [u32] {
        match self {
            Self::C3 | Self::T2 => &[SKYLAKE, CASCADE_LAKE, ICE_LAKE],
            Self::T2S => &[SKYLAKE, CASCADE_LAKE],
            Self::T2CL => &[CASCADE_LAKE, ICE_LAKE],
            Self::T2A => &[MILAN],
        }
    }

    fn data(self) -> &'static StaticData {
        match self {
            Self::C3 => &x86_static::C3,
            Self::T2 => &x86_static::T2,
            Self::T2S => &x86_static::T2S,
            Self::T2CL => &x86_static::T2CL,
            Self::T2A => &x86_static::T2A,
        }
    }

    /// The template's modifiers, without the vendor/model check.
    pub fn template(self) -> CpuTemplate {
        let data = self.data();
        CpuTemplate {
            capabilities: Vec::new(),
            cpuid: data
                .cpuid
                .iter()
                .map(|l| CpuidModifier {
                    leaf: l.leaf,
                    subleaf: l.subleaf,
                    flags: l.flags,
                    registers: l
                        .registers
                        .iter()
                        .map(|&(reg, filter, value)| {
                            (reg, BitFilter::new(u64::from(filter), u64::from(value)))
                        })
                        .collect(),
                })
                .collect(),
            msrs: data
                .msrs
                .iter()
                .map(|&(index, filter, value)| MsrModifier {
                    index,
                    bits: BitFilter::new(filter, value),
                })
                .collect(),
        }
    }
}

/// A static template for `host`: Firecracker's vendor check, then its CPU-model check.
pub fn static_template(t: StaticTemplate, host: &HostCpu) -> Result<CpuTemplate, TemplateError> {
    if host.vendor != t.vendor() {
        return Err(TemplateError::VendorMismatch);
    }
    if !t.models().contains(&(host.signature & SIGNATURE_MASK)) {
        return Err(TemplateError::InvalidCpuModel);
    }
    Ok(t.template())
}

/// Firecracker's warning for `C3` on Skylake (logged by the caller), if it applies.
pub fn static_template_warning(t: StaticTemplate, host: &HostCpu) -> Option<&'static str> {
    (t == StaticTemplate::C3 && host.signature & SIGNATURE_MASK == SKYLAKE).then_some(
        "On processors that do not enumerate FBSDP_NO, PSDP_NO and SBDR_SSDP_NO on \
         IA32_ARCH_CAPABILITIES MSR, the guest kernel does not apply the mitigation against \
         MMIO stale data vulnerability.",
    )
}

/// One static CPUID leaf modifier.
struct LeafBits {
    leaf: u32,
    subleaf: u32,
    flags: u32,
    registers: &'static [(CpuidReg, u32, u32)],
}

/// One static template.
struct StaticData {
    cpuid: &'static [LeafBits],
    msrs: &'static [(u32, u64, u64)],
}

#[cfg(test)]
mod tests;
