//! `PUT /serial` body (`SerialDevice` in the swagger).
//!
//! Without it, serial output goes to stdout. The optional token bucket limits output bytes;
//! excess bytes are dropped. The serial device cannot be configured from a `--config-file`.

use serde::{Deserialize, Serialize};

use super::limits::check_path;
use super::rate_limiter::{RawTokenBucketConfig, TokenBucketConfig};

/// Raw `PUT /serial` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerialConfig {
    /// File or named pipe receiving guest serial output.
    #[serde(default)]
    pub serial_out_path: Option<String>,
    /// Output rate limit (bytes).
    #[serde(default)]
    pub rate_limiter: Option<RawTokenBucketConfig>,
}

/// Validated serial configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SerialConfig {
    /// File or named pipe receiving guest serial output (stdout when absent).
    pub serial_out_path: Option<String>,
    /// Output rate limit (bytes).
    pub rate_limiter: Option<TokenBucketConfig>,
}

impl TryFrom<RawSerialConfig> for SerialConfig {
    type Error = String;

    fn try_from(raw: RawSerialConfig) -> Result<Self, Self::Error> {
        if let Some(p) = &raw.serial_out_path {
            check_path("serial_out_path", p)?;
        }
        Ok(Self {
            serial_out_path: raw.serial_out_path,
            rate_limiter: raw
                .rate_limiter
                .map(TokenBucketConfig::try_from)
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<SerialConfig, String> {
        let raw: RawSerialConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        SerialConfig::try_from(raw)
    }

    #[test]
    fn test_should_accept_serial() {
        assert_eq!(put("{}").unwrap(), SerialConfig::default());
        let s = put(r#"{"serial_out_path":"/tmp/s","rate_limiter":{"size":10,"refill_time":100}}"#)
            .unwrap();
        assert_eq!(s.rate_limiter.unwrap().size, 10);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"serial_out_path":"/tmp/s","rate_limiter":{"size":10,"one_time_burst":null,"refill_time":100}}"#
        );
    }

    #[test]
    fn test_should_reject_bad_serial() {
        assert_eq!(
            put(r#"{"serial_out_path":""}"#).unwrap_err(),
            "Invalid serial_out_path: must not be empty"
        );
        assert!(
            put(r#"{"x":1}"#)
                .unwrap_err()
                .starts_with("unknown field `x`")
        );
        assert!(
            put(r#"{"rate_limiter":{"size":1}}"#)
                .unwrap_err()
                .starts_with("missing field `refill_time`")
        );
    }
}
