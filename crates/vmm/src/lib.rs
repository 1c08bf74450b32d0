//! squib's VMM core, hypervisor-neutral.
//!
//! - [`vmm`]: [`Vmm`], the state the VMM thread owns (pre-boot resources, the running microVM)
//!   and its event loop, which executes [`squib_config::ApiAction`]s one at a time, as
//!   Firecracker's VMM thread does.
//! - [`builder`]: `InstanceStart`: guest memory, VM, legacy devices, kernel/initrd/command line,
//!   boot structures, vCPU threads.
//! - [`vcpu`]: vCPU threads and their Running/Paused/Exited state machine.
//! - [`exit_code`]: Firecracker's process exit codes.
//!
//! The hypervisor arrives as an `Arc<dyn squib_hv::Hypervisor>`; nothing here names KVM. Devices
//! come from `squib-devices`. No tokio: API requests arrive as [`VmmRequest`]s over a std
//! channel plus an `EventFd`, answered through a callback.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod error;
pub mod exit_code;
pub mod mmio_layout;
pub mod vcpu;
pub mod virtio_devices;
pub mod vmm;

pub use error::StartMicrovmError;
pub use exit_code::ExitCode;
pub use vmm::{BootProtocolChoice, Vmm, VmmObserver, VmmOptions, VmmRequest};
