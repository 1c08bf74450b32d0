//! `/network-interfaces/{id}` PUT and PATCH bodies (`NetworkInterface` /
//! `PartialNetworkInterface` in the swagger).
//!
//! `host_dev_name` is a tap name: 1..=15 bytes (`IFNAMSIZ` − 1), no NUL. `guest_mac` is
//! `"aa:bb:cc:dd:ee:ff"`; `mtu` 68..=65535. Duplicate MACs are rejected by
//! [`crate::vm_config::VmConfig::apply`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::limits::check_resource_id;
use super::rate_limiter::{RateLimiterConfig, RawRateLimiterConfig, convert_opt};

/// Longest tap device name (`IFNAMSIZ` − 1).
pub const MAX_HOST_DEV_NAME_LEN: usize = 15;
/// Smallest MTU accepted (IPv4 minimum).
pub const MIN_MTU: u16 = 68;

/// Serde message for a malformed `guest_mac` (Firecracker's text).
pub const INVALID_MAC: &str = "The provided MAC address is not valid.";

/// A MAC address, written `aa:bb:cc:dd:ee:ff` (hex digits, either case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The raw bytes.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("Invalid guest_mac: {s}");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(|_| serde::de::Error::custom(INVALID_MAC))
    }
}

/// Raw `PUT /network-interfaces/{id}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworkInterfaceConfig {
    /// Interface id.
    pub iface_id: String,
    /// Host tap device name.
    pub host_dev_name: String,
    /// Guest MAC address (a malformed one fails deserialization with [`INVALID_MAC`]).
    #[serde(default)]
    pub guest_mac: Option<MacAddr>,
    /// MTU advertised with `VIRTIO_NET_F_MTU`.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Receive rate limiter.
    #[serde(default)]
    pub rx_rate_limiter: Option<RawRateLimiterConfig>,
    /// Transmit rate limiter.
    #[serde(default)]
    pub tx_rate_limiter: Option<RawRateLimiterConfig>,
}

/// Validated network interface. Serializes `{"iface_id","host_dev_name","guest_mac","mtu",
/// "rx_rate_limiter","tx_rate_limiter"}` (`"mtu":null` when unset, as Firecracker 1.17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NetworkInterfaceConfig {
    /// Interface id.
    pub iface_id: String,
    /// Host tap device name.
    pub host_dev_name: String,
    /// Guest MAC address.
    pub guest_mac: Option<MacAddr>,
    /// MTU.
    pub mtu: Option<u16>,
    /// Receive rate limiter.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Transmit rate limiter.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetworkInterfaceConfig {
    /// The interface id.
    pub fn id(&self) -> &str {
        &self.iface_id
    }
}

/// Firecracker's text for a tap name longer than [`MAX_HOST_DEV_NAME_LEN`] bytes.
pub const TAP_NAME_TOO_LONG: &str = "Network config error: Could not create the network device: \
     Open tap device failed: Invalid interface name";

/// Check a tap device name: Firecracker refuses more than 15 bytes before opening the tap
/// (its text); other names the kernel refuses (`/`, spaces) fail at `TUNSETIFF` with
/// Firecracker's open-tap text. NUL is refused here (it cannot reach the kernel), and so is
/// an empty name (Firecracker lets the kernel pick `tapN`; squib asks for an explicit name).
pub fn check_host_dev_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Invalid host_dev_name: must not be empty".to_owned());
    }
    if name.len() > MAX_HOST_DEV_NAME_LEN {
        return Err(TAP_NAME_TOO_LONG.to_owned());
    }
    if name.contains('\0') {
        return Err("Invalid host_dev_name: must not contain NUL".to_owned());
    }
    Ok(())
}

impl TryFrom<RawNetworkInterfaceConfig> for NetworkInterfaceConfig {
    type Error = String;

    fn try_from(raw: RawNetworkInterfaceConfig) -> Result<Self, Self::Error> {
        check_resource_id(&raw.iface_id)?;
        check_host_dev_name(&raw.host_dev_name)?;
        if let Some(mtu) = raw.mtu
            && mtu < MIN_MTU
        {
            return Err(format!(
                "Invalid mtu: must be {MIN_MTU}..=65535 (got {mtu})"
            ));
        }
        Ok(Self {
            iface_id: raw.iface_id,
            host_dev_name: raw.host_dev_name,
            guest_mac: raw.guest_mac,
            mtu: raw.mtu,
            rx_rate_limiter: convert_opt(raw.rx_rate_limiter)?,
            tx_rate_limiter: convert_opt(raw.tx_rate_limiter)?,
        })
    }
}

/// Raw `PATCH /network-interfaces/{id}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworkInterfaceUpdate {
    /// Interface id.
    pub iface_id: String,
    /// New receive rate limiter.
    #[serde(default)]
    pub rx_rate_limiter: Option<RawRateLimiterConfig>,
    /// New transmit rate limiter.
    #[serde(default)]
    pub tx_rate_limiter: Option<RawRateLimiterConfig>,
}

