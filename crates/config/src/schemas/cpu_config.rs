//! `PUT /cpu-config` body: a custom CPU template (`CpuConfig` in the swagger).
//!
//! Numbers arrive as strings: `"0x.."` hex, `"0b.."` binary, otherwise decimal (Firecracker's
//! `deserialize_*_from_str`). Bitmaps are `"0b"` followed by up to 32 (CPUID, vCPU features),
//! 64 (MSR) or 128 (ARM registers) characters of `0`, `1` or `x` (don't care); underscores are
//! allowed as separators (Firecracker strips them). Shorter bitmaps cover the low bits, as in
//! Firecracker. `kvm_capabilities` entries are decimal numbers, optionally prefixed with `!`
//! (remove instead of add).
//!
//! The validated [`CpuConfig`] holds parsed values and serializes back to the same string
//! forms (hex numbers, full-width bitmaps).

use serde::{Deserialize, Serialize, Serializer};

use super::limits::check_list_len;

/// Raw CPUID register modifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCpuidRegisterModifier {
    /// `eax`, `ebx`, `ecx` or `edx`.
    pub register: String,
    /// 32-bit bitmap string.
    pub bitmap: String,
}

/// Raw CPUID leaf modifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCpuidLeafModifier {
    /// Leaf, as a number string.
    pub leaf: String,
    /// Subleaf, as a number string.
    pub subleaf: String,
    /// KVM CPUID flags.
    pub flags: u32,
    /// Register modifiers.
    pub modifiers: Vec<RawCpuidRegisterModifier>,
}

/// Raw register modifier (MSR on x86_64, system register on aarch64).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegisterModifier {
    /// Register address, as a number string.
    pub addr: String,
    /// Bitmap string.
    pub bitmap: String,
}

/// Raw aarch64 vCPU feature modifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVcpuFeatures {
    /// Index in `kvm_vcpu_init.features`.
    pub index: u32,
    /// 32-bit bitmap string.
    pub bitmap: String,
}

/// Raw `PUT /cpu-config` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCpuConfig {
    /// KVM capabilities to add (`"121"`) or remove (`"!121"`).
    #[serde(default)]
    pub kvm_capabilities: Vec<String>,
    /// CPUID modifiers (x86_64).
    #[serde(default)]
    pub cpuid_modifiers: Vec<RawCpuidLeafModifier>,
    /// MSR modifiers (x86_64).
    #[serde(default)]
    pub msr_modifiers: Vec<RawRegisterModifier>,
    /// Register modifiers (aarch64).
    #[serde(default)]
    pub reg_modifiers: Vec<RawRegisterModifier>,
    /// vCPU feature modifiers (aarch64).
    #[serde(default)]
    pub vcpu_features: Vec<RawVcpuFeatures>,
}

/// A bit filter: bits set in `filter` are forced to the matching bit of `value`; the others are
/// left alone (`x`).
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
    fn parse(field: &str, s: &str, width: u32) -> Result<Self, String> {
        let fail =
            |why: &str| format!("Invalid {field}: failed to parse string [{s}] as a bitmap: {why}");
        let body = s
            .strip_prefix("0b")
            .ok_or_else(|| fail("missing 0b prefix"))?;
        let mut bits = 0u32;
        let (mut filter, mut value) = (0u128, 0u128);
        for c in body.chars() {
            let (f, v) = match c {
                '_' => continue,
                '0' => (1, 0),
                '1' => (1, 1),
                'x' => (0, 0),
                _ => return Err(fail("only 0, 1, x and _ are allowed")),
            };
            bits += 1;
            if bits > width {
                return Err(fail(&format!("more than {width} bits")));
            }
            filter = (filter << 1) | f;
            value = (value << 1) | v;
        }
        if bits == 0 {
            return Err(fail("no bits"));
        }
        Ok(Self {
            width,
            filter,
            value,
        })
    }

    /// Apply to a register value.
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

fn parse_number(field: &str, s: &str) -> Result<u64, String> {
    let digits: String = s.chars().filter(|&c| c != '_').collect();
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else if let Some(bin) = digits.strip_prefix("0b") {
        u64::from_str_radix(bin, 2)
    } else {
        digits.parse::<u64>()
    };
    parsed.map_err(|e| format!("Invalid {field}: failed to parse string [{s}] as a number: {e}"))
}

fn parse_u32(field: &str, s: &str) -> Result<u32, String> {
    let n = parse_number(field, s)?;
    u32::try_from(n).map_err(|_| format!("Invalid {field}: [{s}] does not fit in 32 bits"))
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

/// Validated CPUID register modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CpuidRegisterModifier {
    /// The register.
    pub register: CpuidRegister,
    /// 32-bit filter.
    pub bitmap: Bitmap,
}

