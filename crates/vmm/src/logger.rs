//! `PUT /logger`: runtime reconfiguration of the process logger.
//!
//! The logger belongs to the binary (it installs the `tracing` subscriber); the VMM reaches it
//! through a [`LoggerControl`] handed in [`crate::VmmOptions::logger`]. Firecracker accepts
//! `PUT /logger` before boot only, any number of times; each call merges into the current
//! settings (see [`LoggerConfig`]).

use std::sync::Arc;

use squib_config::schemas::logger::LoggerConfig;

/// The binary's logger, as the VMM sees it.
pub trait LoggerControl: Send + Sync + std::fmt::Debug {
    /// Applies a `PUT /logger` body. The error is the I/O error of opening `log_path`; the
    /// settings are unchanged then.
    fn update(&self, config: &LoggerConfig) -> std::io::Result<()>;
}

/// `PUT /logger` through `control`. Errors are Firecracker's texts.
pub fn put_logger(
    control: Option<&Arc<dyn LoggerControl>>,
    config: &LoggerConfig,
) -> Result<(), String> {
    let Some(control) = control else {
        return Err(
            "Logger error: runtime logger configuration is not available in this embedding of squib."
                .to_owned(),
        );
    };
    control
        .update(config)
        .map_err(|e| format!("Logger error: Failed to open target file: {e}"))
}
