//! Device models for squib that never see a hypervisor.
//!
//! This crate owns the emulated hardware a Firecracker-compatible microVM exposes besides virtio,
//! plus the small building blocks those devices share:
//!
//! - [`bus`]: the [`BusDevice`] trait and the [`Bus`] address map used for both the port-I/O
//!   and the MMIO bus. A vCPU exit is dispatched with [`Bus::read`] / [`Bus::write`].
//! - [`interrupt`]: [`IrqLine`], an edge-triggered interrupt line. Production code uses
//!   [`EventFdIrq`] (the VMM registers the eventfd as a KVM irqfd); tests use [`CountingIrq`].
//! - [`rate_limiter`]: Firecracker's token bucket ([`TokenBucket`], [`RateLimiter`]) driven by an
//!   injected [`Clock`], so it works with a fake clock in tests and tells an event loop how long
//!   to sleep instead of owning a timer fd.
//! - [`legacy`]: the 8250 UART on COM1 ([`SerialDevice`], a wrapper over `vm_superio::Serial`) and
//!   the i8042 keyboard controller ([`I8042Device`]: reset line and Ctrl-Alt-Del).
//! - [`pseudo`]: the boot-timer MMIO device ([`BootTimer`]) that prints `Guest-boot-time = ...`.
//! - [`metrics`] and [`log`]: Firecracker-shaped counters and rate-limited logging for
//!   guest-triggerable paths.
//! - [`virtio`]: virtio 1.x device models ([`virtio::Block`], [`virtio::Entropy`],
//!   [`virtio::Vsock`] with its Unix-socket muxer, [`virtio::Net`] on a tap with its MMDS hook [`virtio::FrameInterceptor`]), the
//!   virtio-mmio transport ([`virtio::MmioTransport`]) and an `event-manager` subscriber to run
//!   them in the VMM's event loop.
//!
//! # Model
//!
//! Every device follows vm-superio's pattern: a synchronous state machine with its side effects
//! (interrupt lines, output sinks, eventfds, clocks) injected at construction and its state
//! readable as plain data. No device spawns a thread, performs blocking I/O of its own accord or
//! knows which hypervisor runs the guest.
//!
//! # Threading
//!
//! Devices are `Send` and are used behind `Arc<Mutex<_>>` (see [`Bus`]); one lock acquisition per
//! guest access. vCPU threads call into devices through the bus; the VMM thread calls the host
//! side (for example [`SerialDevice::enqueue_input`] or [`I8042Device::trigger_ctrl_alt_del`])
//! through the same mutex. Metrics are lock-free atomics that a metrics writer may serialize
//! from any thread.
//!
//! # Guest input is hostile
//!
//! Nothing in this crate panics on a guest-controlled address, size or value; unexpected accesses
//! are counted in the device's `missed_*` metrics and ignored. Log lines a guest can trigger go
//! through [`log::RateLimitedLog`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bus;
pub mod interrupt;
pub mod legacy;
pub mod log;
pub mod metrics;
pub mod persist;
pub mod pseudo;
pub mod rate_limiter;
pub mod testing;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError, BusRange};
pub use interrupt::{CountingIrq, EventFdIrq, IrqLine};
pub use legacy::i8042::{I8042Device, I8042Error, I8042State};
pub use legacy::serial::{SerialDevice, SerialError};
pub use pseudo::boot_timer::{BootTime, BootTimer, BootTimestamp};
pub use rate_limiter::{
    BucketReduction, BucketUpdate, Clock, FakeClock, MonotonicClock, RateLimiter, TokenBucket,
    TokenType,
};
