//! `/machine-config` PUT and PATCH bodies (`MachineConfiguration` in the swagger).
//!
//! Rules (Firecracker 1.17):
//! - `vcpu_count` 1..=32; with `smt` it must be 1 or even (32 is accepted despite the text).
//! - `mem_size_mib` > 0 and a multiple of the page size: even for `huge_pages` `2M` and
//!   `Transparent` (both are handled in 2 MiB units).
//! - `cpu_template` is deprecated; the API edge adds `Deprecation: true`.
//!
//! Whether SMT is available on the host is a capability-profile decision made in
//! [`crate::action`], not here.

use serde::{Deserialize, Serialize};
use squib_core::{GuestArch, MAX_SUPPORTED_VCPUS};

/// Firecracker's default guest memory, MiB.
pub const DEFAULT_MEM_SIZE_MIB: usize = 128;
/// Firecracker's default vCPU count.
pub const DEFAULT_VCPU_COUNT: u8 = 1;

/// `fault_message` for an invalid vCPU count (0, > 32, or odd > 1 with SMT).
pub const INVALID_VCPU_COUNT: &str = "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.";
/// `fault_message` for an invalid memory size (0, or not a multiple of the page size).
pub const INVALID_MEMORY_SIZE: &str = "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.";
/// `fault_message` when the memory would be smaller than the balloon target.
pub const INCOMPATIBLE_BALLOON_SIZE: &str = "Machine config error: The memory size (MiB) is smaller than the previously set balloon device target size.";
/// `fault_message` for a PATCH with no field.
pub const EMPTY_PATCH: &str = "Empty PATCH request.";

/// How guest memory is backed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    #[default]
    None,
    /// Transparent huge pages (`madvise(MADV_HUGEPAGE)`).
    Transparent,
    /// Explicit 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl HugePages {
    /// `true` if `mem_size_mib` is a valid size for this backing (non-zero multiple of the page
    /// granularity: 1 MiB for `None`, 2 MiB otherwise).
    pub fn is_valid_mem_size(self, mem_size_mib: usize) -> bool {
        let divisor = match self {
            Self::None => 1,
            Self::Transparent | Self::Hugetlbfs2M => 2,
        };
        mem_size_mib != 0 && mem_size_mib.is_multiple_of(divisor)
    }
}

/// Static CPU template (deprecated in Firecracker; `None` clears a previous template).
///
/// Firecracker has a different enum per architecture: x86_64 offers `C3`, `T2`, `T2S`, `T2CL`,
/// `T2A` ([`X86CpuTemplate`]); aarch64 offers `V1N1` ([`Aarch64CpuTemplate`]). The HTTP API
/// parses the host architecture's names; the config file parses this union, and admission
/// refuses the other architecture's names ([`CpuTemplate::supported_on`],
/// [`CpuTemplate::wrong_arch_message`]). An unknown name gets Firecracker's x86_64 serde text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum CpuTemplate {
    /// Intel C3.
    C3,
    /// Intel T2.
    T2,
    /// Intel T2S.
    T2S,
    /// No template.
    #[default]
    None,
    /// Intel T2CL.
    T2CL,
    /// AMD T2A.
    T2A,
    /// ARM Neoverse V1 → N1.
    V1N1,
}

/// Firecracker's x86_64 variant list (in its declaration order, as serde prints it).
const X86_TEMPLATE_NAMES: &[&str] = &["C3", "T2", "T2S", "None", "T2CL", "T2A"];

impl CpuTemplate {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::C3 => "C3",
            Self::T2 => "T2",
            Self::T2S => "T2S",
            Self::None => "None",
            Self::T2CL => "T2CL",
            Self::T2A => "T2A",
            Self::V1N1 => "V1N1",
        }
    }

    /// Whether Firecracker offers this name on `arch`.
    pub fn supported_on(self, arch: GuestArch) -> bool {
        match arch {
            GuestArch::X86_64 => self != Self::V1N1,
            GuestArch::Aarch64 => matches!(self, Self::V1N1 | Self::None),
        }
    }

    /// The `fault_message` Firecracker answers on `arch` for this name (its serde text for an
    /// unknown variant; squib cannot give the JSON position here).
    pub fn wrong_arch_message(self, arch: GuestArch) -> String {
        let expected = match arch {
            GuestArch::X86_64 => "one of `C3`, `T2`, `T2S`, `None`, `T2CL`, `T2A`",
            GuestArch::Aarch64 => "`V1N1` or `None`",
        };
        format!(
            "An error occurred when deserializing the json body of a request: unknown variant `{}`, expected {expected}.",
            self.name()
        )
    }
}

