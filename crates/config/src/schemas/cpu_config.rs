//! `PUT /cpu-config` body and the `cpu-config` config-file member: a custom CPU template
//! (`CpuConfig` in the swagger), with Firecracker 1.17's JSON rules and error texts.
//!
//! Unlike the other schemas, the validated types deserialize directly (no `Raw*` → `TryFrom`
//! step): Firecracker validates these values inside serde, so its messages carry serde's
//! ` at line L column C` suffix, and so do ours.
//!
//! - The top level depends on the guest architecture, as Firecracker's does (it is a different
//!   type per `target_arch`): x86_64 takes `kvm_capabilities`, `cpuid_modifiers`,
//!   `msr_modifiers`; aarch64 takes `kvm_capabilities`, `vcpu_features`, `reg_modifiers`. Any
//!   other top-level key is an unknown field. Nested objects accept (and ignore) unknown keys,
//!   as in Firecracker. See [`CpuConfig::from_json`].
//! - Numbers (`leaf`, `subleaf`, `addr`) are strings with a mandatory `0x` (hex) or `0b`
//!   (binary) prefix; `flags` and `index` are JSON integers.
//! - Bitmaps are strings of `0`, `1`, `x` (leave alone) and `_` (ignored), with an optional `0b`
//!   prefix, read from the right: at most 32 bits (CPUID, vCPU features), 64 (MSR) or 128
//!   (aarch64 registers); a shorter bitmap covers the low bits.
//! - `kvm_capabilities` entries are decimal numbers, `!`-prefixed to remove a capability from
//!   the default set instead of adding one.
//!
//! Lists are bounded by [`MAX_LIST_ENTRIES`] (the HTTP payload limit bounds them anyway). The
//! validated [`CpuConfig`] serializes back to the same string forms (hex numbers, full-width
//! bitmaps). It is architecture-neutral data; `squib-arch` applies it.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use squib_core::GuestArch;

use super::limits::{MAX_LIST_ENTRIES, check_list_len};

/// Prefix-less number (Firecracker's text, before serde's position suffix).
fn no_prefix(s: &str) -> String {
    format!(
        "No supported number system prefix found in value [{s}]. Make sure to prefix the number \
         with '0x' for hexadecimal numbers or '0b' for binary numbers."
    )
}

macro_rules! template_number {
    ($name:ident, $ty:ty) => {
        /// Parses a template number: `0x` hex or `0b` binary (Firecracker's rules and texts).
        pub fn $name(s: &str) -> Result<$ty, String> {
            let parsed = if let Some(bin) = s.strip_prefix("0b") {
                <$ty>::from_str_radix(bin, 2)
            } else if let Some(hex) = s.strip_prefix("0x") {
                <$ty>::from_str_radix(hex, 16)
            } else {
                return Err(no_prefix(s));
            };
            parsed.map_err(|e| {
                format!("Failed to parse string [{s}] as a number for CPU template - {e:?}")
            })
        }
    };
}

template_number!(parse_template_u32, u32);
template_number!(parse_template_u64, u64);

/// A bit filter: bits set in `filter` are forced to the matching bit of `value`; the others are
/// left alone (`x`). `value` never has bits outside `filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bitmap {
    /// Width in bits (32, 64 or 128); controls the serialized length.
    pub width: u32,
    /// Bits to modify.
    pub filter: u128,
    /// Values of the modified bits.
    pub value: u128,
}

impl Bitmap {
    /// A bitmap from its parts (`value` is masked by `filter`, both by `width`).
    pub fn new(width: u32, filter: u128, value: u128) -> Self {
        let width = width.clamp(1, 128);
        let mask = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        Self {
            width,
            filter: filter & mask,
            value: value & filter & mask,
        }
    }

