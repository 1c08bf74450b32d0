//! Firecracker-compatible HTTP API server for squib.
//!
//! `squib-api` speaks the same API that upstream Firecracker serves over a Unix domain socket:
//! same paths, same JSON shapes, same status codes, the same `{"fault_message": "..."}` error
//! body and the same `Server: Firecracker API` response header.
//!
//! # Architecture
//!
//! - [`schemas`]: `Raw*` request shapes and validated types whose only constructor is `TryFrom`
//!   (defined in the `squib-config` crate so the VMM can share them without tokio).
//! - [`action`]: the [`ApiAction`] / [`ApiResponse`] vocabulary posted to the VMM event loop.
//! - [`controller`]: [`RuntimeApiController`]: an `ArcSwap` read mirror (GETs never touch the
//!   action channel), a bounded action channel, phase/profile admission and per-class timeouts.
//! - [`error`]: [`ApiError`], the single place mapping errors to HTTP status + `fault_message`.
//! - [`handlers`]: the axum router and one handler module per Firecracker resource.
//! - [`server`]: the Unix-socket listener, an HTTP/1.1 codec faithful to Firecracker's framing,
//!   and the [`serve`] entry points.
//! - [`replay`]: `--config-file` replay through the same validation and dispatch path as HTTP.
//! - `metrics`: Firecracker's API request counters and API-side latencies, counted by the
//!   request middleware into `squib_core::metrics::METRICS`.
//!
//! Threading: everything here runs on a tokio runtime (a `current_thread` runtime on the API
//! thread is enough). The VMM consumes [`ActionReceiver`] on its own thread.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod controller;
pub mod error;
pub mod handlers;
mod metrics;
pub mod replay;
pub mod schemas;
pub mod server;

pub use action::{ActionClass, ApiAction, ApiResponse};
pub use controller::{
    ActionReceiver, ActionSender, ControllerSnapshot, RuntimeApiController, TimeoutTable,
};
pub use error::{ApiError, FaultMessage, Result};
pub use replay::{ReplayError, parse_config_file, replay_config};
pub use schemas::{InstanceInfo, VersionResponse, VmState};
pub use server::{
    DEFAULT_MAX_PAYLOAD, FIRECRACKER_SERVER_HEADER, InFlight, MAX_MAX_PAYLOAD, MIN_MAX_PAYLOAD,
    ServeOptions, bind_listener, router, serve, serve_bound, serve_tracked,
    unlink_socket_if_exists,
};