/// Validated CPUID leaf modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CpuidLeafModifier {
    /// Leaf.
    #[serde(serialize_with = "hex")]
    pub leaf: u32,
    /// Subleaf.
    #[serde(serialize_with = "hex")]
    pub subleaf: u32,
    /// KVM CPUID flags.
    pub flags: u32,
    /// Register modifiers.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// Validated register modifier (MSR: 32-bit address, 64-bit bitmap; aarch64: 64-bit address,
/// 128-bit bitmap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RegisterModifier {
    /// Register address.
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    /// Filter.
    pub bitmap: Bitmap,
}

/// Validated vCPU feature modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VcpuFeatures {
    /// Index in `kvm_vcpu_init.features`.
    pub index: u32,
    /// 32-bit filter.
    pub bitmap: Bitmap,
}

/// A KVM capability to add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmCapability {
    /// Require this capability.
    Add(u32),
    /// Drop this capability from the default set.
    Remove(u32),
}

impl Serialize for KvmCapability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Add(n) => serializer.serialize_str(&n.to_string()),
            Self::Remove(n) => serializer.serialize_str(&format!("!{n}")),
        }
    }
}

/// Validated custom CPU template.
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

fn parse_capability(s: &str) -> Result<KvmCapability, String> {
    let (remove, digits) = match s.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let n = digits.parse::<u32>().map_err(|e| {
        format!("Invalid kvm_capabilities: failed to parse string [{s}] as a capability: {e}")
    })?;
    Ok(if remove {
        KvmCapability::Remove(n)
    } else {
        KvmCapability::Add(n)
    })
}

fn parse_register(s: &str) -> Result<CpuidRegister, String> {
    match s {
        "eax" => Ok(CpuidRegister::Eax),
        "ebx" => Ok(CpuidRegister::Ebx),
        "ecx" => Ok(CpuidRegister::Ecx),
        "edx" => Ok(CpuidRegister::Edx),
        _ => Err("Invalid CPUID register. Must be one of [eax, ebx, ecx, edx]".to_owned()),
    }
}

