//! The MMDS data store: one JSON document, its size limit, version and rendering for the guest.
//!
//! [`Mmds`] is shared as `Arc<Mutex<Mmds>>` by the API side (`PUT`/`PATCH`/`GET /mmds`,
//! `PUT /mmds/config`) and the guest-facing network stacks. Object keys are kept sorted, as
//! Firecracker's `serde_json` (built without `preserve_order`) keeps them, so `GET /mmds` and the
//! guest's JSON/IMDS renderings list keys in the same order as Firecracker.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::token::{TokenAuthority, TokenAuthorityState, TokenError};

/// The MMDS version (`PUT /mmds/config` `version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    /// Tokens are optional (checked only for the metrics).
    #[default]
    V1,
    /// Every GET needs a valid session token.
    V2,
}

impl fmt::Display for MmdsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MmdsVersion::V1 => "V1",
            MmdsVersion::V2 => "V2",
        })
    }
}

/// How a guest GET renders its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `Accept: application/json`: the JSON value, compact.
    Json,
    /// Anything else: EC2 IMDS text (object → key list, string → raw).
    Imds,
}

/// Data store errors, with Firecracker's texts (`MmdsDatastoreError`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MmdsError {
    /// The serialized document would exceed the size limit (API: 413).
    #[error("The MMDS patch request doesn't fit.")]
    DataStoreLimitExceeded,
    /// A guest lookup found nothing.
    #[error("The MMDS resource does not exist.")]
    NotFound,
    /// `PATCH /mmds` before any `PUT /mmds`.
    #[error("The MMDS data store is not initialized.")]
    NotInitialized,
    /// Token key generation failed.
    #[error("Token Authority error: {0}")]
    TokenAuthority(#[from] TokenError),
    /// A guest lookup in IMDS format hit a value that is neither an object nor a string.
    #[error("Cannot retrieve value. The value has an unsupported type.")]
    UnsupportedValueType,
}

impl MmdsError {
    /// The HTTP status Firecracker's API answers this error with (413 for the limit, else 400).
    pub fn api_status(&self) -> u16 {
        match self {
            MmdsError::DataStoreLimitExceeded => 413,
            _ => 400,
        }
    }

    /// The API `fault_message` Firecracker gives for this error on `PUT`/`PATCH /mmds`:
    /// `MMDS limit exceeded error: ...` for the limit, `MMDS error: ...` otherwise.
    pub fn api_fault_message(&self) -> String {
        match self {
            MmdsError::DataStoreLimitExceeded => format!("MMDS limit exceeded error: {self}"),
            _ => format!("MMDS error: {self}"),
        }
    }
}

/// The microVM metadata service's state: document, limit, version, IMDS compatibility, tokens.
#[derive(Debug)]
pub struct Mmds {
    version: MmdsVersion,
    data: Value,
    initialized: bool,
    limit: usize,
    imds_compat: bool,
    tokens: TokenAuthority,
}

impl Mmds {
    /// An empty, uninitialized store whose serialized JSON may not exceed `data_store_limit`
    /// bytes (Firecracker: `--mmds-size-limit`, default the API payload limit, 51 200). Tokens
    /// get a fresh random key and the wall clock.
    pub fn new(data_store_limit: usize) -> Result<Self, MmdsError> {
        Ok(Self::with_token_authority(
            data_store_limit,
            TokenAuthority::new()?,
        ))
    }

    /// As [`Mmds::new`] with a given token authority (a restored one, or one on a fake clock).
    pub fn with_token_authority(data_store_limit: usize, tokens: TokenAuthority) -> Self {
        Self {
            version: MmdsVersion::default(),
            data: Value::Null,
            initialized: false,
            limit: data_store_limit,
            imds_compat: false,
            tokens,
        }
    }

    /// Sets the version (`PUT /mmds/config`).
    pub fn set_version(&mut self, version: MmdsVersion) {
        self.version = version;
    }

    /// The version.
    pub fn version(&self) -> MmdsVersion {
        self.version
    }

    /// Sets EC2 IMDS compatibility (always IMDS text, whatever `Accept` says).
    pub fn set_imds_compat(&mut self, imds_compat: bool) {
        self.imds_compat = imds_compat;
    }

    /// EC2 IMDS compatibility.
    pub fn imds_compat(&self) -> bool {
        self.imds_compat
    }

