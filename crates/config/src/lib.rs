//! The Firecracker API vocabulary as plain data.
//!
//! This crate owns everything that both the HTTP edge (`squib-api`) and the VMM need to agree on,
//! without pulling in tokio, axum or any hypervisor crate:
//!
//! - [`schemas`]: one module per API resource. Each has `Raw*` types (serde, `deny_unknown_fields`,
//!   straight off the wire or out of a `--config-file`) and validated types whose only
//!   constructor is `TryFrom<Raw*>`. The validated types serialize to Firecracker's `GET` shapes.
//! - [`action`]: [`ApiAction`] (one variant per mutating API operation), [`ActionClass`] (timeout
//!   classes), [`ApiResponse`] (what the VMM answers) and the phase/profile admission rules.
//! - [`vm_config`]: the full microVM configuration document (`GET /vm/config`, `--config-file`)
//!   and the one function that applies an action to it.
//!
//! No threads, no I/O: validation here is purely syntactic/semantic on the values. Host checks
//! (files exist, taps open) belong to the VMM.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod schemas;
pub mod vm_config;

pub use action::{ActionClass, AdmissionError, ApiAction, ApiResponse};
