//! Boot-protocol data in guest memory: e820 map, zero page, PVH start info, and
//! [`configure_system`], which writes everything a boot needs.
//!
//! e820 (both protocols): `[0, 0x9fc00)` RAM, `[0x9fc00, 1 MiB)` reserved (MP table, ACPI tables
//! and the RSDP), the PCIe ECAM window the ACPI MCFG announces reserved (Firecracker's entry, in
//! its place), then RAM from 1 MiB to the end of the first region and every further region (above
//! the 3 GiB MMIO gap). The zero page's `acpi_rsdp_addr` is [`RSDP_ADDR`], as in Firecracker (the
//! PVH start info leaves `rsdp_paddr` 0, as Firecracker does: the guest scans for it).

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use squib_core::GuestMemoryMmap;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::ArchError;
use crate::gdt::{write_gdt_idt, write_page_tables};
use crate::layout::{
    CMDLINE_START, E820_RAM, E820_RESERVED, EBDA_START, HIMEM_START, MEMMAP_START, MODLIST_START,
    PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START, PVH_INFO_START, RSDP_ADDR, ZERO_PAGE_START,
};
use crate::loader::{BootProtocol, InitrdConfig};
use crate::mptable::setup_mptable;

/// `boot_flag` magic.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `HdrS`.
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: undefined loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Kernel alignment advertised for ELF kernels (16 MiB).
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// PVH `hvm_start_info` magic.
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// One e820 / PVH memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The guest's memory map for `mem`.
pub fn e820_entries(mem: &GuestMemoryMmap) -> Vec<E820Entry> {
    let mut entries = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: PCI_MMCONFIG_START,
            size: PCI_MMCONFIG_SIZE,
            kind: E820_RESERVED,
        },
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        let from = start.max(HIMEM_START);
        if end > from {
            entries.push(E820Entry {
                addr: from,
                size: end - from,
                kind: E820_RAM,
            });
        }
    }
    entries
}

/// What the boot-protocol writers need besides guest memory.
#[derive(Debug, Clone, Copy)]
pub struct BootConfig {
    /// Entry protocol.
    pub protocol: BootProtocol,
    /// Command-line size including the NUL (from [`crate::write_cmdline`]).
    pub cmdline_size: usize,
    /// Loaded initrd, if any.
    pub initrd: Option<InitrdConfig>,
    /// The bzImage setup header, if the kernel was a bzImage.
    pub setup_header: Option<setup_header>,
    /// Number of vCPUs announced in the MP table.
    pub vcpu_count: u8,
}

/// Builds the Linux boot protocol zero page.
pub fn build_zero_page(mem: &GuestMemoryMmap, cfg: &BootConfig) -> Result<boot_params, ArchError> {
    let mut params = boot_params::default();
    if let Some(hdr) = cfg.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.acpi_rsdp_addr = RSDP_ADDR;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = u32::try_from(CMDLINE_START).unwrap_or_default();
    params.hdr.cmdline_size = u32::try_from(cfg.cmdline_size).unwrap_or_default();
    if let Some(initrd) = cfg.initrd {
        params.hdr.ramdisk_image = u32::try_from(initrd.address.raw_value())
            .map_err(|_| ArchError::InitrdTooLarge { size: initrd.size })?;
        params.hdr.ramdisk_size = u32::try_from(initrd.size)
            .map_err(|_| ArchError::InitrdTooLarge { size: initrd.size })?;
    }
    let entries = e820_entries(mem);
    for (slot, e) in params.e820_table.iter_mut().zip(&entries) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = u8::try_from(entries.len().min(params.e820_table.len())).unwrap_or(0);
    Ok(params)
}

/// Writes the PVH `hvm_start_info`, memory map and module list.
pub fn write_pvh_info(mem: &GuestMemoryMmap, cfg: &BootConfig) -> Result<(), ArchError> {
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: MEMMAP_START,
        ..Default::default()
    };
    if let Some(initrd) = cfg.initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.address.raw_value(),
            size: initrd.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(MODLIST_START))
            .map_err(ArchError::mem(MODLIST_START))?;
        info.nr_modules = 1;
        info.modlist_paddr = MODLIST_START;
    }
    let entries = e820_entries(mem);
    let mut addr = GuestAddress(MEMMAP_START);
    for e in &entries {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        mem.write_obj(entry, addr)
            .map_err(ArchError::mem(addr.raw_value()))?;
        addr = addr.unchecked_add(std::mem::size_of::<hvm_memmap_table_entry>() as u64);
    }
    info.memmap_entries = u32::try_from(entries.len()).unwrap_or(0);
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(ArchError::mem(PVH_INFO_START))
}

