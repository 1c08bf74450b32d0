//! `PUT /entropy` body (`EntropyDevice` in the swagger): virtio-rng.

use serde::{Deserialize, Serialize};

use super::rate_limiter::{RateLimiterConfig, RawRateLimiterConfig, convert_opt};

/// Raw `PUT /entropy` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntropyConfig {
    /// Rate limiter.
    #[serde(default)]
    pub rate_limiter: Option<RawRateLimiterConfig>,
}

/// Validated entropy device. Serializes as `{"rate_limiter":..}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EntropyConfig {
    /// Rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl TryFrom<RawEntropyConfig> for EntropyConfig {
    type Error = String;

    fn try_from(raw: RawEntropyConfig) -> Result<Self, Self::Error> {
        Ok(Self {
            rate_limiter: convert_opt(raw.rate_limiter)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_accept_and_serialize_entropy() {
        let raw: RawEntropyConfig = serde_json::from_str("{}").unwrap();
        let e = EntropyConfig::try_from(raw).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"rate_limiter":null}"#
        );
        let raw: RawEntropyConfig =
            serde_json::from_str(r#"{"rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#).unwrap();
        assert!(
            EntropyConfig::try_from(raw)
                .unwrap()
                .rate_limiter
                .unwrap()
                .ops
                .is_some()
        );
    }

    #[test]
    fn test_should_reject_unknown_fields() {
        let err = serde_json::from_str::<RawEntropyConfig>(r#"{"x":1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `x`, expected `rate_limiter` at line 1 column 4"
        );
    }
}