    /// Parses a bitmap string of at most `width` bits (Firecracker's rules and texts): an
    /// optional `0b` prefix, then `0`/`1`/`x`/`_` read from the right.
    pub fn parse(s: &str, width: u32) -> Result<Self, String> {
        let width = width.clamp(1, 128);
        let body = s.strip_prefix("0b").unwrap_or(s);
        let (mut filter, mut value) = (0u128, 0u128);
        let mut bit = 0u32;
        for c in body.bytes().rev() {
            // Checked before looking at the character, as Firecracker does (so a leading `_`
            // after `width` bits is "too long").
            if bit == width {
                return Err(format!(
                    "Failed to parse string [{s}] as a bitmap - string is too long"
                ));
            }
            match c {
                b'_' => continue,
                b'x' => {}
                b'0' => filter |= 1 << bit,
                b'1' => {
                    filter |= 1 << bit;
                    value |= 1 << bit;
                }
                other => {
                    return Err(format!(
                        "Failed to parse string [{s}] as a bitmap - unknown character: {other}"
                    ));
                }
            }
            bit += 1;
        }
        Ok(Self {
            width,
            filter,
            value,
        })
    }

    /// Applies the filter to a register value.
    pub fn apply(&self, current: u128) -> u128 {
        (current & !self.filter) | (self.value & self.filter)
    }
}

impl Serialize for Bitmap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(self.width as usize + 2);
        out.push_str("0b");
        for bit in (0..self.width.min(128)).rev() {
            let mask = 1u128 << bit;
            out.push(match (self.filter & mask != 0, self.value & mask != 0) {
                (false, _) => 'x',
                (true, false) => '0',
                (true, true) => '1',
            });
        }
        serializer.serialize_str(&out)
    }
}

fn de_with<'de, D, T>(d: D, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).map_err(D::Error::custom)
}

fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de_with(d, parse_template_u32)
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    de_with(d, parse_template_u64)
}

fn de_msr_addr<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    de_with(d, |s| parse_template_u32(s).map(u64::from))
}

fn de_bitmap32<'de, D: Deserializer<'de>>(d: D) -> Result<Bitmap, D::Error> {
    de_with(d, |s| Bitmap::parse(s, 32))
}

fn de_bitmap64<'de, D: Deserializer<'de>>(d: D) -> Result<Bitmap, D::Error> {
    de_with(d, |s| Bitmap::parse(s, 64))
}

fn de_bitmap128<'de, D: Deserializer<'de>>(d: D) -> Result<Bitmap, D::Error> {
    de_with(d, |s| Bitmap::parse(s, 128))
}

fn hex<S: Serializer, T: std::fmt::LowerHex>(n: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("0x{n:x}"))
}

/// A CPUID register name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuidRegister {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl CpuidRegister {
    /// Parses `eax`..`edx` (lowercase only, as Firecracker).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "eax" => Ok(Self::Eax),
            "ebx" => Ok(Self::Ebx),
            "ecx" => Ok(Self::Ecx),
            "edx" => Ok(Self::Edx),
            _ => Err("Invalid CPUID register. Must be one of [eax, ebx, ecx, edx]".to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for CpuidRegister {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_with(d, Self::parse)
    }
}

/// One CPUID register modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CpuidRegisterModifier {
    /// The register.
    pub register: CpuidRegister,
    /// 32-bit filter.
    #[serde(deserialize_with = "de_bitmap32")]
    pub bitmap: Bitmap,
}

impl CpuidRegisterModifier {
    /// A modifier for `register`.
    pub fn new(register: CpuidRegister, bitmap: Bitmap) -> Self {
        Self { register, bitmap }
    }
}

/// One CPUID leaf/subleaf modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CpuidLeafModifier {
    /// Leaf.
    #[serde(serialize_with = "hex", deserialize_with = "de_u32")]
    pub leaf: u32,
    /// Subleaf.
    #[serde(serialize_with = "hex", deserialize_with = "de_u32")]
    pub subleaf: u32,
    /// KVM CPUID entry flags (bit 0: the subleaf is significant); they replace the entry's.
    pub flags: u32,
    /// Register modifiers, applied in order.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

impl CpuidLeafModifier {
    /// A leaf modifier.
    pub fn new(leaf: u32, subleaf: u32, flags: u32, modifiers: Vec<CpuidRegisterModifier>) -> Self {
        Self {
            leaf,
            subleaf,
            flags,
            modifiers,
        }
    }
}

