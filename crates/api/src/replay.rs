//! `--config-file` replay.
//!
//! A config file is Firecracker's `VmmConfig` document (kebab-case keys, unknown top-level keys
//! ignored). Its members are validated with the same `TryFrom` rules as the HTTP bodies and
//! dispatched, in Firecracker's application order, through the same
//! [`RuntimeApiController::dispatch`] path as HTTP requests — so admission, stateful checks,
//! VMM errors and the resulting mirror are identical. `InstanceStart` follows when asked to.

use std::path::{Path, PathBuf};

use squib_config::{action::ApiAction, schemas::actions::InstanceAction, vm_config::RawConfigFile};

use crate::{controller::RuntimeApiController, error::ApiError};

/// Largest config file read (it is not subject to the HTTP payload limit, but is bounded).
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a config file could not be replayed. Each message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("failed to read --config-file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_FILE_BYTES`].
    #[error("failed to read --config-file {path}: larger than {MAX_CONFIG_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not a valid config document.
    #[error("failed to parse --config-file: {0}")]
    Parse(String),
    /// A member failed validation.
    #[error("--config-file member `{member}` rejected: {message}")]
    Invalid {
        /// Member name (`machine-config`, `drives`, ...).
        member: String,
        /// The validation `fault_message`.
        message: String,
    },
    /// Dispatching a member failed (admission, VMM fault, timeout).
    #[error("--config-file member `{member}` failed: {source}")]
    Dispatch {
        /// Member name, or `InstanceStart`.
        member: String,
        /// The API error (its text is the `fault_message` an HTTP client would get).
        source: ApiError,
    },
}

/// Read and parse a config file.
pub fn parse_config_file(path: &Path) -> Result<RawConfigFile, ReplayError> {
    let text = read_bounded(path)?;
    let mut config = parse_config_bytes(&text)?;
    // `cpu-config` may name a template file (Firecracker); resolve it relative to the cwd. It
    // is validated with the other members, for the guest architecture.
    if let Some(template) = config.cpu_config_path().map(PathBuf::from) {
        let bytes = read_bounded(&template)?;
        let contents = String::from_utf8(bytes).map_err(|e| ReplayError::Read {
            path: template.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        config.resolve_cpu_config(contents);
    }
    Ok(config)
}

/// Reads a whole file of at most [`MAX_CONFIG_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, ReplayError> {
    let read_err = |source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(ReplayError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// Parse a config document from bytes.
pub fn parse_config_bytes(bytes: &[u8]) -> Result<RawConfigFile, ReplayError> {
    serde_json::from_slice(bytes).map_err(|e| ReplayError::Parse(e.to_string()))
}

/// Validate every member and dispatch it through `controller`, in Firecracker's order; then
/// `InstanceStart` if `start_microvm`. Stops at the first failure.
pub async fn replay_config(
    controller: &RuntimeApiController,
    config: RawConfigFile,
    start_microvm: bool,
) -> Result<(), ReplayError> {
    let actions = config
        .actions_in_order(controller.snapshot().profile.arch)
        .map_err(|(member, message)| ReplayError::Invalid { member, message })?;
    for (member, action) in actions {
        dispatch(controller, member, action).await?;
    }
    if start_microvm {
        dispatch(
            controller,
            "InstanceStart",
            ApiAction::Instance(InstanceAction::InstanceStart),
        )
        .await?;
    }
    Ok(())
}

async fn dispatch(
    controller: &RuntimeApiController,
    member: &str,
    action: ApiAction,
) -> Result<(), ReplayError> {
    tracing::debug!("--config-file: applying {member}");
    controller
        .dispatch(action)
        .await
        .map(drop)
        .map_err(|source| ReplayError::Dispatch {
            member: member.to_owned(),
            source,
        })
}
