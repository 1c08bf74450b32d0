//! Intel MultiProcessor Specification 1.4 table (Firecracker's `mptable.rs`), so SMP Linux guests
//! without ACPI find every vCPU, the IOAPIC and the ISA interrupt routing.
//!
//! Placed at [`MPTABLE_START`] (the last KiB of base memory, reserved in e820), which Linux scans.
//! Serialised by hand into little-endian bytes (no `unsafe` `ByteValued` impls). APIC id of vCPU
//! `i` is `i`; the IOAPIC gets id `vcpu_count + 1`.

use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use crate::error::ArchError;
use crate::layout::{APIC_ADDR, IOAPIC_ADDR, MPTABLE_MAX_SIZE, MPTABLE_START};

/// Local APIC version reported for every CPU and the IOAPIC.
const APIC_VERSION: u8 = 0x14;
/// `CPU_ENABLED`.
const CPU_ENABLED: u8 = 1;
/// `CPU_BOOTPROCESSOR`.
const CPU_BSP: u8 = 2;
/// CPU signature (family 6).
const CPU_STEPPING: u32 = 0x600;
/// Feature flags: APIC | FPU.
const CPU_FEATURES: u32 = 0x200 | 0x001;
/// `MPC_APIC_USABLE`.
const MPC_APIC_USABLE: u8 = 1;
/// Number of ISA/IOAPIC interrupt sources announced.
const NUM_IRQS: u8 = 24;
/// Largest vCPU count (APIC ids must stay below the IOAPIC id, 8-bit).
pub const MAX_MP_CPUS: u8 = 254;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

/// Size of the MP floating pointer structure.
pub const MPF_SIZE: usize = 16;
/// Size of the MP configuration table header.
pub const MPC_HEADER_SIZE: usize = 44;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Total MP table size (floating pointer + configuration table) for `vcpus` CPUs.
pub fn mptable_size(vcpus: u8) -> usize {
    MPF_SIZE + MPC_HEADER_SIZE + 20 * usize::from(vcpus) + 8 + 8 + 8 * usize::from(NUM_IRQS) + 16
}

/// Builds the MP floating pointer and configuration table for `vcpus` CPUs at `base`.
pub fn build_mptable(vcpus: u8, base: u32) -> Result<Vec<u8>, ArchError> {
    if vcpus == 0 || vcpus > MAX_MP_CPUS {
        return Err(ArchError::Vcpus(format!("{vcpus} vCPUs in MP table")));
    }
    let ioapic_id = vcpus + 1;
    let mut entries: Vec<u8> = Vec::new();
    for cpu in 0..vcpus {
        entries.extend_from_slice(&[
            MP_PROCESSOR,
            cpu,
            APIC_VERSION,
            CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 },
        ]);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[MP_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, APIC_VERSION, MPC_APIC_USABLE]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for irq in 0..NUM_IRQS {
        entries.extend_from_slice(&[MP_INTSRC, MP_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    entries.extend_from_slice(&[MP_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[MP_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    let entry_count = u16::from(vcpus) + 1 + 1 + u16::from(NUM_IRQS) + 2;

    let table_len = MPC_HEADER_SIZE + entries.len();
    let mut mpc = Vec::with_capacity(table_len);
    mpc.extend_from_slice(b"PCMP");
    mpc.extend_from_slice(&u16::try_from(table_len).unwrap_or(u16::MAX).to_le_bytes());
    mpc.push(4); // spec revision 1.4
    mpc.push(0); // checksum, patched below
    mpc.extend_from_slice(b"SQUIB   ");
    mpc.extend_from_slice(b"000000000000");
    mpc.extend_from_slice(&0u32.to_le_bytes()); // oemptr
    mpc.extend_from_slice(&0u16.to_le_bytes()); // oemsize
    mpc.extend_from_slice(&entry_count.to_le_bytes());
    mpc.extend_from_slice(&APIC_ADDR.to_le_bytes());
    mpc.extend_from_slice(&0u32.to_le_bytes()); // reserved
    mpc.extend_from_slice(&entries);
    mpc[7] = checksum(&mpc);

    let mut mpf = Vec::with_capacity(MPF_SIZE);
    mpf.extend_from_slice(b"_MP_");
    let physptr = base + u32::try_from(MPF_SIZE).unwrap_or(0);
    mpf.extend_from_slice(&physptr.to_le_bytes());
    mpf.push(1); // length in 16-byte units
    mpf.push(4); // spec revision 1.4
    mpf.push(0); // checksum, patched below
    mpf.extend_from_slice(&[0; 5]); // feature bytes: configuration table present
    mpf[10] = checksum(&mpf);

    mpf.extend_from_slice(&mpc);
    Ok(mpf)
}

/// Writes the MP table for `vcpus` CPUs at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), ArchError> {
    let base = u32::try_from(MPTABLE_START).unwrap_or(0);
    let table = build_mptable(vcpus, base)?;
    if table.len() > MPTABLE_MAX_SIZE {
        return Err(ArchError::MpTableTooLarge {
            size: table.len(),
            max: MPTABLE_MAX_SIZE,
        });
    }
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(ArchError::mem(MPTABLE_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn test_mptable_checksums_are_zero() {
        let t = build_mptable(4, 0x9fc00).unwrap();
        assert_eq!(sum(&t[..MPF_SIZE]), 0);
        assert_eq!(sum(&t[MPF_SIZE..]), 0);
        assert_eq!(t.len(), mptable_size(4));
    }

    #[test]
    fn test_mptable_header_fields() {
        let t = build_mptable(2, 0x9fc00).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
        let mpc = &t[MPF_SIZE..];
        assert_eq!(&mpc[0..4], b"PCMP");
        assert_eq!(usize::from(u16::from_le_bytes([mpc[4], mpc[5]])), mpc.len());
        assert_eq!(u16::from_le_bytes([mpc[34], mpc[35]]), 2 + 1 + 1 + 24 + 2);
        assert_eq!(
            u32::from_le_bytes(mpc[36..40].try_into().unwrap()),
            0xfee0_0000
        );
        // First processor entry: BSP with APIC id 0, second: APIC id 1, not BSP.
        assert_eq!(&mpc[44..48], &[0, 0, 0x14, 3]);
        assert_eq!(&mpc[64..68], &[0, 1, 0x14, 1]);
    }

    #[test]
    fn test_mptable_32_vcpus_fits_one_kib() {
        assert!(mptable_size(32) <= MPTABLE_MAX_SIZE);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        setup_mptable(&mem, 32).unwrap();
    }

    #[test]
    fn test_mptable_zero_vcpus_rejected() {
        assert!(build_mptable(0, 0x9fc00).is_err());
    }
}