/// One register modifier: an MSR (32-bit address, 64-bit bitmap) on x86_64, a system register
/// (64-bit id, 128-bit bitmap) on aarch64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RegisterModifier {
    /// Register address.
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    /// Filter.
    pub bitmap: Bitmap,
}

impl RegisterModifier {
    /// A register modifier.
    pub fn new(addr: u64, bitmap: Bitmap) -> Self {
        Self { addr, bitmap }
    }
}

/// Wire form of an x86_64 MSR modifier.
#[derive(Deserialize)]
struct MsrModifierWire {
    #[serde(deserialize_with = "de_msr_addr")]
    addr: u64,
    #[serde(deserialize_with = "de_bitmap64")]
    bitmap: Bitmap,
}

/// Wire form of an aarch64 register modifier.
#[derive(Deserialize)]
struct RegModifierWire {
    #[serde(deserialize_with = "de_u64")]
    addr: u64,
    #[serde(deserialize_with = "de_bitmap128")]
    bitmap: Bitmap,
}

/// aarch64 vCPU feature modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VcpuFeatures {
    /// Index in `kvm_vcpu_init.features`.
    pub index: u32,
    /// 32-bit filter.
    #[serde(deserialize_with = "de_bitmap32")]
    pub bitmap: Bitmap,
}

/// A KVM capability to require or to drop from the default set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmCapability {
    /// Require this capability.
    Add(u32),
    /// Drop this capability from the default set.
    Remove(u32),
}

impl KvmCapability {
    /// Parses `"121"` or `"!121"` (Firecracker's text on error).
    pub fn parse(s: &str) -> Result<Self, String> {
        let fail = |e: std::num::ParseIntError| {
            format!(
                "Failed to parse string [{s}] as a kvm capability - can not convert to numeric: {e}"
            )
        };
        match s.strip_prefix('!') {
            Some(rest) => rest.parse::<u32>().map(Self::Remove).map_err(fail),
            None => s.parse::<u32>().map(Self::Add).map_err(fail),
        }
    }
}

impl Serialize for KvmCapability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Add(n) => serializer.serialize_str(&n.to_string()),
            Self::Remove(n) => serializer.serialize_str(&format!("!{n}")),
        }
    }
}

impl<'de> Deserialize<'de> for KvmCapability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_with(d, Self::parse)
    }
}

/// The x86_64 top level (Firecracker's x86_64 `CustomCpuTemplate`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct X86Template {
    #[serde(default)]
    kvm_capabilities: Vec<KvmCapability>,
    #[serde(default)]
    cpuid_modifiers: Vec<CpuidLeafModifier>,
    #[serde(default)]
    msr_modifiers: Vec<MsrModifierWire>,
}

/// The aarch64 top level (Firecracker's aarch64 `CustomCpuTemplate`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Aarch64Template {
    #[serde(default)]
    kvm_capabilities: Vec<KvmCapability>,
    #[serde(default)]
    vcpu_features: Vec<VcpuFeatures>,
    #[serde(default)]
    reg_modifiers: Vec<RegModifierWire>,
}

/// Validated custom CPU template (architecture-neutral data; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CpuConfig {
    /// KVM capabilities to add or remove.
    pub kvm_capabilities: Vec<KvmCapability>,
    /// CPUID modifiers (x86_64).
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// MSR modifiers (x86_64).
    pub msr_modifiers: Vec<RegisterModifier>,
    /// Register modifiers (aarch64).
    pub reg_modifiers: Vec<RegisterModifier>,
    /// vCPU feature modifiers (aarch64).
    pub vcpu_features: Vec<VcpuFeatures>,
}

/// `KVM_REG_SIZE_MASK` / `KVM_REG_SIZE_SHIFT` of an aarch64 register id.
const KVM_REG_SIZE_MASK: u64 = 0x00f0_0000_0000_0000;
const KVM_REG_SIZE_SHIFT: u32 = 52;

