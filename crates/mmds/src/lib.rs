//! Firecracker's microVM metadata service (MMDS) for squib.
//!
//! This crate owns everything MMDS does, without knowing about a hypervisor or a device model:
//!
//! - [`store`]: the [`Mmds`] data store (a JSON document with a byte-size limit, `PUT` replaces,
//!   `PATCH` is an RFC 7396 merge patch), the MMDS version (V1/V2), `imds_compat`, and the
//!   guest-side lookup and rendering (JSON or EC2 IMDS text).
//! - [`token`]: V2 session tokens (`PUT /latest/api/token`), bound to an expiry and authenticated
//!   with HMAC-SHA256 under a per-instance key that can be saved into and restored from a
//!   snapshot.
//! - [`http`] and [`respond`]: the HTTP/1.x request parser (Firecracker's `micro_http` texts and
//!   quirks) and the MMDS request semantics (V1/V2 rules, 401/404/405 texts).
//! - [`wire`], [`tcp`] and [`stack`]: the guest-facing network stack (Firecracker's "dumbo"):
//!   Ethernet II, ARP, IPv4, a passive-open TCP with retransmission and eviction, and
//!   [`MmdsNetworkStack`], the object a virtio-net device calls for every guest TX frame
//!   ([`MmdsNetworkStack::detour_frame`]) and polls for frames to inject into the guest RX queue
//!   ([`MmdsNetworkStack::write_next_frame`]).
//! - [`metrics`]: Firecracker's `mmds` metric group.
//! - [`clock`]: the injected time source ([`Clock`]); tests use [`ManualClock`].
//!
//! # Threading
//!
//! The data store is shared as `Arc<Mutex<Mmds>>` between the API side (PUT/PATCH/GET `/mmds`)
//! and every network stack (one per interface MMDS is enabled on). A network stack is owned by
//! one device and used from the VMM thread only; it locks the store only while it answers a
//! complete HTTP request. Metrics are lock-free atomics.
//!
//! # Guest input is hostile
//!
//! Every parser in this crate bounds its work by the input length, never indexes past a checked
//! length, never allocates a size a guest chooses, and never panics (property-tested in
//! `tests/prop_frames.rs`). Guest-triggerable events are counted in metrics, not logged.
#![forbid(unsafe_code)]

pub mod clock;
pub mod http;
pub mod metrics;
pub mod respond;
pub mod stack;
pub mod store;
pub mod tcp;
pub mod token;
pub mod wire;

pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use metrics::{MmdsMetrics, MmdsMetricsSnapshot};
pub use stack::{
    DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR, DEFAULT_TCP_PORT, MmdsNetworkStack, MmdsNetworkStackState,
};
pub use store::{Mmds, MmdsError, MmdsVersion, OutputFormat, json_merge_patch};
pub use token::{
    MAX_TOKEN_TTL_SECONDS, MIN_TOKEN_TTL_SECONDS, TokenAuthority, TokenAuthorityState, TokenError,
};