fn convert_leaf(raw: RawCpuidLeafModifier) -> Result<CpuidLeafModifier, String> {
    check_list_len("cpuid_modifiers.modifiers", raw.modifiers.len())?;
    let modifiers = raw
        .modifiers
        .into_iter()
        .map(|m| {
            Ok(CpuidRegisterModifier {
                register: parse_register(&m.register)?,
                bitmap: Bitmap::parse("cpuid bitmap", &m.bitmap, 32)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CpuidLeafModifier {
        leaf: parse_u32("leaf", &raw.leaf)?,
        subleaf: parse_u32("subleaf", &raw.subleaf)?,
        flags: raw.flags,
        modifiers,
    })
}

impl TryFrom<RawCpuConfig> for CpuConfig {
    type Error = String;

    fn try_from(raw: RawCpuConfig) -> Result<Self, Self::Error> {
        check_list_len("kvm_capabilities", raw.kvm_capabilities.len())?;
        check_list_len("cpuid_modifiers", raw.cpuid_modifiers.len())?;
        check_list_len("msr_modifiers", raw.msr_modifiers.len())?;
        check_list_len("reg_modifiers", raw.reg_modifiers.len())?;
        check_list_len("vcpu_features", raw.vcpu_features.len())?;
        let kvm_capabilities = raw
            .kvm_capabilities
            .iter()
            .map(|s| parse_capability(s))
            .collect::<Result<_, _>>()?;
        let cpuid_modifiers = raw
            .cpuid_modifiers
            .into_iter()
            .map(convert_leaf)
            .collect::<Result<_, _>>()?;
        let msr_modifiers = raw
            .msr_modifiers
            .into_iter()
            .map(|m| {
                Ok(RegisterModifier {
                    addr: u64::from(parse_u32("msr addr", &m.addr)?),
                    bitmap: Bitmap::parse("msr bitmap", &m.bitmap, 64)?,
                })
            })
            .collect::<Result<_, String>>()?;
        let reg_modifiers = raw
            .reg_modifiers
            .into_iter()
            .map(|m| {
                Ok(RegisterModifier {
                    addr: parse_number("reg addr", &m.addr)?,
                    bitmap: Bitmap::parse("reg bitmap", &m.bitmap, 128)?,
                })
            })
            .collect::<Result<_, String>>()?;
        let vcpu_features = raw
            .vcpu_features
            .into_iter()
            .map(|f| {
                Ok(VcpuFeatures {
                    index: f.index,
                    bitmap: Bitmap::parse("vcpu_features bitmap", &f.bitmap, 32)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            kvm_capabilities,
            cpuid_modifiers,
            msr_modifiers,
            reg_modifiers,
            vcpu_features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CpuConfig, String> {
        let raw: RawCpuConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        CpuConfig::try_from(raw)
    }

    #[test]
    fn test_should_accept_empty_template() {
        assert_eq!(parse("{}").unwrap(), CpuConfig::default());
    }

    #[test]
    fn test_should_parse_x86_template() {
        let cfg = parse(
            r#"{"kvm_capabilities":["121","!55"],
                "cpuid_modifiers":[{"leaf":"0x80000001","subleaf":"0b0","flags":1,
                  "modifiers":[{"register":"ecx","bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx01"}]}],
                "msr_modifiers":[{"addr":"266","bitmap":"0b0000_0001"}]}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.kvm_capabilities,
            vec![KvmCapability::Add(121), KvmCapability::Remove(55)]
        );
        let leaf = &cfg.cpuid_modifiers[0];
        assert_eq!((leaf.leaf, leaf.subleaf, leaf.flags), (0x8000_0001, 0, 1));
        assert_eq!(leaf.modifiers[0].register, CpuidRegister::Ecx);
        assert_eq!(leaf.modifiers[0].bitmap.filter, 0b11);
        assert_eq!(leaf.modifiers[0].bitmap.value, 0b01);
        assert_eq!(leaf.modifiers[0].bitmap.apply(0b1110), 0b1101);
        assert_eq!(cfg.msr_modifiers[0].addr, 0x10a);
        assert_eq!(cfg.msr_modifiers[0].bitmap.filter, 0xff);
    }

    #[test]
    fn test_should_parse_arm_template() {
        let cfg = parse(
            r#"{"reg_modifiers":[{"addr":"0x603000000013c020","bitmap":"0bx1"}],
                "vcpu_features":[{"index":0,"bitmap":"0b1100000"}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.reg_modifiers[0].addr, 0x6030_0000_0013_c020);
        assert_eq!(cfg.vcpu_features[0].bitmap.value, 0b110_0000);
    }

    #[test]
    fn test_should_reject_malformed_values() {
        let bad_reg = r#"{"cpuid_modifiers":[{"leaf":"0","subleaf":"0","flags":0,
            "modifiers":[{"register":"ekx","bitmap":"0b1"}]}]}"#;
        assert_eq!(
            parse(bad_reg).unwrap_err(),
            "Invalid CPUID register. Must be one of [eax, ebx, ecx, edx]"
        );
        let bad_leaf =
            r#"{"cpuid_modifiers":[{"leaf":"k","subleaf":"0","flags":0,"modifiers":[]}]}"#;
        assert!(
            parse(bad_leaf)
                .unwrap_err()
                .starts_with("Invalid leaf: failed to parse string [k]")
        );
        let bad_bits = r#"{"msr_modifiers":[{"addr":"1","bitmap":"0bx0?1"}]}"#;
        assert!(parse(bad_bits).unwrap_err().contains("as a bitmap"));
        let no_prefix = r#"{"msr_modifiers":[{"addr":"1","bitmap":"0101"}]}"#;
        assert!(parse(no_prefix).unwrap_err().contains("missing 0b prefix"));
        let too_wide = format!(
            r#"{{"vcpu_features":[{{"index":0,"bitmap":"0b{}"}}]}}"#,
            "1".repeat(33)
        );
        assert!(parse(&too_wide).unwrap_err().contains("more than 32 bits"));
        assert!(
            parse(r#"{"kvm_capabilities":["!x"]}"#)
                .unwrap_err()
                .contains("[!x]")
        );
        assert!(
            parse(r#"{"msr_modifiers":[{"addr":"0x100000000","bitmap":"0b1"}]}"#)
                .unwrap_err()
                .contains("does not fit in 32 bits")
        );
        assert!(
            parse(r#"{"bogus":[]}"#)
                .unwrap_err()
                .starts_with("unknown field `bogus`")
        );
    }

    #[test]
    fn test_should_bound_lists() {
        let caps = vec!["1"; 257];
        let json = serde_json::json!({ "kvm_capabilities": caps }).to_string();
        assert_eq!(
            parse(&json).unwrap_err(),
            "Invalid kvm_capabilities: exceeds 256 entries (got 257)"
        );
    }

    #[test]
    fn test_should_serialize_back_to_string_forms() {
        let cfg = parse(
            r#"{"kvm_capabilities":["!7"],"cpuid_modifiers":[{"leaf":"1","subleaf":"0x2","flags":0,
                "modifiers":[{"register":"eax","bitmap":"0b10x"}]}]}"#,
        )
        .unwrap();
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(v["kvm_capabilities"][0], "!7");
        assert_eq!(v["cpuid_modifiers"][0]["leaf"], "0x1");
        assert_eq!(v["cpuid_modifiers"][0]["subleaf"], "0x2");
        let bitmap = v["cpuid_modifiers"][0]["modifiers"][0]["bitmap"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(bitmap.len(), 34);
        assert!(bitmap.ends_with("10x"));
        assert_eq!(v["cpuid_modifiers"][0]["modifiers"][0]["register"], "eax");
    }
}
