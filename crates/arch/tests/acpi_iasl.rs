//! The ACPI tables through a real ACPI parser: ACPICA's `iasl` disassembles every table squib
//! writes (and recompiles the DSDT), without errors (the RSDP is no table `iasl -d` reads; the
//! unit tests check it), and the disassembly names the expected
//! devices and values.
//!
//! `iasl` comes from Debian's `acpica-tools`; the test installs it when it is missing and prints
//! one loud `SKIPPED:` line when it cannot.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use squib_arch::acpi::{AcpiTables, MmioDeviceInfo, build_acpi_tables};

/// `iasl`, installed with apt-get if needed; `None` (after the SKIPPED line) if unavailable.
fn iasl() -> Option<&'static Path> {
    static IASL: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = IASL.get_or_init(|| {
        let works = || {
            Command::new("iasl")
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works() {
            return Some(PathBuf::from("iasl"));
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !apt(&["install", "-y", "acpica-tools"]) {
            apt(&["update"]);
            apt(&["install", "-y", "acpica-tools"]);
        }
        works().then(|| PathBuf::from("iasl"))
    });
    if found.is_none() {
        println!("SKIPPED: iasl unavailable (apt-get install -y acpica-tools failed)");
    }
    found.as_deref()
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("squib-acpi-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs `iasl <args>` in `dir`; asserts success and no reported error; returns its output.
fn run_iasl(iasl: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(iasl)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run iasl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl {args:?} failed:\n{text}");
    assert!(
        !text.contains("Error ") && !text.contains("Error:"),
        "iasl {args:?} reported errors:\n{text}"
    );
    text
}

/// Writes every table as `<sig>.dat`, disassembles them all, returns `sig → .dsl text`.
fn disassemble(iasl: &Path, tables: &AcpiTables, tag: &str) -> (PathBuf, Vec<(String, String)>) {
    let dir = scratch_dir(tag);
    let mut names = Vec::new();
    for t in [
        &tables.dsdt,
        &tables.fadt,
        &tables.madt,
        &tables.mcfg,
        &tables.xsdt,
    ] {
        let sig = String::from_utf8_lossy(&t.bytes[..4])
            .trim()
            .to_ascii_lowercase();
        let name = format!("{sig}.dat");
        std::fs::write(dir.join(&name), &t.bytes).expect("write table");
        names.push((sig, name));
    }
    let mut dsl = Vec::new();
    for (sig, name) in names {
        run_iasl(iasl, &dir, &["-d", &name]);
        let text = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).expect("read .dsl");
        dsl.push((sig, text));
    }
    (dir, dsl)
}

fn get<'a>(dsl: &'a [(String, String)], sig: &str) -> &'a str {
    &dsl.iter().find(|(s, _)| s == sig).expect(sig).1
}

fn devices(n: u32) -> Vec<MmioDeviceInfo> {
    (0..n)
        .map(|i| MmioDeviceInfo {
            addr: 0xc000_1000 + u64::from(i) * 0x1000,
            len: 0x1000,
            gsi: 5 + i,
        })
        .collect()
}

