//! Request and response bodies of Firecracker's API, one module per resource.
//!
//! Conventions (every module follows them):
//! - `Raw<Name>`: `Deserialize` + `#[serde(deny_unknown_fields)]` (except where Firecracker itself
//!   accepts unknown fields: token buckets and rate limiters, the metrics body, and the snapshot
//!   override objects), field names exactly as on the wire.
//! - `<Name>`: the validated value. Public fields, `#[non_exhaustive]` so it can only be built
//!   through `TryFrom<Raw<Name>>` (`type Error = String`, the error being the `fault_message`
//!   text). `Serialize` renders Firecracker's `GET` / `GET /vm/config` shape.
//! - Every string and collection is bounded; numbers carry their Firecracker ranges.

pub mod actions;
pub mod balloon;
pub mod boot_source;
pub mod cpu_config;
pub mod drive;
pub mod entropy;
pub mod hotplug_memory;
pub mod instance;
pub mod limits;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod mmds;
pub mod network_interface;
pub mod pmem;
pub mod rate_limiter;
pub mod serial;
pub mod snapshot;
pub mod vm;
pub mod vsock;

pub use instance::{InstanceInfo, VersionResponse, VmState};
