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
        return Err(format!(
            "Invalid {field}: exceeds {MAX_PATH_LEN} bytes (got {} bytes)",
            path.len()
        ));
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

/// Check a free-form string: at most `max` bytes, no NUL.
pub fn check_string(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "Invalid {field}: exceeds {max} bytes (got {} bytes)",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("Invalid {field}: must not contain NUL bytes"));
    }
    Ok(())
}

/// Check a list length against [`MAX_LIST_ENTRIES`].
pub fn check_list_len(field: &str, len: usize) -> Result<(), String> {
    if len > MAX_LIST_ENTRIES {
        return Err(format!(
            "Invalid {field}: exceeds {MAX_LIST_ENTRIES} entries (got {len})"
        ));
    }
    Ok(())
}

/// Check an API resource id (drive, pmem, network interface) with Firecracker's texts.
pub fn check_resource_id(id: &str) -> Result<(), String> {
    squib_core::validate_resource_id(id).map_err(|e| e.to_string())
}
