//! ACPI tables for x86_64 guests, as Firecracker 1.17 writes them (`vmm/src/acpi/`).
//!
//! Table set and placement (Firecracker's, byte for byte for the same machine):
//!
//! - the tables are packed (alignment 1) in Firecracker's "system memory" region right after the
//!   MP table, in this order: **DSDT**, **FADT**, **MADT**, **MCFG**, **XSDT**; the region ends at
//!   the RSDP ([`SYSTEM_MEM_START`]..[`RSDP_ADDR`], reserved in e820);
//! - the **RSDP** (revision 2, XSDT only) at [`RSDP_ADDR`] = 0xE0000, where Linux's BIOS-area
//!   scan looks; the zero page's `acpi_rsdp_addr` points there too (see [`crate::boot`]);
//! - OEM id `FIRECK`, creator `FCAT` / 0x20240119 and Firecracker's OEM table ids, so a guest
//!   sees the same tables under squib as under Firecracker (the FADT's hypervisor vendor id
//!   `FIRECKVM` tells it runs in a Firecracker-compatible microVM);
//! - FADT (revision 6.5): hardware-reduced ACPI, power and sleep buttons absent (the `PWR_BUTTON`
//!   and `SLP_BUTTON` "not present" flags), IA-PC boot flags = "VGA not present" only (Firecracker
//!   does not set the 8042 flag; the PS/2 controller is announced in the DSDT instead), no PM
//!   blocks, `X_DSDT` only;
//! - MADT (revision 6): local APIC address 0xFEE0_0000, no `PCAT_COMPAT`, the IOAPIC (id 0, GSI
//!   base 0) then one enabled local APIC per vCPU (UID = APIC id = index). Firecracker writes no
//!   interrupt source overrides or NMI entries, so neither does squib;
//! - MCFG: one ECAM range at [`PCI_MMCONFIG_START`], segment 0, buses 0..=0 (Firecracker writes
//!   it even without PCI; squib always appends `pci=off`);
//! - DSDT: every virtio-mmio device as a `LNRO0005` node, COM1 and the PS/2 controller
//!   ([`dsdt`]).
//!
//! Firecracker's DSDT also has VMGenID (`VGEN`), VMClock (`VCLK`) and their GED (`ACPI0013`);
//! squib has neither device yet, so it does not announce them.
//!
//! Built with the rust-vmm `acpi_tables` crate: its AML objects, its RSDP and FADT layouts, its
//! MADT entry layouts and its generic checksummed [`Sdt`] for the other tables (its own XSDT, MADT
//! and MCFG types hard-code the `RVAT` creator and other revisions than Firecracker's).
//!
//! Written once at boot ([`setup_acpi_tables`]); a restored microVM keeps them in guest memory.

mod dsdt;

use acpi_tables::{
    Aml,
    fadt::{FADTBuilder, Flags},
    madt::{EnabledStatus, IoApic, ProcessorLocalApic},
    rsdp::Rsdp,
    sdt::Sdt,
};
use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use crate::error::ArchError;
use crate::layout::{APIC_ADDR, IOAPIC_ADDR, PCI_MMCONFIG_START, RSDP_ADDR, SYSTEM_MEM_START};
use crate::mptable::{MAX_MP_CPUS, mptable_size};

/// OEM id in every table and the RSDP.
pub const OEM_ID: [u8; 6] = *b"FIRECK";
/// OEM revision of every table.
const OEM_REVISION: u32 = 0;
/// Creator id of every table (Firecracker's `acpi_tables` crate).
pub const CREATOR_ID: [u8; 4] = *b"FCAT";
/// Creator revision of every table.
const CREATOR_REVISION: u32 = 0x2024_0119;
/// FADT hypervisor vendor identity.
pub const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"FIRECKVM";
/// IA-PC boot architecture flag bit 2: VGA not present.
pub const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// Offset of the creator id in a table header.
const CREATOR_OFFSET: usize = 28;
/// Size of a table header.
const HEADER_SIZE: u32 = 36;

/// A virtio-mmio device as the DSDT announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Guest-physical base of its register window.
    pub addr: u64,
    /// Size of the window.
    pub len: u64,
    /// Its legacy GSI (5..=23).
    pub gsi: u32,
}

/// One table at its guest-physical address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTable {
    /// Guest-physical address.
    pub addr: u64,
    /// The table's bytes (checksummed).
    pub bytes: Vec<u8>,
}

impl PlacedTable {
    /// The 4-byte signature (`RSD ` for the RSDP).
    pub fn signature(&self) -> &[u8] {
        &self.bytes[..4]
    }
}

/// Every ACPI structure of a microVM, placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Differentiated System Description Table.
    pub dsdt: PlacedTable,
    /// Fixed ACPI Description Table (`FACP`).
    pub fadt: PlacedTable,
    /// Multiple APIC Description Table (`APIC`).
    pub madt: PlacedTable,
    /// PCI Express memory-mapped configuration table.
    pub mcfg: PlacedTable,
    /// Extended System Description Table: FADT, MADT, MCFG.
    pub xsdt: PlacedTable,
    /// Root System Description Pointer at [`RSDP_ADDR`].
    pub rsdp: PlacedTable,
}

impl AcpiTables {
    /// All structures in the order they are placed (RSDP last).
    pub fn all(&self) -> [&PlacedTable; 6] {
        [
            &self.dsdt, &self.fadt, &self.madt, &self.mcfg, &self.xsdt, &self.rsdp,
        ]
    }
}

