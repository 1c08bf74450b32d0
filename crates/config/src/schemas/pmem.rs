//! `/pmem/{id}` PUT and PATCH bodies (`Pmem` / `PartialPmem` in the swagger): virtio-pmem.
//!
//! The PATCH body accepts the id as Firecracker's `id` or as `pmem_id` (the seed spec's
//! spelling); both name the same field.

use serde::{Deserialize, Serialize};

use super::limits::{check_path, check_resource_id};
use super::rate_limiter::{RateLimiterConfig, RawRateLimiterConfig, convert_opt};

/// Raw `PUT /pmem/{id}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPmemConfig {
    /// Device id.
    #[serde(alias = "pmem_id")]
    pub id: String,
    /// Backing file.
    pub path_on_host: String,
    /// Root device flag (`root=/dev/pmemN`).
    #[serde(default)]
    pub root_device: bool,
    /// Map the backing file read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Rate limiter.
    #[serde(default)]
    pub rate_limiter: Option<RawRateLimiterConfig>,
}

/// Validated pmem device. Serializes
/// `{"id":..,"path_on_host":..,"root_device":..,"read_only":..,"rate_limiter":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PmemConfig {
    /// Device id.
    pub id: String,
    /// Backing file.
    pub path_on_host: String,
    /// Root device flag.
    pub root_device: bool,
    /// Read-only mapping.
    pub read_only: bool,
    /// Rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl PmemConfig {
    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl TryFrom<RawPmemConfig> for PmemConfig {
    type Error = String;

    fn try_from(raw: RawPmemConfig) -> Result<Self, Self::Error> {
        check_resource_id(&raw.id)?;
        check_path("path_on_host", &raw.path_on_host)?;
        Ok(Self {
            id: raw.id,
            path_on_host: raw.path_on_host,
            root_device: raw.root_device,
            read_only: raw.read_only,
            rate_limiter: convert_opt(raw.rate_limiter)?,
        })
    }
}

/// Raw `PATCH /pmem/{id}` body: `id` (alias `pmem_id`) plus an optional rate limiter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPmemUpdate {
    /// Device id (`id` or `pmem_id` on the wire).
    #[serde(alias = "pmem_id")]
    pub id: String,
    /// New rate limiter.
    #[serde(default)]
    pub rate_limiter: Option<RawRateLimiterConfig>,
}

/// Validated `PATCH /pmem/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PmemUpdate {
    /// Device id.
    pub id: String,
    /// New rate limiter.
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl PmemUpdate {
    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl TryFrom<RawPmemUpdate> for PmemUpdate {
    type Error = String;

    fn try_from(raw: RawPmemUpdate) -> Result<Self, Self::Error> {
        check_resource_id(&raw.id)?;
        Ok(Self {
            id: raw.id,
            rate_limiter: convert_opt(raw.rate_limiter)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<PmemConfig, String> {
        let raw: RawPmemConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        PmemConfig::try_from(raw)
    }

    fn patch(json: &str) -> Result<PmemUpdate, String> {
        let raw: RawPmemUpdate = serde_json::from_str(json).map_err(|e| e.to_string())?;
        PmemUpdate::try_from(raw)
    }

    #[test]
    fn test_should_accept_and_serialize_pmem() {
        let p = put(r#"{"id":"pmem0","path_on_host":"/img","root_device":true}"#).unwrap();
        assert_eq!(p.id(), "pmem0");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"id":"pmem0","path_on_host":"/img","root_device":true,"read_only":false,"rate_limiter":null}"#
        );
    }

    #[test]
    fn test_should_reject_bad_pmem() {
        assert_eq!(
            put(r#"{"id":"p-0","path_on_host":"/img"}"#).unwrap_err(),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        assert_eq!(
            put(r#"{"id":"p0","path_on_host":""}"#).unwrap_err(),
            "Invalid path_on_host: must not be empty"
        );
        assert!(
            put(r#"{"id":"p0"}"#)
                .unwrap_err()
                .starts_with("missing field `path_on_host`")
        );
    }

    #[test]
    fn test_should_accept_patch_with_pmem_id_or_id() {
        assert_eq!(patch(r#"{"pmem_id":"pmem0"}"#).unwrap().id(), "pmem0");
        let u = patch(r#"{"id":"pmem0","rate_limiter":{"bandwidth":{"size":1,"refill_time":1}}}"#)
            .unwrap();
        assert!(u.rate_limiter.unwrap().bandwidth.is_some());
        assert!(
            patch(r#"{"id":"pmem0","path_on_host":"/x"}"#)
                .unwrap_err()
                .starts_with("unknown field")
        );
        assert_eq!(
            patch(r#"{"id":""}"#).unwrap_err(),
            "The ID cannot be empty."
        );
    }
}
