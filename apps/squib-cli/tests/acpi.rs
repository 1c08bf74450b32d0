//! End-to-end: the ACPI tables squib writes, seen by a guest and compared with the ones the real
//! Firecracker writes.
//!
//! - The test guest's `acpi` scenario finds the RSDP the way Linux does, checks every checksum,
//!   walks XSDT → FADT → DSDT and the MADT (2 vCPUs, a block device and an entropy device).
//! - Differential (when the reference Firecracker is present, else one `SKIPPED:` line): both
//!   VMMs boot the same machine, are paused and snapshotted; the tables are read back from each
//!   memory file. Same table set, MADT/FADT/MCFG byte for byte, same RSDP apart from the XSDT
//!   address, and squib's DSDT = Firecracker's without the VMGenID/VMClock/GED devices squib does
//!   not have.
//! - A restored microVM keeps the tables of the booted one (nothing is rewritten on restore).

mod common;

use std::{
    io::{Read, Seek, SeekFrom, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Squib, kvm_or_skip, test_guest, tmp_path, wait_for};

/// The reference Firecracker binary (see shared/peers/README.md).
const REFERENCE_FIRECRACKER: &str = "/work/shared/peers/firecracker";

fn machine_config(scenario: &str, disk: &Path) -> serde_json::Value {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": test_guest(),
            "boot_args": format!("console=ttyS0 reboot=k panic=1 squibtest={scenario} squibtest.tick_shift=20"),
        },
        "drives": [{
            "drive_id": "rootfs",
            "path_on_host": disk,
            "is_root_device": true,
            "is_read_only": false,
        }],
        "entropy": {},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 128},
    })
}

fn scratch_disk() -> PathBuf {
    let disk = tmp_path("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("write disk");
    disk
}

#[test]
fn test_guest_finds_acpi_tables_like_linux_with_2_vcpus() {
    if !kvm_or_skip() {
        return;
    }
    let disk = scratch_disk();
    let cfg = tmp_path("acpi.json");
    std::fs::write(&cfg, machine_config("acpi", &disk).to_string()).expect("write config");
    let mut vm = Squib::spawn(&["--no-api", "--config-file", cfg.to_str().unwrap()], None);
    let code = vm.wait(Duration::from_secs(60));
    let out = vm.output();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("TEST info acpi rsdp=0xe0000 rev=2 oem=FIRECK boot_rsdp=0xe0000"),
        "{out}"
    );
    for sig in ["FACP", "APIC", "MCFG", "DSDT"] {
        assert!(
            out.contains(&format!("TEST info acpi table {sig} ")),
            "{out}"
        );
    }
    assert!(
        out.contains(
            "TEST ok acpi lapics=2 ioapics=1 overrides=0 dsdt_len=316 virtio=2 hw_reduced=1 tables=3"
        ),
        "{out}"
    );
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&cfg);
}

/// One API request; reads exactly one response (Firecracker keeps the connection open even
/// when asked to close it, so reading to EOF would wait for the timeout).
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("read head"),
            1,
            "connection closed"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A VMM process (squib or Firecracker) with its output in a file; killed on drop.
