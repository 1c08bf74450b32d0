//! Hypervisor-neutral core of squib.
//!
//! This crate owns the vocabulary every other crate shares and depends on no other workspace
//! crate:
//!
//! - [`lifecycle`]: the six internal [`LifecyclePhase`]s and their collapse onto the three
//!   Firecracker wire states ([`VmState`]).
//! - [`ids`]: validated identifiers (instance ids, API resource ids).
//! - [`memory`]: [`GuestMemoryMmap`], the one guest-memory type (with dirty-page tracking).
//! - [`profile`]: the host [`CapabilityProfile`], the data through which a hypervisor backend
//!   tells the API what the platform can do (SMT, Ctrl-Alt-Del, vCPU limits). Platform rules are
//!   data here, never `cfg` attributes elsewhere.
//! - [`metrics`]: Firecracker's lock-free metric primitives and the process-wide metric groups
//!   ([`metrics::METRICS`]) every crate counts into.
//!
//! Everything here is plain data with no threads and no I/O.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod profile;

pub use ids::{IdError, InstanceId, validate_resource_id};
pub use lifecycle::{LifecyclePhase, VmState};
pub use memory::{GuestMemoryMmap, GuestRegionMmap};
pub use profile::{Capability, CapabilityProfile, GuestArch};

/// The Firecracker API version squib speaks on the wire (`GET /version`, `--version`).
pub const FIRECRACKER_API_VERSION: &str = "1.17.0-dev";

/// Maximum number of vCPUs any profile may expose (Firecracker's `MAX_SUPPORTED_VCPUS`).
pub const MAX_SUPPORTED_VCPUS: u8 = 32;
