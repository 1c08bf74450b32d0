//! `PUT /boot-source` body (`BootSource` in the swagger).
//!
//! Purely syntactic checks: paths are bounded and NUL-free, and `boot_args` must fit Linux's
//! x86 command line (2048 bytes including the terminating NUL) and contain printable ASCII only,
//! with linux-loader's texts. Whether the files exist is checked by the VMM when it opens them.

use serde::{Deserialize, Serialize};

use super::limits::{MAX_BOOT_ARGS_LEN, check_path};

/// Raw `PUT /boot-source` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBootSource {
    /// Host path of the kernel image.
    pub kernel_image_path: String,
    /// Host path of the initrd.
    #[serde(default)]
    pub initrd_path: Option<String>,
    /// Kernel command line.
    #[serde(default)]
    pub boot_args: Option<String>,
}

/// Validated boot source. Serializes as
/// `{"kernel_image_path":..,"initrd_path":..,"boot_args":..}` (absent values as `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BootSource {
    /// Host path of the kernel image (empty only in the unconfigured [`Default`] value).
    pub kernel_image_path: String,
    /// Host path of the initrd.
    pub initrd_path: Option<String>,
    /// Kernel command line (`None`: the VMM uses Firecracker's default).
    pub boot_args: Option<String>,
}

impl BootSource {
    /// `true` once a kernel has been configured.
    pub fn is_configured(&self) -> bool {
        !self.kernel_image_path.is_empty()
    }
}

/// Firecracker's prefix for command-line errors.
const INVALID_CMDLINE: &str = "Boot source error: The kernel command line is invalid: ";

/// Check a kernel command line like linux-loader's `Cmdline::insert_str` with Firecracker's
/// capacity ([`MAX_BOOT_ARGS_LEN`] including the NUL).
pub fn check_boot_args(args: &str) -> Result<(), String> {
    if !args.chars().all(|c| matches!(c, ' '..='~')) {
        return Err(format!(
            "{INVALID_CMDLINE}String contains a non-printable ASCII character."
        ));
    }
    if args.len() >= MAX_BOOT_ARGS_LEN {
        return Err(format!(
            "{INVALID_CMDLINE}Inserting string would make command line too long."
        ));
    }
    Ok(())
}

impl TryFrom<RawBootSource> for BootSource {
    type Error = String;

    fn try_from(raw: RawBootSource) -> Result<Self, Self::Error> {
        check_path("kernel_image_path", &raw.kernel_image_path)?;
        if let Some(p) = &raw.initrd_path {
            check_path("initrd_path", p)?;
        }
        if let Some(args) = &raw.boot_args {
            check_boot_args(args)?;
        }
        Ok(Self {
            kernel_image_path: raw.kernel_image_path,
            initrd_path: raw.initrd_path,
            boot_args: raw.boot_args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BootSource, String> {
        let raw: RawBootSource = serde_json::from_str(json).map_err(|e| e.to_string())?;
        BootSource::try_from(raw)
    }

    #[test]
    fn test_should_accept_minimal_boot_source() {
        let b = parse(r#"{"kernel_image_path":"/tmp/vmlinux.bin"}"#).unwrap();
        assert!(b.is_configured());
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"kernel_image_path":"/tmp/vmlinux.bin","initrd_path":null,"boot_args":null}"#
        );
    }

    #[test]
    fn test_should_serialize_unconfigured_like_firecracker() {
        assert!(!BootSource::default().is_configured());
        assert_eq!(
            serde_json::to_string(&BootSource::default()).unwrap(),
            r#"{"kernel_image_path":"","initrd_path":null,"boot_args":null}"#
        );
    }

    #[test]
    fn test_should_bound_boot_args() {
        let ok = format!(
            r#"{{"kernel_image_path":"/k","boot_args":"{}"}}"#,
            "a".repeat(2047)
        );
        assert!(parse(&ok).is_ok());
        let long = format!(
            r#"{{"kernel_image_path":"/k","boot_args":"{}"}}"#,
            "a".repeat(2048)
        );
        assert_eq!(
            parse(&long).unwrap_err(),
            "Boot source error: The kernel command line is invalid: Inserting string would make command line too long."
        );
        assert_eq!(
            parse(r#"{"kernel_image_path":"/k","boot_args":"a\u0000b"}"#).unwrap_err(),
            "Boot source error: The kernel command line is invalid: String contains a non-printable ASCII character."
        );
    }

    #[test]
    fn test_should_reject_bad_paths() {
        assert_eq!(
            parse(r#"{"kernel_image_path":""}"#).unwrap_err(),
            "Invalid kernel_image_path: must not be empty"
        );
        assert_eq!(
            parse(r#"{"kernel_image_path":"/k","initrd_path":"a\u0000"}"#).unwrap_err(),
            "Invalid initrd_path: must not contain NUL bytes"
        );
        assert!(
            parse(r#"{"boot_args":"x"}"#)
                .unwrap_err()
                .starts_with("missing field `kernel_image_path`")
        );
        assert!(
            parse(r#"{"kernel_image_path":"/k","x":1}"#)
                .unwrap_err()
                .starts_with("unknown field `x`")
        );
    }
}
