//! `PUT /vsock` body (`Vsock` in the swagger).
//!
//! `guest_cid` ≥ 3 (0–2 are reserved by the vsock spec), `uds_path` a bounded Unix-socket path,
//! `vsock_id` deprecated (the API edge answers `Deprecation: true`).

use serde::{Deserialize, Serialize};

use super::limits::{MAX_SHORT_STRING_LEN, check_string, check_uds_path};

/// Smallest guest CID (0, 1 and 2 are reserved).
pub const MIN_GUEST_CID: u32 = 3;

/// Raw `PUT /vsock` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVsockConfig {
    /// Deprecated device id.
    #[serde(default)]
    pub vsock_id: Option<String>,
    /// Guest context id.
    pub guest_cid: u32,
    /// Host-side Unix socket path.
    pub uds_path: String,
}

/// Validated vsock device. Serializes as `{"guest_cid":3,"uds_path":".."}`, with `vsock_id`
/// first when it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VsockConfig {
    /// Deprecated device id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// Guest context id.
    pub guest_cid: u32,
    /// Host-side Unix socket path.
    pub uds_path: String,
}

impl TryFrom<RawVsockConfig> for VsockConfig {
    type Error = String;

    fn try_from(raw: RawVsockConfig) -> Result<Self, Self::Error> {
        if let Some(id) = &raw.vsock_id {
            check_string("vsock_id", id, MAX_SHORT_STRING_LEN)?;
        }
        if raw.guest_cid < MIN_GUEST_CID {
            return Err(format!(
                "Invalid guest_cid: must be >= {MIN_GUEST_CID} (got {})",
                raw.guest_cid
            ));
        }
        check_uds_path("uds_path", &raw.uds_path)?;
        Ok(Self {
            vsock_id: raw.vsock_id,
            guest_cid: raw.guest_cid,
            uds_path: raw.uds_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<VsockConfig, String> {
        let raw: RawVsockConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        VsockConfig::try_from(raw)
    }

    #[test]
    fn test_should_accept_and_serialize_vsock() {
        let v = put(r#"{"guest_cid":3,"uds_path":"/tmp/v.sock"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"guest_cid":3,"uds_path":"/tmp/v.sock"}"#
        );
        let v = put(r#"{"vsock_id":"vs","guest_cid":4,"uds_path":"/v"}"#).unwrap();
        assert_eq!(v.vsock_id.as_deref(), Some("vs"));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"vsock_id":"vs","guest_cid":4,"uds_path":"/v"}"#
        );
    }

    #[test]
    fn test_should_reject_bad_vsock() {
        assert_eq!(
            put(r#"{"guest_cid":2,"uds_path":"/v"}"#).unwrap_err(),
            "Invalid guest_cid: must be >= 3 (got 2)"
        );
        assert_eq!(
            put(r#"{"guest_cid":3,"uds_path":""}"#).unwrap_err(),
            "Invalid uds_path: must not be empty"
        );
        let long = format!(r#"{{"guest_cid":3,"uds_path":"/{}"}}"#, "a".repeat(107));
        assert_eq!(
            put(&long).unwrap_err(),
            "Invalid uds_path: exceeds 107 bytes (got 108 bytes)"
        );
        assert!(put(r#"{"guest_cid":-1,"uds_path":"/v"}"#).is_err());
        assert!(
            put(r#"{"uds_path":"/v"}"#)
                .unwrap_err()
                .starts_with("missing field `guest_cid`")
        );
    }
}