/// Validated `PATCH /network-interfaces/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NetworkInterfaceUpdate {
    /// Interface id.
    pub iface_id: String,
    /// New receive rate limiter.
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// New transmit rate limiter.
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetworkInterfaceUpdate {
    /// The interface id.
    pub fn id(&self) -> &str {
        &self.iface_id
    }
}

impl TryFrom<RawNetworkInterfaceUpdate> for NetworkInterfaceUpdate {
    type Error = String;

    fn try_from(raw: RawNetworkInterfaceUpdate) -> Result<Self, Self::Error> {
        check_resource_id(&raw.iface_id)?;
        Ok(Self {
            iface_id: raw.iface_id,
            rx_rate_limiter: convert_opt(raw.rx_rate_limiter)?,
            tx_rate_limiter: convert_opt(raw.tx_rate_limiter)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<NetworkInterfaceConfig, String> {
        let raw: RawNetworkInterfaceConfig =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        NetworkInterfaceConfig::try_from(raw)
    }

    #[test]
    fn test_should_accept_and_serialize_interface() {
        let n =
            put(r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"AA:bb:cc:dd:ee:0F"}"#)
                .unwrap();
        assert_eq!(n.id(), "eth0");
        assert_eq!(
            n.guest_mac.unwrap().bytes(),
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]
        );
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"aa:bb:cc:dd:ee:0f","mtu":null,"rx_rate_limiter":null,"tx_rate_limiter":null}"#
        );
        let with_mtu = put(r#"{"iface_id":"e","host_dev_name":"tap0","mtu":9000}"#).unwrap();
        assert!(
            serde_json::to_string(&with_mtu)
                .unwrap()
                .contains(r#""guest_mac":null,"mtu":9000"#)
        );
    }

    #[test]
    fn test_should_parse_and_reject_macs() {
        assert_eq!(
            "00:11:22:33:44:55".parse::<MacAddr>().unwrap().to_string(),
            "00:11:22:33:44:55"
        );
        for bad in [
            "",
            "00:11:22:33:44",
            "00:11:22:33:44:55:66",
            "0:11:22:33:44:55",
            "zz:11:22:33:44:55",
            "+1:11:22:33:44:55",
        ] {
            assert_eq!(
                bad.parse::<MacAddr>().unwrap_err(),
                format!("Invalid guest_mac: {bad}")
            );
        }
        let mac: MacAddr = serde_json::from_str(r#""01:02:03:04:05:06""#).unwrap();
        assert_eq!(mac.0[5], 6);
    }

    #[test]
    fn test_should_reject_bad_fields() {
        assert_eq!(
            put(r#"{"iface_id":"eth0","host_dev_name":""}"#).unwrap_err(),
            "Invalid host_dev_name: must not be empty"
        );
        assert_eq!(
            put(r#"{"iface_id":"eth0","host_dev_name":"0123456789abcdef"}"#).unwrap_err(),
            TAP_NAME_TOO_LONG
        );
        // Bytes, not characters (8 two-byte characters).
        assert_eq!(
            put(r#"{"iface_id":"eth0","host_dev_name":"éééééééé"}"#).unwrap_err(),
            TAP_NAME_TOO_LONG
        );
        assert!(put(r#"{"iface_id":"eth0","host_dev_name":"0123456789abcde"}"#).is_ok());
        assert_eq!(
            put(r#"{"iface_id":"eth0","host_dev_name":"tap0","mtu":67}"#).unwrap_err(),
            "Invalid mtu: must be 68..=65535 (got 67)"
        );
        assert!(put(r#"{"iface_id":"eth0","host_dev_name":"tap0","mtu":65536}"#).is_err());
        assert_eq!(
            put(r#"{"iface_id":"eth-0","host_dev_name":"tap0"}"#).unwrap_err(),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        assert_eq!(
            put(r#"{"iface_id":"e","host_dev_name":"tap0","guest_mac":"x"}"#).unwrap_err(),
            "The provided MAC address is not valid. at line 1 column 55"
        );
    }

    #[test]
    fn test_should_parse_patch() {
        let raw: RawNetworkInterfaceUpdate = serde_json::from_str(
            r#"{"iface_id":"eth0","rx_rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#,
        )
        .unwrap();
        let u = NetworkInterfaceUpdate::try_from(raw).unwrap();
        assert_eq!(u.id(), "eth0");
        assert!(u.rx_rate_limiter.is_some() && u.tx_rate_limiter.is_none());
        assert!(
            serde_json::from_str::<RawNetworkInterfaceUpdate>(r#"{"iface_id":"e","mtu":1}"#)
                .is_err()
        );
    }
}