/// Where the first table goes: right after the MP table for `vcpus` CPUs.
pub fn acpi_tables_start(vcpus: u8) -> u64 {
    SYSTEM_MEM_START + mptable_size(vcpus) as u64
}

/// A header through the crate's `Sdt`, with Firecracker's creator fields.
fn new_table(signature: [u8; 4], revision: u8, oem_table_id: [u8; 8]) -> Sdt {
    let mut sdt = Sdt::new(
        signature,
        HEADER_SIZE,
        revision,
        OEM_ID,
        oem_table_id,
        OEM_REVISION,
    );
    let mut creator = [0u8; 8];
    creator[..4].copy_from_slice(&CREATOR_ID);
    creator[4..].copy_from_slice(&CREATOR_REVISION.to_le_bytes());
    sdt.write_bytes(CREATOR_OFFSET, &creator);
    sdt
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    aml.to_aml_bytes(&mut out);
    out
}

fn build_dsdt(devices: &[MmioDeviceInfo]) -> Result<Vec<u8>, ArchError> {
    let mut dsdt = new_table(*b"DSDT", 2, *b"FCVMDSDT");
    dsdt.append_slice(&dsdt::definition_block(devices)?);
    Ok(dsdt.as_slice().to_vec())
}

fn build_fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"FCVMFADT", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.creator_id = CREATOR_ID;
    fadt.creator_revision = CREATOR_REVISION.to_le_bytes();
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH_VGA_NOT_PRESENT.into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&fadt.finalize())
}

fn build_madt(vcpus: u8) -> Vec<u8> {
    let mut madt = new_table(*b"APIC", 6, *b"FCVMMADT");
    madt.append_slice(&APIC_ADDR.to_le_bytes());
    madt.append_slice(&0u32.to_le_bytes()); // flags: no PCAT_COMPAT
    madt.append_slice(&aml_bytes(&IoApic::new(0, IOAPIC_ADDR, 0)));
    for cpu in 0..vcpus {
        madt.append_slice(&aml_bytes(&ProcessorLocalApic::new(
            cpu,
            cpu,
            EnabledStatus::Enabled,
        )));
    }
    madt.as_slice().to_vec()
}

fn build_mcfg() -> Vec<u8> {
    let mut mcfg = new_table(*b"MCFG", 1, *b"FCMVMCFG");
    mcfg.append_slice(&[0; 8]); // reserved
    mcfg.append_slice(&PCI_MMCONFIG_START.to_le_bytes());
    mcfg.append_slice(&0u16.to_le_bytes()); // segment group
    mcfg.append_slice(&[0, 0]); // start and end bus
    mcfg.append_slice(&[0; 4]); // reserved
    mcfg.as_slice().to_vec()
}

fn build_xsdt(entries: &[u64]) -> Vec<u8> {
    let mut xsdt = new_table(*b"XSDT", 1, *b"FCMVXSDT");
    for addr in entries {
        xsdt.append_slice(&addr.to_le_bytes());
    }
    xsdt.as_slice().to_vec()
}

/// First-fit, byte-aligned placement in `[start, RSDP_ADDR)`.
struct Placer {
    start: u64,
    next: u64,
}

impl Placer {
    fn place(&mut self, bytes: Vec<u8>) -> Result<PlacedTable, ArchError> {
        let addr = self.next;
        let end = addr + bytes.len() as u64;
        if end > RSDP_ADDR {
            return Err(ArchError::AcpiTooLarge {
                size: end - self.start,
                start: self.start,
                end: RSDP_ADDR,
            });
        }
        self.next = end;
        Ok(PlacedTable { addr, bytes })
    }
}

/// Builds every table for `vcpus` vCPUs and the virtio-mmio `devices` (in attach order), placed
/// as Firecracker places them. Pure: nothing is written.
pub fn build_acpi_tables(vcpus: u8, devices: &[MmioDeviceInfo]) -> Result<AcpiTables, ArchError> {
    if vcpus == 0 || vcpus > MAX_MP_CPUS {
        return Err(ArchError::Vcpus(format!("{vcpus} vCPUs in the ACPI MADT")));
    }
    let start = acpi_tables_start(vcpus);
    let mut placer = Placer { start, next: start };
    let dsdt = placer.place(build_dsdt(devices)?)?;
    let fadt = placer.place(build_fadt(dsdt.addr))?;
    let madt = placer.place(build_madt(vcpus))?;
    let mcfg = placer.place(build_mcfg())?;
    let xsdt = placer.place(build_xsdt(&[fadt.addr, madt.addr, mcfg.addr]))?;
    let rsdp = PlacedTable {
        addr: RSDP_ADDR,
        bytes: aml_bytes(&Rsdp::new(OEM_ID, xsdt.addr)),
    };
    Ok(AcpiTables {
        dsdt,
        fadt,
        madt,
        mcfg,
        xsdt,
        rsdp,
    })
}

/// Builds the tables ([`build_acpi_tables`]) and writes them into guest memory.
pub fn setup_acpi_tables(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    devices: &[MmioDeviceInfo],
) -> Result<AcpiTables, ArchError> {
    let tables = build_acpi_tables(vcpus, devices)?;
    for t in tables.all() {
        mem.write_slice(&t.bytes, GuestAddress(t.addr))
            .map_err(ArchError::mem(t.addr))?;
    }
    Ok(tables)
}

#[cfg(test)]
mod tests;
