//! Bounds shared by all schemas. Untrusted input is bounded everywhere.

/// Longest host path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest Unix-domain socket path (`sun_path` is 108 bytes including the NUL).
pub const MAX_UDS_PATH_LEN: usize = 107;
/// Longest kernel command line on x86_64, including the terminating NUL (Firecracker).
pub const MAX_BOOT_ARGS_LEN: usize = 2048;
/// Longest free-form short string (cpu template names, log module filter, ...).
pub const MAX_SHORT_STRING_LEN: usize = 256;
/// Most entries in any configuration list (drives, interfaces, pmem, modifiers...).
pub const MAX_LIST_ENTRIES: usize = 256;

/// Check a host path: non-empty, no NUL, at most [`MAX_PATH_LEN`] bytes.
pub fn check_path(field: &str, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!("Invalid {field}: must not be empty"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("Invalid {field}: exceeds {MAX_PATH_LEN} bytes (got {} bytes)", path.len()));
    }
    if path.contains('\0') {
        return Err(format!("Invalid {field}: must not contain NUL bytes"));
    }
    Ok(())
}

/// Check a Unix-domain socket path (as [`check_path`], bounded by [`MAX_UDS_PATH_LEN`]).
pub fn check_uds_path(field: &str, path: &str) -> Result<(), String> {
    check_path(field, path)?;
    if path.len() > MAX_UDS_PATH_LEN {
        return Err(format!(
            "Invalid {field}: exceeds {MAX_UDS_PATH_LEN} bytes (got {} bytes)",
            path.len()
        ));
    }
    Ok(())
}
