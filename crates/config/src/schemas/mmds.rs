//! `PUT /mmds/config` body (`MmdsConfig` in the swagger). The MMDS data store itself
//! (`PUT`/`PATCH /mmds`) is an arbitrary JSON value kept in [`crate::vm_config::VmConfig`].
//!
//! Rules (Firecracker): `network_interfaces` must be non-empty (and, checked by
//! [`crate::vm_config::VmConfig::apply`], name existing interfaces); `ipv4_address` defaults to
//! 169.254.169.254 and must be `169.254.x.y` with `x` ∉ {0, 255}; `version` defaults to `V1`,
//! which is deprecated (the API edge answers `Deprecation: true`, also when `version` is
//! omitted).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::limits::{MAX_SHORT_STRING_LEN, check_list_len, check_string};

/// Firecracker's MMDS address.
pub const DEFAULT_MMDS_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Firecracker's category prefix for MMDS configuration errors (the triple M is Firecracker's).
pub const MMDS_CONFIG_ERROR: &str = "MMMDS config error: ";
/// `fault_message` for an empty interface list.
pub const EMPTY_IFACE_LIST: &str = "MMMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty.";
/// `fault_message` for an address outside 169.254.1.0–169.254.254.255.
pub const INVALID_IPV4: &str = "MMMDS config error: The MMDS IPv4 address is not link local.";
/// `fault_message` for an interface id that names no configured interface.
pub const INVALID_IFACE_ID: &str = "MMMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.";

/// MMDS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    /// IMDSv1-style, no session tokens (deprecated).
    #[default]
    V1,
    /// Session tokens required.
    V2,
}

/// Raw `PUT /mmds/config` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMmdsConfig {
    /// Protocol version (default `V1`).
    #[serde(default)]
    pub version: Option<MmdsVersion>,
    /// Interfaces whose guest traffic to the MMDS address is intercepted.
    pub network_interfaces: Vec<String>,
    /// MMDS address.
    #[serde(default)]
    pub ipv4_address: Option<Ipv4Addr>,
    /// EC2 IMDS compatibility (always `text/plain`).
    #[serde(default)]
    pub imds_compat: bool,
}

/// Validated MMDS configuration. Serializes
/// `{"version":"V1","network_interfaces":[..],"ipv4_address":"169.254.169.254","imds_compat":false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MmdsConfig {
    /// Protocol version.
    pub version: MmdsVersion,
    /// Interfaces whose guest traffic to the MMDS address is intercepted.
    pub network_interfaces: Vec<String>,
    /// MMDS address.
    pub ipv4_address: Ipv4Addr,
    /// EC2 IMDS compatibility.
    pub imds_compat: bool,
}

impl MmdsConfig {
    /// `true` for V1, including when `version` was omitted (V1 is the default): such requests
    /// get Firecracker's deprecation notice.
    pub fn is_v1(&self) -> bool {
        self.version == MmdsVersion::V1
    }
}

/// Firecracker's link-local check: `169.254.x.y` with `x` neither 0 nor 255.
pub fn is_valid_mmds_ipv4(addr: Ipv4Addr) -> bool {
    matches!(addr.octets(), [169, 254, x, _] if x != 0 && x != 255)
}

impl TryFrom<RawMmdsConfig> for MmdsConfig {
    type Error = String;

    fn try_from(raw: RawMmdsConfig) -> Result<Self, Self::Error> {
        if raw.network_interfaces.is_empty() {
            return Err(EMPTY_IFACE_LIST.to_owned());
        }
        check_list_len("network_interfaces", raw.network_interfaces.len())?;
        for id in &raw.network_interfaces {
            check_string("network_interfaces entry", id, MAX_SHORT_STRING_LEN)?;
        }
        let ipv4_address = raw.ipv4_address.unwrap_or(DEFAULT_MMDS_IPV4);
        if !is_valid_mmds_ipv4(ipv4_address) {
            return Err(INVALID_IPV4.to_owned());
        }
        Ok(Self {
            version: raw.version.unwrap_or_default(),
            network_interfaces: raw.network_interfaces,
            ipv4_address,
            imds_compat: raw.imds_compat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<MmdsConfig, String> {
        let raw: RawMmdsConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        MmdsConfig::try_from(raw)
    }

    #[test]
    fn test_should_default_to_v1_and_serialize() {
        let c = put(r#"{"network_interfaces":["eth0"]}"#).unwrap();
        assert!(c.is_v1());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"version":"V1","network_interfaces":["eth0"],"ipv4_address":"169.254.169.254","imds_compat":false}"#
        );
        let c = put(r#"{"version":"V2","network_interfaces":["eth0"],"ipv4_address":"169.254.1.1","imds_compat":true}"#)
            .unwrap();
        assert!(!c.is_v1());
        assert!(c.imds_compat);
    }

    #[test]
    fn test_should_reject_empty_list_and_bad_addresses() {
        assert_eq!(
            put(r#"{"network_interfaces":[]}"#).unwrap_err(),
            EMPTY_IFACE_LIST
        );
        for addr in ["169.254.0.1", "169.254.255.1", "10.0.0.1", "169.253.1.1"] {
            let json = format!(r#"{{"network_interfaces":["e"],"ipv4_address":"{addr}"}}"#);
            assert_eq!(put(&json).unwrap_err(), INVALID_IPV4, "{addr}");
        }
        assert!(
            put(r#"{"network_interfaces":["e"],"ipv4_address":"x"}"#)
                .unwrap_err()
                .starts_with("invalid IPv4 address syntax")
        );
        assert!(
            put(r#"{"network_interfaces":["e"],"version":"V3"}"#)
                .unwrap_err()
                .starts_with("unknown variant `V3`, expected `V1` or `V2`")
        );
        assert!(
            put("{}")
                .unwrap_err()
                .starts_with("missing field `network_interfaces`")
        );
    }

    #[test]
    fn test_should_bound_interface_list() {
        let ids: Vec<String> = (0..257).map(|i| format!("e{i}")).collect();
        let json = serde_json::json!({ "network_interfaces": ids }).to_string();
        assert_eq!(
            put(&json).unwrap_err(),
            "Invalid network_interfaces: exceeds 256 entries (got 257)"
        );
    }
}
