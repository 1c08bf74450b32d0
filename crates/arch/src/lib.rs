//! x86_64 guest setup for squib, computed against guest memory.
//!
//! This crate owns Firecracker's x86_64 boot layout and everything a VMM writes into guest
//! memory or computes before the first `KVM_RUN`, with no hypervisor types:
//!
//! - [`layout`]: the guest-physical memory map constants.
//! - [`memory`]: RAM regions for a given size (split around the 3 GiB MMIO gap).
//! - [`loader`]: ELF `vmlinux` (64-bit Linux boot protocol or PVH) and bzImage loading, initrd
//!   placement, the kernel command line.
//! - [`boot`]: boot-protocol data in guest memory: zero page with e820 map, PVH start info,
//!   GDT/IDT, identity page tables; [`boot::configure_system`] writes them all.
//! - [`mptable`]: the Intel MP table announcing every vCPU to non-ACPI SMP guests.
//! - [`acpi`]: Firecracker's ACPI tables (RSDP, XSDT, FADT, MADT, MCFG, DSDT with the
//!   virtio-mmio devices, COM1 and the PS/2 controller).
//! - [`cpuid`]: normalisation of the hypervisor's supported CPUID per vCPU.
//! - [`regs`]: the neutral [`squib_hv::X86BootState`] for each vCPU.
//! - [`template`]: CPU templates (custom and Firecracker's static ones) as bit filters over the
//!   neutral CPUID and MSR lists.
//!
//! # Threading and safety
//!
//! Plain functions over a `GuestMemoryMmap`; no threads, no global state, no `unsafe`. Kernel
//! images and sizes are untrusted input: every failure is an [`ArchError`], never a panic.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod error;
pub mod gdt;
pub mod layout;
pub mod loader;
pub mod memory;
pub mod mptable;
pub mod pvm;
pub mod regs;
pub mod template;

pub use acpi::{MmioDeviceInfo, setup_acpi_tables};
pub use boot::{BootConfig, configure_system};
pub use cpuid::{CpuidConfig, normalize_cpuid};
pub use error::ArchError;
pub use loader::{
    BootProtocol, InitrdConfig, KernelEntry, KernelFormat, LoadedKernel, load_initrd, load_kernel,
    write_cmdline,
};
pub use memory::{arch_memory_regions, create_guest_memory};
pub use regs::{BootStateConfig, boot_msrs, x86_boot_state};

/// Firecracker's default kernel command line, used when `boot_args` is absent.
pub const DEFAULT_BOOT_ARGS: &str = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";