    /// Sets the size limit in bytes of the serialized document.
    pub fn set_data_store_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The size limit in bytes.
    pub fn data_store_limit(&self) -> usize {
        self.limit
    }

    /// Whether a `PUT` has happened.
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// Replaces the document (`PUT /mmds`).
    pub fn put(&mut self, value: Value) -> Result<(), MmdsError> {
        self.check_size(&value)?;
        self.data = sorted(value);
        self.initialized = true;
        Ok(())
    }

    /// Applies an RFC 7396 merge patch (`PATCH /mmds`). The store is unchanged on error.
    pub fn patch(&mut self, patch: &Value) -> Result<(), MmdsError> {
        if !self.initialized {
            return Err(MmdsError::NotInitialized);
        }
        let mut candidate = self.data.clone();
        json_merge_patch(&mut candidate, patch);
        self.check_size(&candidate)?;
        self.data = sorted(candidate);
        Ok(())
    }

    /// The document (`GET /mmds`): `Value::Null` before the first `PUT` (Firecracker's API then
    /// answers `{}`).
    pub fn get(&self) -> &Value {
        &self.data
    }

    fn check_size(&self, value: &Value) -> Result<(), MmdsError> {
        let mut counter = ByteCounter(0);
        // Serializing a `Value` (string keys only) into a counting writer cannot fail.
        if serde_json::to_writer(&mut counter, value).is_err() || counter.0 > self.limit {
            return Err(MmdsError::DataStoreLimitExceeded);
        }
        Ok(())
    }

    /// The guest lookup: `path` is a sanitized absolute path (see [`sanitize_path`]); one
    /// trailing `/` is ignored; the rest is a JSON pointer. Renders JSON for
    /// [`OutputFormat::Json`] unless `imds_compat`, else IMDS text.
    pub fn get_value(&self, path: &str, format: OutputFormat) -> Result<String, MmdsError> {
        let pointer = path.strip_suffix('/').unwrap_or(path);
        let value = self.data.pointer(pointer).ok_or(MmdsError::NotFound)?;
        if self.imds_compat || format == OutputFormat::Imds {
            format_imds(value)
        } else {
            Ok(value.to_string())
        }
    }

    /// Issues a V2 session token valid for `ttl_seconds` (1..=21600).
    pub fn generate_token(&mut self, ttl_seconds: u32) -> Result<String, TokenError> {
        self.tokens.generate_token(ttl_seconds)
    }

    /// Whether `token` was issued by this store's authority and has not expired.
    pub fn is_valid_token(&self, token: &str) -> bool {
        self.tokens.is_valid(token)
    }

    /// Binds tokens to the microVM id (Firecracker's AAD `microvmid=<id>`).
    pub fn set_aad(&mut self, instance_id: &str) {
        self.tokens.set_aad(instance_id);
    }

    /// Replaces the token clock (tests).
    pub fn set_token_clock(&mut self, clock: Arc<dyn Clock>) {
        self.tokens.set_clock(clock);
    }

    /// The token authority's persistent state, for a snapshot.
    pub fn token_state(&self) -> TokenAuthorityState {
        self.tokens.save()
    }

    /// Restores the token authority from a snapshot so tokens issued before it stay valid.
    pub fn restore_token_state(&mut self, state: &TokenAuthorityState) -> Result<(), TokenError> {
        self.tokens.restore(state)
    }
}

/// Collapses every run of `/` in a guest URI path into one (Firecracker's `sanitize_uri`).
pub fn sanitize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}

/// IMDS text: an object lists its keys one per line (members that are objects get a trailing
/// `/`), a string is itself, anything else is unsupported.
fn format_imds(value: &Value) -> Result<String, MmdsError> {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    if v.is_object() {
                        format!("{k}/")
                    } else {
                        k.clone()
                    }
                })
                .collect();
            Ok(keys.join("\n"))
        }
        Value::String(s) => Ok(s.clone()),
        _ => Err(MmdsError::UnsupportedValueType),
    }
}