impl<'de> Deserialize<'de> for CpuTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CpuTemplate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("variant identifier")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CpuTemplate, E> {
                Ok(match v {
                    "C3" => CpuTemplate::C3,
                    "T2" => CpuTemplate::T2,
                    "T2S" => CpuTemplate::T2S,
                    "None" => CpuTemplate::None,
                    "T2CL" => CpuTemplate::T2CL,
                    "T2A" => CpuTemplate::T2A,
                    "V1N1" => CpuTemplate::V1N1,
                    other => return Err(E::unknown_variant(other, X86_TEMPLATE_NAMES)),
                })
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Firecracker's x86_64 `StaticCpuTemplate` names (the HTTP API on an x86_64 host parses these,
/// so an unknown or ARM name gets Firecracker's exact serde text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum X86CpuTemplate {
    /// Intel C3.
    C3,
    /// Intel T2.
    T2,
    /// Intel T2S.
    T2S,
    /// No template.
    None,
    /// Intel T2CL.
    T2CL,
    /// AMD T2A.
    T2A,
}

impl From<X86CpuTemplate> for CpuTemplate {
    fn from(t: X86CpuTemplate) -> Self {
        match t {
            X86CpuTemplate::C3 => Self::C3,
            X86CpuTemplate::T2 => Self::T2,
            X86CpuTemplate::T2S => Self::T2S,
            X86CpuTemplate::None => Self::None,
            X86CpuTemplate::T2CL => Self::T2CL,
            X86CpuTemplate::T2A => Self::T2A,
        }
    }
}

/// Firecracker's aarch64 `StaticCpuTemplate` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Aarch64CpuTemplate {
    /// ARM Neoverse V1 → N1.
    V1N1,
    /// No template.
    None,
}

impl From<Aarch64CpuTemplate> for CpuTemplate {
    fn from(t: Aarch64CpuTemplate) -> Self {
        match t {
            Aarch64CpuTemplate::V1N1 => Self::V1N1,
            Aarch64CpuTemplate::None => Self::None,
        }
    }
}

/// Raw `PUT /machine-config` body. A JSON array body fails with Firecracker's text
/// ("invalid length 0, expected struct MachineConfig with 6 elements").
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "struct MachineConfig with 6 elements",
    bound(deserialize = "T: Deserialize<'de>")
)]
pub struct RawMachineConfig<T = CpuTemplate> {
    /// Number of vCPUs.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: usize,
    /// Simultaneous multithreading.
    #[serde(default)]
    pub smt: bool,
    /// Deprecated static CPU template (`T`: one architecture's names, or the union).
    #[serde(default)]
    pub cpu_template: Option<T>,
    /// Dirty page tracking (needed for diff snapshots).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Guest memory backing.
    #[serde(default)]
    pub huge_pages: HugePages,
}

/// Validated machine configuration; also the `GET /machine-config` body.
///
/// Serializes as `{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,
/// "huge_pages":"None"}`, with `cpu_template` only when one is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MachineConfig {
    /// Number of vCPUs.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: usize,
    /// Simultaneous multithreading.
    pub smt: bool,
    /// Deprecated static CPU template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Dirty page tracking.
    pub track_dirty_pages: bool,
    /// Guest memory backing.
    pub huge_pages: HugePages,
}

