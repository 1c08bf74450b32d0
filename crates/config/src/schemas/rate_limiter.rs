//! Token buckets and rate limiters (`TokenBucket` / `RateLimiter` in Firecracker's swagger).
//!
//! A token bucket is `{size, one_time_burst?, refill_time}`; a rate limiter pairs an optional
//! `bandwidth` bucket (bytes) with an optional `ops` bucket (operations). All numbers are `u64`
//! with swagger minimum 0.
//!
//! Semantics (as in Firecracker): a bucket whose `size` is 0 **or** whose `refill_time` is 0 is
//! *disabled* (it never throttles); such values are accepted, not rejected. `refill_time` is in
//! milliseconds. Like Firecracker, these objects do **not** deny unknown fields.

use serde::{Deserialize, Serialize};

/// Raw token bucket off the wire (unknown fields are ignored, as Firecracker does).
#[derive(Debug, Clone, Deserialize)]
pub struct RawTokenBucketConfig {
    /// Bucket capacity in tokens.
    pub size: u64,
    /// Initial extra budget consumed before refilling starts.
    #[serde(default)]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket completely.
    pub refill_time: u64,
}

/// Validated token bucket. Serializes as `{"size":..,"one_time_burst":..,"refill_time":..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TokenBucketConfig {
    /// Bucket capacity in tokens (0 disables the bucket).
    pub size: u64,
    /// Initial extra budget consumed before refilling starts.
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket completely (0 disables the bucket).
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// `false` when `size` or `refill_time` is 0: such a bucket never throttles.
    pub fn is_enabled(&self) -> bool {
        self.size != 0 && self.refill_time != 0
    }
}

impl TryFrom<RawTokenBucketConfig> for TokenBucketConfig {
    type Error = String;

    fn try_from(raw: RawTokenBucketConfig) -> Result<Self, Self::Error> {
        Ok(Self {
            size: raw.size,
            one_time_burst: raw.one_time_burst,
            refill_time: raw.refill_time,
        })
    }
}

/// Raw rate limiter off the wire (unknown fields are ignored, as Firecracker does).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRateLimiterConfig {
    /// Bucket with bytes as tokens.
    #[serde(default)]
    pub bandwidth: Option<RawTokenBucketConfig>,
    /// Bucket with operations as tokens.
    #[serde(default)]
    pub ops: Option<RawTokenBucketConfig>,
}

/// Validated rate limiter. Serializes both keys (`null` when absent), as Firecracker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RateLimiterConfig {
    /// Bucket with bytes as tokens.
    pub bandwidth: Option<TokenBucketConfig>,
    /// Bucket with operations as tokens.
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// `true` if neither bucket is present.
    pub fn is_empty(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }
}

impl TryFrom<RawRateLimiterConfig> for RateLimiterConfig {
    type Error = String;

    fn try_from(raw: RawRateLimiterConfig) -> Result<Self, Self::Error> {
        Ok(Self {
            bandwidth: raw.bandwidth.map(TokenBucketConfig::try_from).transpose()?,
            ops: raw.ops.map(TokenBucketConfig::try_from).transpose()?,
        })
    }
}

/// Validate an optional raw rate limiter (helper for the device schemas).
pub(crate) fn convert_opt(
    raw: Option<RawRateLimiterConfig>,
) -> Result<Option<RateLimiterConfig>, String> {
    raw.map(RateLimiterConfig::try_from).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> RateLimiterConfig {
        let raw: RawRateLimiterConfig = serde_json::from_str(json).unwrap();
        RateLimiterConfig::try_from(raw).unwrap()
    }

    #[test]
    fn test_should_parse_full_rate_limiter() {
        let rl = parse(
            r#"{"bandwidth":{"size":1000,"one_time_burst":10,"refill_time":100},
                "ops":{"size":10,"refill_time":1000}}"#,
        );
        let bw = rl.bandwidth.unwrap();
        assert_eq!(
            (bw.size, bw.one_time_burst, bw.refill_time),
            (1000, Some(10), 100)
        );
        assert!(bw.is_enabled());
        assert_eq!(rl.ops.unwrap().one_time_burst, None);
        assert!(!rl.is_empty());
    }

    #[test]
    fn test_should_accept_disabled_buckets() {
        let rl =
            parse(r#"{"bandwidth":{"size":0,"refill_time":100},"ops":{"size":5,"refill_time":0}}"#);
        assert!(!rl.bandwidth.unwrap().is_enabled());
        assert!(!rl.ops.unwrap().is_enabled());
    }

    #[test]
    fn test_should_ignore_unknown_fields_like_firecracker() {
        let rl = parse(r#"{"bandwidth":{"size":1,"refill_time":1,"extra":true},"other":1}"#);
        assert_eq!(rl.bandwidth.unwrap().size, 1);
        assert!(rl.ops.is_none());
    }

    #[test]
    fn test_should_reject_missing_required_bucket_fields() {
        let err = serde_json::from_str::<RawTokenBucketConfig>(r#"{"size":1}"#).unwrap_err();
        assert!(err.to_string().starts_with("missing field `refill_time`"));
        assert!(
            serde_json::from_str::<RawTokenBucketConfig>(r#"{"size":-1,"refill_time":1}"#).is_err()
        );
    }

    #[test]
    fn test_should_serialize_firecracker_shape() {
        let rl = parse(r#"{"bandwidth":{"size":1,"refill_time":2}}"#);
        assert_eq!(
            serde_json::to_string(&rl).unwrap(),
            r#"{"bandwidth":{"size":1,"one_time_burst":null,"refill_time":2},"ops":null}"#
        );
        assert!(parse("{}").is_empty());
    }
}
