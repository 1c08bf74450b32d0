//! Validated identifiers.
//!
//! - [`InstanceId`]: `--id`, 1..=64 characters of ASCII alphanumerics or `-` (Firecracker's rule).
//! - API resource ids (`drive_id`, `iface_id`, pmem `id`): ASCII alphanumerics or `_`, checked by
//!   [`validate_resource_id`] with Firecracker's exact messages. squib additionally bounds them to
//!   [`MAX_RESOURCE_ID_LEN`] bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted instance id.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// Longest accepted API resource id (squib's bound; Firecracker has none).
pub const MAX_RESOURCE_ID_LEN: usize = 64;

/// Identifier validation failure. The `Display` text is the wire `fault_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty resource id.
    #[error("The ID cannot be empty.")]
    Empty,
    /// A character outside `[A-Za-z0-9_]`.
    #[error("API Resource IDs can only contain alphanumeric characters and underscores.")]
    InvalidChars,
    /// Longer than [`MAX_RESOURCE_ID_LEN`].
    #[error("API Resource IDs can be at most {MAX_RESOURCE_ID_LEN} characters long.")]
    TooLong,
    /// Invalid `--id`.
    #[error("Invalid instance ID: must be 1..={MAX_INSTANCE_ID_LEN} characters of [A-Za-z0-9-]")]
    InvalidInstanceId,
}

/// Check an API resource id (drive, network interface, pmem).
pub fn validate_resource_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(IdError::InvalidChars);
    }
    if id.len() > MAX_RESOURCE_ID_LEN {
        return Err(IdError::TooLong);
    }
    Ok(())
}

/// A validated microVM instance id (`--id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Firecracker's default instance id.
    pub const DEFAULT: &'static str = "anonymous-instance";

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InstanceId {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl TryFrom<String> for InstanceId {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = !s.is_empty()
            && s.len() <= MAX_INSTANCE_ID_LEN
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::InvalidInstanceId)
        }
    }
}

impl TryFrom<&str> for InstanceId {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::try_from(s.to_owned())
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn test_should_reject_bad_resource_ids_with_firecracker_texts() {
        assert_eq!(
            validate_resource_id("").unwrap_err().to_string(),
            "The ID cannot be empty."
        );
        assert_eq!(
            validate_resource_id("a-b").unwrap_err().to_string(),
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        assert!(validate_resource_id("rootfs_1").is_ok());
        assert_eq!(validate_resource_id(&"a".repeat(65)), Err(IdError::TooLong));
    }

    #[test]
    fn test_should_validate_instance_ids() {
        assert_eq!(InstanceId::default().as_str(), "anonymous-instance");
        assert!(InstanceId::try_from("my-vm-1").is_ok());
        assert!(InstanceId::try_from("my_vm").is_err());
        assert!(InstanceId::try_from("").is_err());
        assert!(InstanceId::try_from("a".repeat(65)).is_err());
    }

    proptest! {
        #[test]
        fn prop_resource_id_never_panics_and_accepts_only_allowed(s in ".{0,80}") {
            let ok = validate_resource_id(&s).is_ok();
            let allowed = !s.is_empty() && s.len() <= MAX_RESOURCE_ID_LEN
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            prop_assert_eq!(ok, allowed);
        }
    }
}