impl Default for MachineConfig {
    /// Firecracker's fresh configuration: 1 vCPU, 128 MiB.
    fn default() -> Self {
        Self {
            vcpu_count: DEFAULT_VCPU_COUNT,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

fn check_vcpus(vcpu_count: u8, smt: bool) -> Result<(), String> {
    if vcpu_count == 0 || vcpu_count > MAX_SUPPORTED_VCPUS {
        return Err(INVALID_VCPU_COUNT.to_owned());
    }
    if smt && vcpu_count > 1 && vcpu_count % 2 == 1 {
        return Err(INVALID_VCPU_COUNT.to_owned());
    }
    Ok(())
}

impl MachineConfig {
    /// Firecracker's `VmConfig::update`: merge `update` into `self` and re-validate.
    ///
    /// Omitted fields keep their current values; `cpu_template: "None"` clears the template.
    pub fn updated(&self, update: &MachineConfigUpdate) -> Result<Self, String> {
        let vcpu_count = update.vcpu_count.unwrap_or(self.vcpu_count);
        let smt = update.smt.unwrap_or(self.smt);
        check_vcpus(vcpu_count, smt)?;
        let mem_size_mib = update.mem_size_mib.unwrap_or(self.mem_size_mib);
        let huge_pages = update.huge_pages.unwrap_or(self.huge_pages);
        if !huge_pages.is_valid_mem_size(mem_size_mib) {
            return Err(INVALID_MEMORY_SIZE.to_owned());
        }
        let cpu_template = match update.cpu_template {
            None => self.cpu_template,
            Some(CpuTemplate::None) => None,
            Some(other) => Some(other),
        };
        Ok(Self {
            vcpu_count,
            mem_size_mib,
            smt,
            cpu_template,
            track_dirty_pages: update.track_dirty_pages.unwrap_or(self.track_dirty_pages),
            huge_pages,
        })
    }

    /// Firecracker's PUT semantics: every field is replaced (omitted `smt`,
    /// `track_dirty_pages` and `huge_pages` were already defaulted), except that an omitted
    /// `cpu_template` keeps `self`'s.
    pub fn replaced_by(&self, put: &MachineConfig) -> Result<Self, String> {
        self.updated(&MachineConfigUpdate::from(put))
    }
}

impl<T: Into<CpuTemplate>> TryFrom<RawMachineConfig<T>> for MachineConfig {
    type Error = String;

    fn try_from(raw: RawMachineConfig<T>) -> Result<Self, Self::Error> {
        check_vcpus(raw.vcpu_count, raw.smt)?;
        if !raw.huge_pages.is_valid_mem_size(raw.mem_size_mib) {
            return Err(INVALID_MEMORY_SIZE.to_owned());
        }
        Ok(Self {
            vcpu_count: raw.vcpu_count,
            mem_size_mib: raw.mem_size_mib,
            smt: raw.smt,
            cpu_template: raw.cpu_template.map(Into::into),
            track_dirty_pages: raw.track_dirty_pages,
            huge_pages: raw.huge_pages,
        })
    }
}

/// Raw `PATCH /machine-config` body: every field optional, at least one required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct RawMachineConfigUpdate<T = CpuTemplate> {
    /// Number of vCPUs.
    #[serde(default)]
    pub vcpu_count: Option<u8>,
    /// Guest memory in MiB.
    #[serde(default)]
    pub mem_size_mib: Option<usize>,
    /// Simultaneous multithreading.
    #[serde(default)]
    pub smt: Option<bool>,
    /// Deprecated static CPU template (`T`: one architecture's names, or the union).
    #[serde(default)]
    pub cpu_template: Option<T>,
    /// Dirty page tracking.
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    /// Guest memory backing.
    #[serde(default)]
    pub huge_pages: Option<HugePages>,
}

impl<T> Default for RawMachineConfigUpdate<T> {
    fn default() -> Self {
        Self {
            vcpu_count: None,
            mem_size_mib: None,
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: None,
        }
    }
}

/// Validated `PATCH /machine-config` body (merged into the current config by
/// [`MachineConfig::updated`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MachineConfigUpdate {
    /// Number of vCPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    /// Guest memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<usize>,
    /// Simultaneous multithreading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Deprecated static CPU template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Dirty page tracking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Guest memory backing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigUpdate {
    /// `true` if no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl From<&MachineConfig> for MachineConfigUpdate {
    fn from(cfg: &MachineConfig) -> Self {
        Self {
            vcpu_count: Some(cfg.vcpu_count),
            mem_size_mib: Some(cfg.mem_size_mib),
            smt: Some(cfg.smt),
            cpu_template: cfg.cpu_template,
            track_dirty_pages: Some(cfg.track_dirty_pages),
            huge_pages: Some(cfg.huge_pages),
        }
    }
}

impl<T: Into<CpuTemplate>> TryFrom<RawMachineConfigUpdate<T>> for MachineConfigUpdate {
    type Error = String;

