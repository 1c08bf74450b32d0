//! Firecracker's x86_64 guest-physical memory layout (`arch/x86_64/layout.rs`).
//!
//! Constants only. See firecracker-notes §6.3 for the picture.

/// Boot GDT.
pub const BOOT_GDT_OFFSET: u64 = 0x500;
/// Boot IDT.
pub const BOOT_IDT_OFFSET: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const MODLIST_START: u64 = 0x6040;
/// PVH memory map (shares the page with the zero page; only one protocol is used).
pub const MEMMAP_START: u64 = 0x7000;
/// Linux boot protocol zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// PML4 of the boot identity page tables.
pub const PML4_START: u64 = 0x9000;
/// PDPT of the boot identity page tables.
pub const PDPTE_START: u64 = 0xa000;
/// PD of the boot identity page tables (512 × 2 MiB = first 1 GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum command-line size including the NUL terminator.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA / "system memory" reserved up to 1 MiB.
pub const EBDA_START: u64 = 0x9fc00;
/// Intel MP table (last KiB of the 640 KiB base memory, inside the reserved EBDA range).
pub const MPTABLE_START: u64 = 0x9fc00;
/// Bytes available to the MP table.
pub const MPTABLE_MAX_SIZE: usize = 0x400;
/// Start of high memory: kernel load address, RAM resumes here in the e820 map.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap (3 GiB).
pub const MMIO32_MEM_START: u64 = 0xc000_0000;
/// Size of the 32-bit MMIO gap (1 GiB).
pub const MMIO32_MEM_SIZE: u64 = 0x4000_0000;
/// First address past 32 bits, where RAM above the gap continues.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// IOAPIC MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// KVM TSS (three pages).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Page size.
pub const PAGE_SIZE: u64 = 0x1000;
/// e820 RAM type.
pub const E820_RAM: u32 = 1;
/// e820 reserved type.
pub const E820_RESERVED: u32 = 2;
/// Start of the 64-bit MMIO gap (PCI 64-bit BARs), 256 GiB.
pub const MMIO64_MEM_START: u64 = 256 << 30;
/// Size of the 64-bit MMIO gap.
pub const MMIO64_MEM_SIZE: u64 = 256 << 30;
/// First address past the 64-bit MMIO gap (512 GiB): the virtio-mem region, then pmem windows.
pub const FIRST_ADDR_PAST_64BITS_MMIO: u64 = MMIO64_MEM_START + MMIO64_MEM_SIZE;
/// Size of the area past the 64-bit MMIO gap.
pub const PAST_64BITS_MMIO_SIZE: u64 = 512 << 30;
