//! Hypervisor-neutral traits and types for squib.
//!
//! This crate owns the contract between the VMM and a hypervisor backend. It names no backend
//! types (no `kvm-*`, no Hypervisor.framework), so `squib-kvm` today and an HVF (aarch64) backend
//! later implement the same object-safe traits:
//!
//! - [`Hypervisor`]: one per process; reports a [`CapabilityProfile`] and [`HvCapabilities`] and
//!   creates VMs.
//! - [`Vm`]: guest memory, vCPU creation, interrupt lines, optional irqfd/ioeventfd.
//! - [`Vcpu`]: `run()` with the **callback-completion contract** (crosvm / Cloud Hypervisor
//!   `VmOps` style): the backend completes every port-I/O and MMIO access inside `run` by calling
//!   the VMM's [`VcpuIo`] and only returns high-level [`VcpuExit`]s.
//! - [`VcpuKicker`]: a race-free "make `run` return [`VcpuExit::Interrupted`]" handle.
//! - [`x86`]: the x86_64 extension traits ([`HypervisorX86`], [`VcpuX86`]) and the neutral
//!   [`X86BootState`] whose values `squib-arch` computes and the backend merely applies.
//!
//! # Threading
//!
//! A [`Hypervisor`] and a [`Vm`] are `Send + Sync` and shared through `Arc`. A [`Vcpu`] is
//! `Send` but must be **created, configured and run on one thread, its vCPU thread**: HVF binds a
//! vCPU to the thread that created it, so a VMM written against these traits always calls
//! [`Vm::create_vcpu`], the arch setup and [`Vcpu::run`] from the same thread. Only the
//! [`VcpuKicker`] (`Send + Sync`) crosses threads.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod exit;
pub mod traits;
pub mod x86;

pub use error::HvError;
pub use exit::{InternalError, InternalErrorKind, SystemEventKind, VcpuExit, VcpuIo};
pub use squib_core::CapabilityProfile;
pub use squib_core::{GuestMemoryMmap, GuestRegionMmap};
pub use traits::{
    CapabilityModifier, DataMatch, HvCapabilities, Hypervisor, IoEventAddress, RegionSlot, Vcpu,
    VcpuKicker, VcpuStateBlob, Vm, VmConfig, VmStateBlob,
};
pub use x86::{
    CpuidEntry, HypervisorX86, LapicDeliveryMode, LapicLints, MsrEntry, VcpuX86, X86BootState,
    X86DescriptorTable, X86Fpu, X86Regs, X86Segment, X86SpecialRegs,
};