    fn try_from(raw: RawMachineConfigUpdate<T>) -> Result<Self, Self::Error> {
        let upd = Self {
            vcpu_count: raw.vcpu_count,
            mem_size_mib: raw.mem_size_mib,
            smt: raw.smt,
            cpu_template: raw.cpu_template.map(Into::into),
            track_dirty_pages: raw.track_dirty_pages,
            huge_pages: raw.huge_pages,
        };
        if upd.is_empty() {
            return Err(EMPTY_PATCH.to_owned());
        }
        // Field-local checks; cross-field ones (SMT parity, page size) run on the merge.
        if let Some(n) = upd.vcpu_count {
            check_vcpus(n, false)?;
        }
        if upd.mem_size_mib == Some(0) {
            return Err(INVALID_MEMORY_SIZE.to_owned());
        }
        Ok(upd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<MachineConfig, String> {
        let raw: RawMachineConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        MachineConfig::try_from(raw)
    }

    fn patch(json: &str) -> Result<MachineConfigUpdate, String> {
        let raw: RawMachineConfigUpdate = serde_json::from_str(json).map_err(|e| e.to_string())?;
        MachineConfigUpdate::try_from(raw)
    }

    #[test]
    fn test_should_serialize_default_like_firecracker() {
        assert_eq!(
            serde_json::to_string(&MachineConfig::default()).unwrap(),
            r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
        );
    }

    #[test]
    fn test_should_accept_valid_put_and_serialize_template_only_when_set() {
        let cfg =
            put(r#"{"vcpu_count":2,"mem_size_mib":256,"cpu_template":"T2","huge_pages":"2M"}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&cfg).unwrap(),
            r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"cpu_template":"T2","track_dirty_pages":false,"huge_pages":"2M"}"#
        );
        assert!(put(r#"{"vcpu_count":32,"mem_size_mib":1}"#).is_ok());
        assert!(put(r#"{"vcpu_count":2,"mem_size_mib":128,"smt":true}"#).is_ok());
        assert!(put(r#"{"vcpu_count":1,"mem_size_mib":128,"smt":true}"#).is_ok());
    }

    #[test]
    fn test_should_reject_bad_vcpu_counts_with_firecracker_text() {
        for body in [
            r#"{"vcpu_count":0,"mem_size_mib":128}"#,
            r#"{"vcpu_count":33,"mem_size_mib":128}"#,
            r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#,
        ] {
            assert_eq!(put(body).unwrap_err(), INVALID_VCPU_COUNT, "{body}");
        }
    }

    #[test]
    fn test_should_reject_bad_memory_sizes_with_firecracker_text() {
        for body in [
            r#"{"vcpu_count":1,"mem_size_mib":0}"#,
            r#"{"vcpu_count":1,"mem_size_mib":127,"huge_pages":"2M"}"#,
            r#"{"vcpu_count":1,"mem_size_mib":127,"huge_pages":"Transparent"}"#,
        ] {
            assert_eq!(put(body).unwrap_err(), INVALID_MEMORY_SIZE, "{body}");
        }
    }

    #[test]
    fn test_should_report_serde_errors_like_firecracker() {
        assert_eq!(
            put(r#"{"vcpu_count":1,"mem_size_mib":128,"bogus":1}"#).unwrap_err(),
            "unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, \
             `cpu_template`, `track_dirty_pages`, `huge_pages` at line 1 column 42"
        );
        assert_eq!(
            put(r#"{"vcpu_count":1}"#).unwrap_err(),
            "missing field `mem_size_mib` at line 1 column 16"
        );
        assert_eq!(
            put(r#"{"vcpu_count":"two","mem_size_mib":128}"#).unwrap_err(),
            "invalid type: string \"two\", expected u8 at line 1 column 19"
        );
        assert_eq!(
            put("[]").unwrap_err(),
            "invalid length 0, expected struct MachineConfig with 6 elements at line 1 column 2"
        );
    }

    #[test]
    fn test_should_reject_empty_patch() {
        assert_eq!(patch("{}").unwrap_err(), EMPTY_PATCH);
        assert_eq!(
            patch(r#"{"vcpu_count":0}"#).unwrap_err(),
            INVALID_VCPU_COUNT
        );
        assert_eq!(
            patch(r#"{"mem_size_mib":0}"#).unwrap_err(),
            INVALID_MEMORY_SIZE
        );
    }

    #[test]
    fn test_should_merge_patch_and_revalidate() {
        let base = put(r#"{"vcpu_count":3,"mem_size_mib":127}"#).unwrap();
        let merged = base
            .updated(&patch(r#"{"mem_size_mib":512}"#).unwrap())
            .unwrap();
        assert_eq!((merged.vcpu_count, merged.mem_size_mib), (3, 512));
        assert_eq!(
            base.updated(&patch(r#"{"smt":true}"#).unwrap())
                .unwrap_err(),
            INVALID_VCPU_COUNT
        );
        assert_eq!(
            base.updated(&patch(r#"{"huge_pages":"2M"}"#).unwrap())
                .unwrap_err(),
            INVALID_MEMORY_SIZE
        );
    }

    #[test]
    fn test_should_keep_template_on_put_without_template_and_clear_on_none() {
        let with_t2 = MachineConfig::default()
            .replaced_by(
                &put(r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2"}"#).unwrap(),
            )
            .unwrap();
        assert_eq!(with_t2.cpu_template, Some(CpuTemplate::T2));
        let kept = with_t2
            .replaced_by(&put(r#"{"vcpu_count":2,"mem_size_mib":64}"#).unwrap())
            .unwrap();
        assert_eq!(kept.cpu_template, Some(CpuTemplate::T2));
        let cleared = kept
            .updated(&patch(r#"{"cpu_template":"None"}"#).unwrap())
            .unwrap();
        assert_eq!(cleared.cpu_template, None);
    }

    #[test]
    fn test_should_reset_omitted_fields_on_put() {
        let base =
            put(r#"{"vcpu_count":2,"mem_size_mib":128,"smt":true,"track_dirty_pages":true}"#)
                .unwrap();
        let next = base
            .replaced_by(&put(r#"{"vcpu_count":2,"mem_size_mib":256}"#).unwrap())
            .unwrap();
        assert!(!next.smt);
        assert!(!next.track_dirty_pages);
        assert_eq!(next.huge_pages, HugePages::None);
    }

    #[test]
    fn test_should_name_firecracker_x86_templates_in_unknown_variant_text() {
        // Recorded from Firecracker 1.17 (x86_64), body with its spaces.
        assert_eq!(
            put(r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "XX"}"#).unwrap_err(),
            "unknown variant `XX`, expected one of `C3`, `T2`, `T2S`, `None`, `T2CL`, `T2A` at line 1 column 59"
        );
        for t in ["C3", "T2", "T2S", "None", "T2CL", "T2A", "V1N1"] {
            let cfg = put(&format!(
                r#"{{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"{t}"}}"#
            ))
            .unwrap();
            assert_eq!(cfg.cpu_template.map(CpuTemplate::name), Some(t));
        }
    }

    #[test]
    fn test_should_know_which_architecture_offers_each_template() {
        for t in [
            CpuTemplate::C3,
            CpuTemplate::T2,
            CpuTemplate::T2S,
            CpuTemplate::T2CL,
            CpuTemplate::T2A,
        ] {
            assert!(t.supported_on(GuestArch::X86_64) && !t.supported_on(GuestArch::Aarch64));
        }
        assert!(CpuTemplate::V1N1.supported_on(GuestArch::Aarch64));
        assert!(!CpuTemplate::V1N1.supported_on(GuestArch::X86_64));
        assert!(CpuTemplate::None.supported_on(GuestArch::X86_64));
        assert_eq!(
            CpuTemplate::V1N1.wrong_arch_message(GuestArch::X86_64),
            "An error occurred when deserializing the json body of a request: unknown variant `V1N1`, expected one of `C3`, `T2`, `T2S`, `None`, `T2CL`, `T2A`."
        );
        assert_eq!(
            CpuTemplate::T2.wrong_arch_message(GuestArch::Aarch64),
            "An error occurred when deserializing the json body of a request: unknown variant `T2`, expected `V1N1` or `None`."
        );
    }
}