/// RFC 7396 JSON merge patch of `target` with `patch`, in place.
pub fn json_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(doc) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                doc.remove(key);
            } else {
                json_merge_patch(doc.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The value with every object's keys in sorted order (recursively).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store() -> Mmds {
        Mmds::new(51200).unwrap()
    }

    #[test]
    fn version_display_and_default() {
        assert_eq!(MmdsVersion::V1.to_string(), "V1");
        assert_eq!(MmdsVersion::V2.to_string(), "V2");
        assert_eq!(MmdsVersion::default(), MmdsVersion::V1);
    }

    #[test]
    fn put_patch_get() {
        let mut m = store();
        assert_eq!(m.patch(&json!({"a": 1})), Err(MmdsError::NotInitialized));
        assert_eq!(
            MmdsError::NotInitialized.api_fault_message(),
            "MMDS error: The MMDS data store is not initialized."
        );
        assert_eq!(m.get(), &Value::Null);
        m.put(json!({"user-data": "1522850095", "meta-data": {"iam": "dummy"}}))
            .unwrap();
        assert_eq!(
            m.get().to_string(),
            r#"{"meta-data":{"iam":"dummy"},"user-data":"1522850095"}"#
        );
        m.patch(&json!({"user-data": "10", "new": {"z": 1, "b": 2}}))
            .unwrap();
        assert_eq!(
            m.get().to_string(),
            r#"{"meta-data":{"iam":"dummy"},"new":{"b":2,"z":1},"user-data":"10"}"#
        );
        m.patch(&json!({"meta-data": null})).unwrap();
        assert_eq!(
            m.get().to_string(),
            r#"{"new":{"b":2,"z":1},"user-data":"10"}"#
        );
    }

    #[test]
    fn merge_patch_rfc7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            json_merge_patch(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn size_limit() {
        let mut m = Mmds::new(10).unwrap();
        // {"a":"12"} is exactly 10 bytes.
        m.put(json!({"a": "12"})).unwrap();
        let err = m.put(json!({"a": "123"})).unwrap_err();
        assert_eq!(err, MmdsError::DataStoreLimitExceeded);
        assert_eq!(err.api_status(), 413);
        assert_eq!(
            err.api_fault_message(),
            "MMDS limit exceeded error: The MMDS patch request doesn't fit."
        );
        assert_eq!(
            m.patch(&json!({"b": 1})),
            Err(MmdsError::DataStoreLimitExceeded)
        );
        assert_eq!(m.get(), &json!({"a": "12"}));
    }

    #[test]
    fn rendering() {
        let mut m = store();
        m.put(json!({
            "name": {"first": "John", "second": "Doe"},
            "age": 43,
            "phones": {"home": {"RO": "+401234567", "UK": "+441234567"}, "mobile": "+442345678"},
            "list": [1, "x"]
        }))
        .unwrap();
        assert_eq!(
            m.get_value("", OutputFormat::Imds).unwrap(),
            "age\nlist\nname/\nphones/"
        );
        assert_eq!(
            m.get_value("/", OutputFormat::Imds).unwrap(),
            "age\nlist\nname/\nphones/"
        );
        assert_eq!(
            m.get_value("/phones/", OutputFormat::Imds).unwrap(),
            "home/\nmobile"
        );
        assert_eq!(
            m.get_value("/phones/home/RO", OutputFormat::Imds).unwrap(),
            "+401234567"
        );
        assert_eq!(
            m.get_value("/name", OutputFormat::Json).unwrap(),
            r#"{"first":"John","second":"Doe"}"#
        );
        assert_eq!(
            m.get_value("/name/first", OutputFormat::Json).unwrap(),
            r#""John""#
        );
        assert_eq!(m.get_value("/age", OutputFormat::Json).unwrap(), "43");
        assert_eq!(
            m.get_value("/list/1", OutputFormat::Json).unwrap(),
            r#""x""#
        );
        assert_eq!(
            m.get_value("/age", OutputFormat::Imds),
            Err(MmdsError::UnsupportedValueType)
        );
        assert_eq!(
            m.get_value("/nope", OutputFormat::Imds),
            Err(MmdsError::NotFound)
        );
        assert_eq!(
            m.get_value("/name//", OutputFormat::Imds),
            Err(MmdsError::NotFound)
        );
        m.set_imds_compat(true);
        assert_eq!(
            m.get_value("/name", OutputFormat::Json).unwrap(),
            "first\nsecond"
        );
    }

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_path("/a////b/c//d"), "/a/b/c/d");
        assert_eq!(sanitize_path("///////a//b///c//d"), "/a/b/c/d");
        assert_eq!(sanitize_path("a/"), "a/");
        assert_eq!(sanitize_path("//"), "/");
    }
}
