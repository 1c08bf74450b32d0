//! Firecracker request/response schemas, one module per resource.
//!
//! Re-exported from `squib-config` (see that crate for the conventions): `Raw*` types off the
//! wire, validated types built only through `TryFrom`.

pub use squib_config::schemas::*;
pub use squib_config::vm_config;