struct Vmm {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Vmm {
    fn spawn(binary: &Path, extra: &[&str], tag: &str) -> Self {
        let socket = tmp_path(&format!("{tag}.sock"));
        let log = tmp_path(&format!("{tag}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("clone");
        let child = Command::new(binary)
            .args(extra)
            .arg("--api-sock")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn VMM");
        let me = Self { child, socket, log };
        let up = wait_for(Duration::from_secs(10), || {
            UnixStream::connect(&me.socket).ok().map(|_| ())
        });
        assert!(
            up.is_some(),
            "{tag}: API socket never came up: {}",
            me.output()
        );
        me
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn put(&self, method: &str, path: &str, body: &serde_json::Value) {
        let (status, text) = request(&self.socket, method, path, &body.to_string());
        assert_eq!(status, 204, "{method} {path}: {text}\n{}", self.output());
    }

    /// Configures `cfg`, boots, waits for the guest, pauses and writes a full snapshot; returns
    /// the state and memory files.
    fn boot_and_snapshot(&self, cfg: &serde_json::Value, tag: &str) -> (PathBuf, PathBuf) {
        self.put("PUT", "/machine-config", &cfg["machine-config"]);
        self.put("PUT", "/boot-source", &cfg["boot-source"]);
        self.put("PUT", "/drives/rootfs", &cfg["drives"][0]);
        self.put("PUT", "/entropy", &cfg["entropy"]);
        self.put(
            "PUT",
            "/actions",
            &serde_json::json!({"action_type": "InstanceStart"}),
        );
        let started = wait_for(Duration::from_secs(180), || {
            self.output()
                .contains("TEST info tick_shift=")
                .then_some(())
        });
        assert!(
            started.is_some(),
            "{tag}: guest never started: {}",
            self.output()
        );
        self.put("PATCH", "/vm", &serde_json::json!({"state": "Paused"}));
        self.snapshot(tag)
    }

    /// A full snapshot of the paused microVM: (state, memory) files.
    fn snapshot(&self, tag: &str) -> (PathBuf, PathBuf) {
        let mem = tmp_path(&format!("{tag}.mem"));
        let state = tmp_path(&format!("{tag}.state"));
        self.put(
            "PUT",
            "/snapshot/create",
            &serde_json::json!({
                "snapshot_type": "Full",
                "snapshot_path": state,
                "mem_file_path": mem,
            }),
        );
        (state, mem)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Low memory `[0, 1 MiB)` from a full snapshot's memory file (guest-physical = file offset for
/// the first region).
fn low_memory(mem_file: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(mem_file).expect("open memory file");
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf).expect("read low memory");
    buf
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> usize {
    usize::try_from(u64::from_le_bytes(b[off..off + 8].try_into().unwrap())).unwrap()
}

/// The ACPI structures found from the RSDP at 0xE0000.
struct Found {
    rsdp: Vec<u8>,
    /// XSDT entries in order: (signature, table).
    tables: Vec<(String, Vec<u8>)>,
    dsdt: Vec<u8>,
}

fn table(mem: &[u8], addr: usize) -> Vec<u8> {
    let len = u32_at(mem, addr + 4) as usize;
    let t = mem[addr..addr + len].to_vec();
    assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
    t
}

fn find_tables(mem: &[u8]) -> Found {
    let rsdp = mem[0xe0000..0xe0000 + 36].to_vec();
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    let xsdt = table(mem, u64_at(&rsdp, 24));
    let tables: Vec<(String, Vec<u8>)> = (36..xsdt.len())
        .step_by(8)
        .map(|off| {
            let t = table(mem, u64_at(&xsdt, off));
            (String::from_utf8_lossy(&t[..4]).into_owned(), t)
        })
        .collect();
    let fadt = &tables.iter().find(|(s, _)| s == "FACP").expect("FADT").1;
    let dsdt = table(mem, u64_at(fadt, 140));
    Found { rsdp, tables, dsdt }
}

/// Top-level `Device` objects of a DSDT body: (name, bytes).
fn dsdt_devices(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < body.len() {
        assert_eq!(&body[p..p + 2], &[0x5b, 0x82], "DeviceOp at {p}");
        let lead = body[p + 2];
        let follow = usize::from(lead >> 6);
        let mut len = if follow == 0 {
            usize::from(lead & 0x3f)
        } else {
            usize::from(lead & 0x0f)
        };
        for i in 0..follow {
            len |= usize::from(body[p + 3 + i]) << (4 + 8 * i);
        }
        let end = p + 2 + len;
        let name_at = p + 3 + follow;
        let name = if body[name_at] == 0x2e {
            String::from_utf8_lossy(&body[name_at + 1..name_at + 9]).into_owned()
        } else {
            String::from_utf8_lossy(&body[name_at..name_at + 4]).into_owned()
        };
        out.push((name, body[p..end].to_vec()));
        p = end;
    }
    out
}

#[test]
fn test_acpi_tables_match_reference_firecracker() {
    if !kvm_or_skip() {
        return;
    }
    let reference = Path::new(REFERENCE_FIRECRACKER);
    if !reference.exists() {
        println!("SKIPPED: no reference firecracker at {REFERENCE_FIRECRACKER}");
        return;
    }
    let disk = scratch_disk();
    let cfg = machine_config("counter", &disk);

    let fc = Vmm::spawn(reference, &["--no-seccomp"], "fc");
    let (fc_state, fc_mem) = fc.boot_and_snapshot(&cfg, "fc");
    drop(fc);
    let squib = Vmm::spawn(Path::new(env!("CARGO_BIN_EXE_squib")), &[], "squib");
    let (squib_state, squib_mem) = squib.boot_and_snapshot(&cfg, "squib");
    drop(squib);
    let _ = std::fs::remove_file(&fc_state);
    let _ = std::fs::remove_file(&squib_state);

    let theirs = find_tables(&low_memory(&fc_mem));
    let ours = find_tables(&low_memory(&squib_mem));
    let _ = std::fs::remove_file(&fc_mem);
    let _ = std::fs::remove_file(&squib_mem);
    let _ = std::fs::remove_file(&disk);

    let sigs = |f: &Found| f.tables.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    assert_eq!(sigs(&ours), sigs(&theirs));
    assert_eq!(sigs(&ours), ["FACP", "APIC", "MCFG"]);
    for (sig, t) in &ours.tables {
        let other = &theirs.tables.iter().find(|(s, _)| s == sig).unwrap().1;
        assert_eq!(t, other, "{sig} differs");
    }
    // RSDP: only the XSDT address (ours is lower: a smaller DSDT) and the extended checksum.
    assert_eq!(ours.rsdp[..24], theirs.rsdp[..24]);
    assert_eq!(ours.rsdp[33..], theirs.rsdp[33..]);
    // DSDT: same header fields, and the same device objects minus the ones squib lacks.
    assert_eq!(ours.dsdt[..4], theirs.dsdt[..4]);
    assert_eq!(ours.dsdt[8], theirs.dsdt[8]);
    assert_eq!(ours.dsdt[10..36], theirs.dsdt[10..36]);
    let without_absent: Vec<(String, Vec<u8>)> = dsdt_devices(&theirs.dsdt[36..])
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "_SB_VGEN" | "_SB_VCLK" | "_SB_GED_"))
        .collect();
    let names: Vec<&str> = without_absent.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["V000", "V001", "_SB_COM1", "_SB_PS2_"]);
    assert_eq!(dsdt_devices(&ours.dsdt[36..]), without_absent);
}

#[test]
fn test_restored_microvm_keeps_its_acpi_tables() {
    if !kvm_or_skip() {
        return;
    }
    let disk = scratch_disk();
    let cfg = machine_config("counter", &disk);
    let squib = Path::new(env!("CARGO_BIN_EXE_squib"));
    let first = Vmm::spawn(squib, &[], "booted");
    let (state, mem) = first.boot_and_snapshot(&cfg, "booted");
    drop(first);

    let restored = Vmm::spawn(squib, &[], "restored");
    restored.put(
        "PUT",
        "/snapshot/load",
        &serde_json::json!({
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": false,
        }),
    );
    let (state2, mem2) = restored.snapshot("restored");
    drop(restored);

    let (before, after) = (low_memory(&mem), low_memory(&mem2));
    for p in [&state, &mem, &state2, &mem2, &disk] {
        let _ = std::fs::remove_file(p);
    }
    let tables = find_tables(&before);
    assert_eq!(tables.tables.len(), 3);
    // The whole system-memory region and the RSDP are untouched by the restore.
    assert_eq!(before[0x9fc00..0xe0000], after[0x9fc00..0xe0000]);
    assert_eq!(before[0xe0000..0xe0024], after[0xe0000..0xe0024]);
}