impl CpuConfig {
    /// A template with these x86_64 modifiers.
    pub fn x86(
        kvm_capabilities: Vec<KvmCapability>,
        cpuid_modifiers: Vec<CpuidLeafModifier>,
        msr_modifiers: Vec<RegisterModifier>,
    ) -> Self {
        Self {
            kvm_capabilities,
            cpuid_modifiers,
            msr_modifiers,
            ..Self::default()
        }
    }

    /// Parses a template for `arch` from JSON bytes. The error's `Display` is Firecracker's
    /// text (serde's, with its position).
    pub fn from_json(bytes: &[u8], arch: GuestArch) -> Result<Self, serde_json::Error> {
        match arch {
            GuestArch::X86_64 => Self::from_x86(serde_json::from_slice(bytes)?),
            GuestArch::Aarch64 => Self::from_aarch64(serde_json::from_slice(bytes)?),
        }
    }

    /// Parses a template for `arch` from an already parsed JSON value (an inline config-file
    /// member; serde reports no position then).
    pub fn from_value(
        value: serde_json::Value,
        arch: GuestArch,
    ) -> Result<Self, serde_json::Error> {
        match arch {
            GuestArch::X86_64 => Self::from_x86(from_value(value)?),
            GuestArch::Aarch64 => Self::from_aarch64(from_value(value)?),
        }
    }

    fn from_x86(t: X86Template) -> Result<Self, serde_json::Error> {
        let cfg = Self {
            kvm_capabilities: t.kvm_capabilities,
            cpuid_modifiers: t.cpuid_modifiers,
            msr_modifiers: t
                .msr_modifiers
                .into_iter()
                .map(|m| RegisterModifier::new(m.addr, m.bitmap))
                .collect(),
            ..Self::default()
        };
        cfg.check_bounds().map_err(serde_json::Error::custom)?;
        Ok(cfg)
    }

    fn from_aarch64(t: Aarch64Template) -> Result<Self, serde_json::Error> {
        let cfg = Self {
            kvm_capabilities: t.kvm_capabilities,
            vcpu_features: t.vcpu_features,
            reg_modifiers: t
                .reg_modifiers
                .into_iter()
                .map(|m| RegisterModifier::new(m.addr, m.bitmap))
                .collect(),
            ..Self::default()
        };
        cfg.check_bounds().map_err(serde_json::Error::custom)?;
        for m in &cfg.reg_modifiers {
            check_aarch64_register(m).map_err(serde_json::Error::custom)?;
        }
        Ok(cfg)
    }

    fn check_bounds(&self) -> Result<(), String> {
        check_list_len("kvm_capabilities", self.kvm_capabilities.len())?;
        check_list_len("cpuid_modifiers", self.cpuid_modifiers.len())?;
        for leaf in &self.cpuid_modifiers {
            check_list_len("cpuid_modifiers.modifiers", leaf.modifiers.len())?;
        }
        check_list_len("msr_modifiers", self.msr_modifiers.len())?;
        check_list_len("reg_modifiers", self.reg_modifiers.len())?;
        check_list_len("vcpu_features", self.vcpu_features.len())
    }
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(value)
}

/// Firecracker's aarch64 `validate`: the bitmap must fit the register's size.
fn check_aarch64_register(m: &RegisterModifier) -> Result<(), String> {
    let bytes = 1u32 << ((m.addr & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT);
    match bytes {
        4 | 8 => {
            let limit = (1u128 << (bytes * 8)) - 1;
            if m.bitmap.value > limit || m.bitmap.filter > limit {
                return Err(format!(
                    "Invalid size of bitmap for register {:#x}, should be <= {} bits",
                    m.addr,
                    bytes * 8
                ));
            }
            Ok(())
        }
        16 => Ok(()),
        _ => Err(format!(
            "Invalid aarch64 register address: {:#x} - Only 32, 64 and 128 bit wide registers \
             are supported",
            m.addr
        )),
    }
}

/// The most entries any template list may have.
pub const MAX_TEMPLATE_ENTRIES: usize = MAX_LIST_ENTRIES;

#[cfg(test)]
mod tests;
