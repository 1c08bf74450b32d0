//! Structure and checksum tests of the ACPI tables (the AML disassembly by `iasl` is in
//! `crates/arch/tests/acpi_iasl.rs`).

use super::*;
use crate::memory::create_guest_memory;

fn devices(n: u32) -> Vec<MmioDeviceInfo> {
    (0..n)
        .map(|i| MmioDeviceInfo {
            addr: 0xc000_1000 + u64::from(i) * 0x1000,
            len: 0x1000,
            gsi: 5 + i,
        })
        .collect()
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn test_every_table_checksums_to_zero() {
    for vcpus in [1u8, 2, 32] {
        for n in [0, 1, 3, 19] {
            let t = build_acpi_tables(vcpus, &devices(n)).unwrap();
            for table in [&t.dsdt, &t.fadt, &t.madt, &t.mcfg, &t.xsdt] {
                assert_eq!(sum(&table.bytes), 0, "{:?}", table.signature());
                assert_eq!(u32_at(&table.bytes, 4) as usize, table.bytes.len());
            }
            // RSDP: the ACPI 1.0 part (20 bytes) and the whole extended structure.
            assert_eq!(sum(&t.rsdp.bytes[..20]), 0);
            assert_eq!(sum(&t.rsdp.bytes), 0);
        }
    }
}

#[test]
fn test_signatures_headers_and_placement() {
    let t = build_acpi_tables(2, &devices(2)).unwrap();
    let sigs: Vec<&[u8]> = t.all().iter().map(|p| p.signature()).collect();
    assert_eq!(
        sigs,
        [&b"DSDT"[..], b"FACP", b"APIC", b"MCFG", b"XSDT", b"RSD "]
    );
    // Packed right after the 2-vCPU MP table (0x9FC00 + 324), in Firecracker's order.
    assert_eq!(t.dsdt.addr, 0x9fd44);
    let mut next = t.dsdt.addr;
    for p in [&t.dsdt, &t.fadt, &t.madt, &t.mcfg, &t.xsdt] {
        assert_eq!(p.addr, next);
        next += p.bytes.len() as u64;
        assert_eq!(&p.bytes[10..16], b"FIRECK");
        assert_eq!(&p.bytes[28..32], b"FCAT");
        assert_eq!(u32_at(&p.bytes, 32), 0x2024_0119);
    }
    assert!(next <= RSDP_ADDR);
    let revisions: Vec<u8> = [&t.dsdt, &t.fadt, &t.madt, &t.mcfg, &t.xsdt]
        .iter()
        .map(|p| p.bytes[8])
        .collect();
    assert_eq!(revisions, [2, 6, 6, 1, 1]);
    assert_eq!(&t.dsdt.bytes[16..24], b"FCVMDSDT");
    assert_eq!(&t.xsdt.bytes[16..24], b"FCMVXSDT");
    assert_eq!((t.fadt.bytes.len(), t.mcfg.bytes.len()), (276, 60));
}

#[test]
fn test_rsdp_points_to_xsdt_and_xsdt_lists_fadt_madt_mcfg() {
    let t = build_acpi_tables(4, &devices(1)).unwrap();
    let r = &t.rsdp.bytes;
    assert_eq!(t.rsdp.addr, 0xe0000);
    assert_eq!((&r[..8], r.len(), r[15]), (&b"RSD PTR "[..], 36, 2));
    assert_eq!(&r[9..15], b"FIRECK");
    assert_eq!(u32_at(r, 16), 0, "no RSDT");
    assert_eq!(u32_at(r, 20), 36);
    assert_eq!(u64_at(r, 24), t.xsdt.addr);
    let x = &t.xsdt.bytes;
    assert_eq!(x.len(), 36 + 3 * 8);
    assert_eq!(
        [u64_at(x, 36), u64_at(x, 44), u64_at(x, 52)],
        [t.fadt.addr, t.madt.addr, t.mcfg.addr]
    );
}

#[test]
fn test_fadt_is_hardware_reduced_with_firecracker_flags() {
    let t = build_acpi_tables(1, &[]).unwrap();
    let f = &t.fadt.bytes;
    assert_eq!(u32_at(f, 40), 0, "no 32-bit DSDT pointer");
    assert_eq!(u64_at(f, 140), t.dsdt.addr, "X_DSDT");
    assert_eq!(u32_at(f, 112), (1 << 20) | (1 << 5) | (1 << 4), "flags");
    assert_eq!(
        u16::from_le_bytes([f[109], f[110]]),
        1 << 2,
        "IA-PC boot arch"
    );
    assert_eq!(f[131], 5, "FADT minor version");
    assert_eq!(&f[268..276], b"FIRECKVM");
    // No legacy PM blocks, SCI or SMI command port.
    assert!(f[46..108].iter().all(|b| *b == 0));
}

#[test]
fn test_madt_has_ioapic_and_one_lapic_per_vcpu() {
    for vcpus in [1u8, 2, 7, 32] {
        let t = build_acpi_tables(vcpus, &[]).unwrap();
        let m = &t.madt.bytes;
        assert_eq!(m.len(), 44 + 12 + 8 * usize::from(vcpus));
        assert_eq!((u32_at(m, 36), u32_at(m, 40)), (0xfee0_0000, 0));
        assert_eq!(&m[44..48], &[1, 12, 0, 0], "IOAPIC id 0");
        assert_eq!((u32_at(m, 48), u32_at(m, 52)), (0xfec0_0000, 0));
        for cpu in 0..vcpus {
            let e = 56 + 8 * usize::from(cpu);
            assert_eq!(&m[e..e + 4], &[0, 8, cpu, cpu]);
            assert_eq!(u32_at(m, e + 4), 1, "enabled");
        }
    }
}

#[test]
fn test_mcfg_announces_ecam_bus_0() {
    let t = build_acpi_tables(1, &[]).unwrap();
    let m = &t.mcfg.bytes;
    assert_eq!(u64_at(m, 44), 0xeec0_0000);
    assert_eq!(&m[52..56], &[0, 0, 0, 0], "segment 0, buses 0..=0");
}

#[test]
fn test_dsdt_lists_every_virtio_device_then_legacy() {
    for n in [0u32, 1, 5, 19] {
        let t = build_acpi_tables(2, &devices(n)).unwrap();
        let d = &t.dsdt.bytes;
        assert_eq!(count(d, b"LNRO0005"), n as usize);
        assert_eq!(count(d, &[0x5b, 0x82]), n as usize + 2, "Device ops");
        for i in 0..n {
            assert_eq!(count(d, format!("V{i:03}").as_bytes()), 1);
        }
        assert_eq!(count(d, b"_SB_COM1"), 1);
        assert_eq!(count(d, b"_SB_PS2_"), 1);
    }
}

#[test]
fn test_bad_input_is_an_error() {
    assert!(matches!(
        build_acpi_tables(0, &[]),
        Err(ArchError::Vcpus(_))
    ));
    assert!(matches!(
        build_acpi_tables(255, &[]),
        Err(ArchError::Vcpus(_))
    ));
    let bad = MmioDeviceInfo {
        addr: 0xc000_1000,
        len: 0x1000,
        gsi: 2,
    };
    assert!(matches!(
        build_acpi_tables(1, &[bad]),
        Err(ArchError::AcpiDevice { .. })
    ));
    // Far more devices than the region holds: an error, not a panic or an overlap.
    let many: Vec<MmioDeviceInfo> = (0..4000).map(|_| devices(1)[0]).collect();
    assert!(matches!(
        build_acpi_tables(1, &many),
        Err(ArchError::AcpiTooLarge { .. })
    ));
}

#[test]
fn test_setup_writes_tables_to_guest_memory() {
    let mem = create_guest_memory(128).unwrap();
    crate::mptable::setup_mptable(&mem, 2).unwrap();
    let t = setup_acpi_tables(&mem, 2, &devices(2)).unwrap();
    for p in t.all() {
        let mut buf = vec![0u8; p.bytes.len()];
        mem.read_slice(&mut buf, GuestAddress(p.addr)).unwrap();
        assert_eq!(buf, p.bytes);
    }
    // The MP table before the tables is intact.
    let mut mp = [0u8; 4];
    mem.read_slice(&mut mp, GuestAddress(SYSTEM_MEM_START))
        .unwrap();
    assert_eq!(&mp, b"_MP_");
}