/// Writes all boot data for `cfg`: GDT/IDT, page tables (Linux boot), zero page or PVH start
/// info, and the MP table. The kernel, initrd and command line must already be loaded.
pub fn configure_system(mem: &GuestMemoryMmap, cfg: &BootConfig) -> Result<(), ArchError> {
    write_gdt_idt(mem, cfg.protocol)?;
    match cfg.protocol {
        BootProtocol::LinuxBoot => {
            write_page_tables(mem)?;
            let params = build_zero_page(mem, cfg)?;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
                .map_err(ArchError::mem(ZERO_PAGE_START))?;
        }
        BootProtocol::Pvh => write_pvh_info(mem, cfg)?,
    }
    setup_mptable(mem, cfg.vcpu_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    fn cfg(protocol: BootProtocol) -> BootConfig {
        BootConfig {
            protocol,
            cmdline_size: 10,
            initrd: Some(InitrdConfig {
                address: GuestAddress(0x0f00_0000),
                size: 0x1000,
            }),
            setup_header: None,
            vcpu_count: 2,
        }
    }

    #[test]
    fn test_e820_small_memory_four_entries() {
        let mem = create_guest_memory(128).unwrap();
        assert_eq!(
            e820_entries(&mem),
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0xeec0_0000,
                    size: 0x1000_0000,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: (128 << 20) - 0x10_0000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn test_e820_large_memory_has_entry_above_gap() {
        let regions = [
            (GuestAddress(0), 0x20_0000),
            (GuestAddress(1 << 32), 0x10_0000),
        ];
        let mem = GuestMemoryMmap::from_ranges(&regions).unwrap();
        let e = e820_entries(&mem);
        assert_eq!(e.len(), 5);
        assert_eq!(
            e[4],
            E820Entry {
                addr: 1 << 32,
                size: 0x10_0000,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn test_zero_page_fields() {
        let mem = create_guest_memory(256).unwrap();
        configure_system(&mem, &cfg(BootProtocol::LinuxBoot)).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let hdr = p.hdr;
        let (loader, flag, magic) = (hdr.type_of_loader, hdr.boot_flag, hdr.header);
        assert_eq!((loader, flag, magic), (0xff, 0xaa55, 0x5372_6448));
        let (ptr, size, align) = (hdr.cmd_line_ptr, hdr.cmdline_size, hdr.kernel_alignment);
        assert_eq!((ptr, size, align), (0x20000, 10, 0x0100_0000));
        let (image, rsize) = (hdr.ramdisk_image, hdr.ramdisk_size);
        assert_eq!((image, rsize), (0x0f00_0000, 0x1000));
        let rsdp = p.acpi_rsdp_addr;
        assert_eq!(rsdp, 0xe0000);
        assert_eq!(p.e820_entries, 4);
        let ecam = p.e820_table[2];
        assert_eq!(
            (ecam.addr, ecam.size, ecam.r#type),
            (0xeec0_0000, 256 << 20, 2)
        );
        let last = p.e820_table[3];
        assert_eq!(
            (last.addr, last.size, last.r#type),
            (0x10_0000, (256 << 20) - 0x10_0000, 1)
        );
    }

    #[test]
    fn test_pvh_start_info_fields() {
        let mem = create_guest_memory(256).unwrap();
        configure_system(&mem, &cfg(BootProtocol::Pvh)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!((info.magic, info.version), (0x336e_c578, 1));
        assert_eq!((info.cmdline_paddr, info.memmap_paddr), (0x20000, 0x7000));
        assert_eq!(
            (info.nr_modules, info.modlist_paddr, info.memmap_entries),
            (1, 0x6040, 4)
        );
        assert_eq!(
            info.rsdp_paddr, 0,
            "Firecracker leaves it 0: the guest scans"
        );
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(MODLIST_START)).unwrap();
        assert_eq!((module.paddr, module.size), (0x0f00_0000, 0x1000));
        let e1: hvm_memmap_table_entry = mem.read_obj(GuestAddress(MEMMAP_START + 24)).unwrap();
        assert_eq!((e1.addr, e1.type_), (0x9fc00, 2));
    }
}
