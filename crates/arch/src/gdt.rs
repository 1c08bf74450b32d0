//! Boot GDT, IDT and identity page tables (Firecracker's `gdt.rs` / `regs.rs` values).
//!
//! GDT at [`BOOT_GDT_OFFSET`]: null, code, data, TSS. Linux boot uses a 64-bit code segment
//! (0xa09b), PVH a 32-bit flat one (0xc09b) and a 16-bit-style TSS (0x008b); the data segment is
//! 0xc093 for both. Page tables identity-map the first 1 GiB with 2 MiB pages.

use squib_core::GuestMemoryMmap;
use squib_hv::{X86DescriptorTable, X86Segment};
use vm_memory::{Bytes, GuestAddress};

use crate::error::ArchError;
use crate::layout::{BOOT_GDT_OFFSET, BOOT_IDT_OFFSET, PDE_START, PDPTE_START, PML4_START};
use crate::loader::BootProtocol;

/// GDT index of the code segment.
pub const CODE_INDEX: u16 = 1;
/// GDT index of the data segment.
pub const DATA_INDEX: u16 = 2;
/// GDT index of the TSS.
pub const TSS_INDEX: u16 = 3;

/// Builds a GDT entry from Firecracker-style `flags` (access byte + flags nibble), base, limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The four boot GDT entries for `protocol`.
pub fn gdt_table(protocol: BootProtocol) -> [u64; 4] {
    match protocol {
        BootProtocol::LinuxBoot => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xa09b, 0, 0xfffff),
            gdt_entry(0xc093, 0, 0xfffff),
            gdt_entry(0x808b, 0, 0xfffff),
        ],
        BootProtocol::Pvh => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xc09b, 0, 0xffff_ffff),
            gdt_entry(0xc093, 0, 0xffff_ffff),
            gdt_entry(0x008b, 0, 0x67),
        ],
    }
}

fn field(entry: u64, shift: u32, mask: u64) -> u64 {
    (entry >> shift) & mask
}

/// The cached segment a selector for GDT `index` holding `entry` loads.
pub fn segment_from_gdt(entry: u64, index: u16) -> X86Segment {
    let base = (field(entry, 56, 0xff) << 24) | field(entry, 16, 0xff_ffff);
    let raw_limit = (field(entry, 48, 0xf) << 16) | field(entry, 0, 0xffff);
    let g = field(entry, 55, 1) == 1;
    let limit = if g {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = field(entry, 47, 1) == 1;
    X86Segment {
        base,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        selector: index * 8,
        type_: u8::try_from(field(entry, 40, 0xf)).unwrap_or(0),
        present,
        dpl: u8::try_from(field(entry, 45, 0x3)).unwrap_or(0),
        db: field(entry, 54, 1) == 1,
        s: field(entry, 44, 1) == 1,
        l: field(entry, 53, 1) == 1,
        g,
        avl: field(entry, 52, 1) == 1,
        unusable: !present,
    }
}

/// GDTR value for the boot GDT.
pub fn gdt_register() -> X86DescriptorTable {
    X86DescriptorTable {
        base: BOOT_GDT_OFFSET,
        limit: 4 * 8 - 1,
    }
}

/// IDTR value for the (empty) boot IDT.
pub fn idt_register() -> X86DescriptorTable {
    X86DescriptorTable {
        base: BOOT_IDT_OFFSET,
        limit: 8 - 1,
    }
}

/// Writes the boot GDT for `protocol` and a zero IDT entry.
pub fn write_gdt_idt(mem: &GuestMemoryMmap, protocol: BootProtocol) -> Result<(), ArchError> {
    for (i, entry) in gdt_table(protocol).iter().enumerate() {
        let addr = BOOT_GDT_OFFSET + 8 * i as u64;
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(ArchError::mem(addr))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_OFFSET))
        .map_err(ArchError::mem(BOOT_IDT_OFFSET))
}

/// Writes identity page tables mapping `[0, 1 GiB)` with 2 MiB pages; returns the CR3 value.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<u64, ArchError> {
    let w = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(ArchError::mem(addr))
    };
    w(PDPTE_START | 0x03, PML4_START)?;
    w(PDE_START | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        w((i << 21) | 0x83, PDE_START + i * 8)?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_gdt_entry_matches_firecracker_encoding() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn test_segment_from_linux_code_entry_is_64bit() {
        let s = segment_from_gdt(gdt_table(BootProtocol::LinuxBoot)[1], CODE_INDEX);
        assert_eq!(
            (s.selector, s.type_, s.base, s.limit),
            (8, 0xb, 0, 0xffff_ffff)
        );
        assert!(s.l && !s.db && s.present && s.s && s.g && !s.unusable);
    }

    #[test]
    fn test_segment_from_pvh_code_entry_is_32bit_flat() {
        let s = segment_from_gdt(gdt_table(BootProtocol::Pvh)[1], CODE_INDEX);
        assert!(!s.l && s.db && s.g);
        assert_eq!(s.limit, 0xffff_ffff);
        let tss = segment_from_gdt(gdt_table(BootProtocol::Pvh)[3], TSS_INDEX);
        assert_eq!((tss.type_, tss.limit, tss.selector), (0xb, 0x67, 0x18));
    }

    #[test]
    fn test_page_tables_identity_map_first_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(write_page_tables(&mem).unwrap(), PML4_START);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        let pdpt: u64 = mem.read_obj(GuestAddress(PDPTE_START)).unwrap();
        let pd0: u64 = mem.read_obj(GuestAddress(PDE_START)).unwrap();
        let pd511: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!((pml4, pdpt, pd0), (0xa003, 0xb003, 0x83));
        assert_eq!(pd511, (511 << 21) | 0x83);
    }
}
