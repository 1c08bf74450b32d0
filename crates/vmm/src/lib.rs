//! squib's VMM core, hypervisor-neutral.
//!
//! - [`vmm`]: [`Vmm`], the state the VMM thread owns (pre-boot resources, the running microVM)
//!   and its event loop, which executes [`squib_config::ApiAction`]s one at a time, as
//!   Firecracker's VMM thread does.
//! - [`builder`]: `InstanceStart` and snapshot restore, in shared steps: guest memory + VM,
//!   devices (from the configuration or from saved state), kernel/initrd/command line and boot
//!   structures (boot only), vCPU threads (booted or restored).
//! - [`cpu_template`]: the CPU template of a boot (static or custom) and the templated CPUID
//!   and MSRs every vCPU gets.
//! - [`device_manager`]: [`device_manager::DeviceManager`], the one owner of every device (bus
//!   ranges, IRQs, event sources, save/restore).
//! - [`balloon`], [`pmem`], [`hotplug`] (virtio-mem), [`memdev`]: the memory devices (creation, restore, API actions);
//!   [`high_mmio`]: guest-physical space past the 64-bit MMIO gap (virtio-mem, pmem windows);
//!   [`runtime_status`]: statuses devices publish to the API's read mirror (balloon
//!   statistics, hinting, memory hotplug).
//! - [`snapshot`]: `PUT /snapshot/create` and `/snapshot/load`; [`huge_pages`]: the
//!   `huge_pages` rules (page backing of guest memory at boot and restore, Firecracker's
//!   refusals).
//! - [`vcpu`]: vCPU threads and their Running/Paused/Exited state machine.
//! - [`exit_code`]: Firecracker's process exit codes.
//! - [`metrics`]: the metrics sink, Firecracker's metrics line and the periodic flush;
//!   [`logger`]: `PUT /logger` through the binary's [`logger::LoggerControl`].
//!
//! The hypervisor arrives as an `Arc<dyn squib_hv::Hypervisor>`; nothing here names KVM. Devices
//! come from `squib-devices`. No tokio: API requests arrive as [`VmmRequest`]s over a std
//! channel plus an `EventFd`, answered through a callback.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod balloon;
pub mod builder;
pub mod cpu_template;
pub mod device_manager;
pub mod emulation;
pub mod error;
pub mod exit_code;
pub mod high_mmio;
pub mod hotplug;
pub mod huge_pages;
pub mod logger;
pub mod memdev;
pub mod metrics;
pub mod mmds;
pub mod mmio_layout;
pub mod pmem;
pub mod runtime_status;
pub mod snapshot;
pub mod vcpu;
pub mod virtio_devices;
pub mod vmm;

pub use error::{DeviceError, StartMicrovmError, VmmInitError};
pub use exit_code::ExitCode;
pub use logger::LoggerControl;
pub use runtime_status::{RuntimeStatus, StatusSink};
pub use vmm::{BootProtocolChoice, Vmm, VmmObserver, VmmOptions, VmmRequest};
