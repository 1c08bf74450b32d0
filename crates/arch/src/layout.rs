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
/// Start of Firecracker's "system memory" region: the MP table, then the ACPI tables
/// (`SYSTEM_MEM_START`, the last KiB of the 640 KiB base memory).
pub const SYSTEM_MEM_START: u64 = 0x9fc00;
/// ACPI RSDP (`RSDP_ADDR`): the start of the BIOS area Linux scans (0xE0000–0xFFFFF); also
/// given to Linux in `boot_params.acpi_rsdp_addr`.
pub const RSDP_ADDR: u64 = 0xe0000;
/// Size of the system memory region, `[SYSTEM_MEM_START, RSDP_ADDR)` (257 KiB).
pub const SYSTEM_MEM_SIZE: u64 = RSDP_ADDR - SYSTEM_MEM_START;
/// Size of the PCIe ECAM window (256 buses × 1 MiB), the last 256 MiB below the IOAPIC.
pub const PCI_MMCONFIG_SIZE: u64 = 256 << 20;
/// Start of the PCIe ECAM window (`PCI_MMCONFIG_START`), announced by the ACPI MCFG.
pub const PCI_MMCONFIG_START: u64 = IOAPIC_ADDR as u64 - PCI_MMCONFIG_SIZE;
/// First GSI handed to devices (IOAPIC pins 0–4 are the legacy ISA ones squib uses).
pub const GSI_LEGACY_START: u32 = 5;
/// Last legacy GSI (IOAPIC pin 23).
pub const GSI_LEGACY_END: u32 = 23;
/// COM1 I/O port base (8 ports).
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 interrupt line.
pub const COM1_GSI: u32 = 4;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// i8042 keyboard interrupt line.
pub const I8042_GSI: u32 = 1;
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
