//! `PUT /metrics` body (`Metrics` in the swagger).
//!
//! Like Firecracker, the metrics body does not deny unknown fields. `properties` is a string map
//! added under `properties` on each metrics line; it is bounded to
//! [`super::limits::MAX_LIST_ENTRIES`] entries of [`MAX_SHORT_STRING_LEN`]-byte keys and values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::limits::{MAX_SHORT_STRING_LEN, check_list_len, check_path, check_string};

/// Raw `PUT /metrics` body (unknown fields ignored, as Firecracker does).
#[derive(Debug, Clone, Deserialize)]
pub struct RawMetricsConfig {
    /// Metrics file or named pipe.
    pub metrics_path: String,
    /// Add the instance id as a top-level `id` field.
    #[serde(default)]
    pub emit_id: bool,
    /// Operator-defined properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Validated metrics configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Metrics file or named pipe.
    pub metrics_path: String,
    /// Add the instance id as a top-level `id` field.
    pub emit_id: bool,
    /// Operator-defined properties.
    pub properties: BTreeMap<String, String>,
}

impl MetricsConfig {
    /// The configuration `--metrics-path` stands for (no `id`, no properties).
    pub fn from_path(metrics_path: impl Into<String>) -> Self {
        Self {
            metrics_path: metrics_path.into(),
            emit_id: false,
            properties: BTreeMap::new(),
        }
    }
}

impl TryFrom<RawMetricsConfig> for MetricsConfig {
    type Error = String;

    fn try_from(raw: RawMetricsConfig) -> Result<Self, Self::Error> {
        check_path("metrics_path", &raw.metrics_path)?;
        check_list_len("properties", raw.properties.len())?;
        for (k, v) in &raw.properties {
            check_string("properties key", k, MAX_SHORT_STRING_LEN)?;
            check_string("properties value", v, MAX_SHORT_STRING_LEN)?;
        }
        Ok(Self {
            metrics_path: raw.metrics_path,
            emit_id: raw.emit_id,
            properties: raw.properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<MetricsConfig, String> {
        let raw: RawMetricsConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        MetricsConfig::try_from(raw)
    }

    #[test]
    fn test_should_accept_metrics() {
        let m = put(r#"{"metrics_path":"/tmp/m","emit_id":true,"properties":{"a":"b"}}"#).unwrap();
        assert!(m.emit_id);
        assert_eq!(m.properties["a"], "b");
        assert!(
            !put(r#"{"metrics_path":"/tmp/m","unknown":1}"#)
                .unwrap()
                .emit_id
        );
    }

    #[test]
    fn test_should_reject_bad_metrics() {
        assert_eq!(
            put(r#"{"metrics_path":""}"#).unwrap_err(),
            "Invalid metrics_path: must not be empty"
        );
        assert!(
            put("{}")
                .unwrap_err()
                .starts_with("missing field `metrics_path`")
        );
        assert!(put(r#"{"metrics_path":"/m","properties":{"a":1}}"#).is_err());
        let props: BTreeMap<String, String> =
            (0..257).map(|i| (i.to_string(), String::new())).collect();
        let json = serde_json::json!({"metrics_path": "/m", "properties": props}).to_string();
        assert_eq!(
            put(&json).unwrap_err(),
            "Invalid properties: exceeds 256 entries (got 257)"
        );
        let json = serde_json::json!({"metrics_path": "/m", "properties": {"k": "v".repeat(257)}})
            .to_string();
        assert_eq!(
            put(&json).unwrap_err(),
            "Invalid properties value: exceeds 256 bytes (got 257 bytes)"
        );
    }
}