#[test]
fn test_iasl_disassembles_every_table_with_expected_content() {
    let Some(iasl) = iasl() else { return };
    let tables = build_acpi_tables(2, &devices(3)).unwrap();
    let (dir, dsl) = disassemble(iasl, &tables, "two-vcpus");

    let dsdt = get(&dsl, "dsdt");
    assert!(dsdt.contains(r#"DefinitionBlock ("", "DSDT", 2, "FIRECK", "FCVMDSDT", 0x00000000)"#));
    for i in 0..3u32 {
        assert!(dsdt.contains(&format!("Device (V{i:03})")), "{dsdt}");
        assert!(
            dsdt.contains(&format!(
                "0x{:08X},         // Address Base",
                0xc000_1000 + i * 0x1000
            )),
            "{dsdt}"
        );
        assert!(
            dsdt.contains(&format!("0x{:08X},\n", 5 + i)),
            "GSI {}: {dsdt}",
            5 + i
        );
        assert!(dsdt.contains(&format!("Name (_UID, 0x{i:08X})")), "{dsdt}");
    }
    assert_eq!(dsdt.matches(r#"Name (_HID, "LNRO0005")"#).count(), 3);
    assert_eq!(dsdt.matches("Name (_CCA, One)").count(), 3);
    assert_eq!(
        dsdt.matches("0x00001000,         // Address Length")
            .count(),
        3
    );
    assert!(dsdt.contains("Device (_SB.COM1)"), "{dsdt}");
    assert!(dsdt.contains(r#"EisaId ("PNP0501")"#), "{dsdt}");
    assert!(
        dsdt.contains("0x03F8,             // Range Minimum"),
        "{dsdt}"
    );
    assert!(dsdt.contains("Device (_SB.PS2)"), "{dsdt}");
    assert!(dsdt.contains(r#"EisaId ("PNP0303")"#), "{dsdt}");
    assert!(
        dsdt.contains("0x0064,             // Range Minimum"),
        "{dsdt}"
    );
    assert!(dsdt.contains("Return (0x0F)"), "{dsdt}");

    let madt = get(&dsl, "apic");
    assert!(madt.contains("Local Apic Address : FEE00000"), "{madt}");
    assert!(
        madt.contains("Flags (decoded below) : 00000000"),
        "no PCAT_COMPAT: {madt}"
    );
    assert_eq!(
        madt.matches("Subtable Type : 00 [Processor Local APIC]")
            .count(),
        2
    );
    assert_eq!(madt.matches("Subtable Type : 01 [I/O APIC]").count(), 1);
    assert!(madt.contains("Local Apic ID : 01"), "{madt}");
    assert!(madt.contains("Address : FEC00000"), "{madt}");
    assert!(!madt.contains("Interrupt Source Override"), "{madt}");

    let fadt = get(&dsl, "facp");
    assert!(
        fadt.contains("Hardware Reduced (V5) : 1"),
        "HW_REDUCED_ACPI: {fadt}"
    );
    assert!(
        fadt.contains("Control Method Power Button (V1) : 1"),
        "{fadt}"
    );
    assert!(
        fadt.contains("Control Method Sleep Button (V1) : 1"),
        "{fadt}"
    );
    assert!(fadt.contains("VGA Not Present (V4) : 1"), "{fadt}");
    assert!(
        fadt.contains("8042 Present on ports 60/64 (V2) : 0"),
        "{fadt}"
    );
    assert!(
        fadt.contains(&format!("DSDT Address : {:016X}", tables.dsdt.addr)),
        "{fadt}"
    );
    assert!(
        fadt.contains("Hypervisor ID : 4D564B4345524946"),
        "FIRECKVM: {fadt}"
    );

    let xsdt = get(&dsl, "xsdt");
    for (i, t) in [&tables.fadt, &tables.madt, &tables.mcfg]
        .iter()
        .enumerate()
    {
        assert!(
            xsdt.contains(&format!("ACPI Table Address   {i} : {:016X}", t.addr)),
            "{xsdt}"
        );
    }
    let mcfg = get(&dsl, "mcfg");
    assert!(mcfg.contains("Base Address : 00000000EEC00000"), "{mcfg}");
    // None of the disassemblies flags a checksum or length problem.
    for (sig, text) in &dsl {
        assert!(
            !text.to_ascii_lowercase().contains("incorrect"),
            "{sig}: {text}"
        );
        assert!(!text.contains("**** "), "{sig}: {text}");
    }

    // The DSDT's ASL compiles back to AML without errors.
    run_iasl(iasl, &dir, &["-p", "recompiled", "dsdt.dsl"]);
    assert!(dir.join("recompiled.aml").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_iasl_accepts_boundaries_one_vcpu_no_devices_and_full_machine() {
    let Some(iasl) = iasl() else { return };
    for (vcpus, n) in [(1u8, 0u32), (32, 19)] {
        let tables = build_acpi_tables(vcpus, &devices(n)).unwrap();
        let (dir, dsl) = disassemble(iasl, &tables, &format!("{vcpus}-{n}"));
        let madt = get(&dsl, "apic");
        assert_eq!(
            madt.matches("[Processor Local APIC]").count(),
            usize::from(vcpus),
            "{madt}"
        );
        let dsdt = get(&dsl, "dsdt");
        assert_eq!(dsdt.matches("LNRO0005").count(), n as usize, "{dsdt}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
