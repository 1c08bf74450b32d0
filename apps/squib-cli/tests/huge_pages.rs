//! End-to-end `huge_pages: "2M"` (hugetlbfs) through the `squib` binary and the test guest:
//! guest RAM comes from the host's 2 MiB pool, the guest runs; Full and Diff snapshots record
//! the setting, the `File` backend is refused with Firecracker's text (unless the load asks for
//! `None`), the `Uffd` backend hands the handler 2 MiB pages; a pool too small for the kernel fails
//! `InstanceStart` with Firecracker's text (compared with the reference Firecracker when present);
//! a snapshot whose memory size does not suit 2 MiB pages cannot be restored on them.
//!
//! The pool is the host's `/proc/sys/vm/nr_hugepages`: a [`HugePool`] guard sets it and always
//! puts the old value back (also when a test fails), and holds a lock so the tests of this file
//! never change it concurrently. Without a writable `nr_hugepages` (or KVM) the tests print one
//! `SKIPPED:` line and pass.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::{
    Squib, api_request, kvm_or_skip, reference_firecracker, spawn_vmm, test_guest, tmp_path,
    wait_for,
};
use serde_json::json;

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const GUEST_MIB: u64 = 128;
const TICK_SHIFT: u32 = 14;
/// Firecracker 1.17.0-dev's answer to `InstanceStart` with an empty 2 MiB pool and an ELF kernel
/// (measured with the reference binary: the kernel image cannot be read into guest memory).
const POOL_TOO_SMALL: &str = "Start microvm error: System configuration error: Cannot load kernel due to invalid memory configuration or invalid kernel image: Kernel Loader: failed to load ELF kernel image: Kernel Loader: Unable to read kernel image";
/// Firecracker 1.17.0-dev's answer to loading a 65 MiB snapshot with `huge_pages` `Transparent`
/// or `2M` (any backend).
const RESTORE_BAD_SIZE: &str = "Load snapshot error: Failed to restore from snapshot: Failed to build microVM from snapshot: Failed to update microVM configuration: The memory size (MiB) is either 0, or not a multiple of the configured page size.";
/// Firecracker 1.17.0-dev's answer to loading a hugetlbfs snapshot with the `File` backend.
const FILE_BACKEND_REFUSED: &str = "Load snapshot error: Failed to restore from snapshot: Failed to load guest memory: Error creating guest memory from file: Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd.";

/// The host's 2 MiB pool set to a size for the guard's lifetime; the old size is restored on
/// drop (also while unwinding from a failed assertion).
struct HugePool {
    old: String,
    _lock: MutexGuard<'static, ()>,
}

impl HugePool {
    /// Sets the pool to `pages`; `None` (after one `SKIPPED:` line) when the pool cannot be set.
    fn reserve(pages: u64) -> Option<Self> {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(old) = std::fs::read_to_string(NR_HUGEPAGES) else {
            println!("SKIPPED: {NR_HUGEPAGES} is not readable");
            return None;
        };
        if let Err(e) = std::fs::write(NR_HUGEPAGES, pages.to_string()) {
            println!("SKIPPED: {NR_HUGEPAGES} is not writable ({e})");
            return None;
        }
        let pool = Self {
            old: old.trim().to_owned(),
            _lock: lock,
        };
        let got = meminfo("HugePages_Total").unwrap_or(0);
        if got < pages {
            println!("SKIPPED: the host could only reserve {got} of {pages} 2 MiB pages");
            return None;
        }
        Some(pool)
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(NR_HUGEPAGES, &self.old) {
            eprintln!("could not restore {NR_HUGEPAGES} to {}: {e}", self.old);
        }
    }
}

/// A `/proc/meminfo` counter (`HugePages_*` are page counts).
fn meminfo(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
}

/// `(Size kB, KernelPageSize kB, Private_Hugetlb kB)` of every mapping of `pid`.
fn smaps(pid: u32) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<u64> {
        line.strip_prefix(key)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(v) = field(line, "Size:") {
            out.push((v, 0, 0));
        } else if let (Some(v), Some(last)) = (field(line, "KernelPageSize:"), out.last_mut()) {
            last.1 = v;
        } else if let (Some(v), Some(last)) = (field(line, "Private_Hugetlb:"), out.last_mut()) {
            last.2 = v;
        }
    }
    out
}

/// Checks that `pid` maps the guest RAM with 2 MiB pages and has touched some of them.
fn assert_guest_ram_on_huge_pages(pid: u32) {
    let maps = smaps(pid);
    assert!(
        maps.iter()
            .any(|&(size, page, _)| size == GUEST_MIB * 1024 && page == 2048),
        "no {GUEST_MIB} MiB mapping with 2048 kB pages: {maps:?}"
    );
    let hugetlb_kb: u64 = maps.iter().map(|m| m.2).sum();
    assert!(hugetlb_kb > 0, "no hugetlb page in use: {maps:?}");
}

fn ticks(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("TICK ")?.trim().parse().ok())
        .collect()
}

fn wait_ticks(serial: &Path, at_least: u64) {
    assert!(
        wait_for(Duration::from_secs(120), || {
            (ticks(serial).into_iter().max().unwrap_or(0) >= at_least).then_some(())
        })
        .is_some(),
        "the guest did not reach tick {at_least}: {:?}",
        ticks(serial)
    );
}

/// Configures the counter guest with `huge_pages` on a fresh `program` (squib or Firecracker)
/// and sends `InstanceStart`; returns the process and the answer.
fn start(program: &Path, extra: &[&str], serial: &Path) -> (Squib, u16, String) {
    start_with(program, extra, serial, GUEST_MIB, "2M", true)
}

/// [`start`] with a memory size and `huge_pages` setting.
fn start_with(
    program: &Path,
    extra: &[&str],
    serial: &Path,
    mem_mib: u64,
    huge_pages: &str,
    track_dirty_pages: bool,
) -> (Squib, u16, String) {
    let vm = spawn_vmm(program, extra);
    let serial_body = json!({ "serial_out_path": serial }).to_string();
    assert_eq!(vm.api("PUT", "/serial", Some(&serial_body)).0, 204);
    let machine = json!({
        "vcpu_count": 1,
        "mem_size_mib": mem_mib,
        "huge_pages": huge_pages,
        "track_dirty_pages": track_dirty_pages,
    });
    assert_eq!(
        vm.api("PUT", "/machine-config", Some(&machine.to_string()))
            .0,
        204
    );
    let bs = json!({
        "kernel_image_path": test_guest(),
        "boot_args": format!(
            "console=ttyS0 reboot=k panic=1 squibtest=counter squibtest.tick_shift={TICK_SHIFT}"
        ),
    });
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    (vm, s, b)
}

/// Pauses `vm` and writes a Full snapshot; returns (state, memory file, last tick).
fn pause_and_snapshot(vm: &Squib, serial: &Path, tag: &str) -> (PathBuf, PathBuf, u64) {
    let (s, b) = vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(s, 204, "{b}");
    let at = ticks(serial).into_iter().max().unwrap_or(0);
    let (state, mem) = (
        tmp_path(&format!("{tag}.state")),
        tmp_path(&format!("{tag}.mem")),
    );
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    (state, mem, at)
}

fn squib_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_squib"))
}

/// A fresh squib that loads `state` with `backend` (+ `huge_pages` if given), resumed.
fn load(
    state: &Path,
    backend: (&str, &Path),
    huge_pages: Option<&str>,
    serial: &Path,
) -> (Squib, u16, String) {
    load_with(&squib_bin(), &[], state, backend, huge_pages, serial)
}

/// [`load`] in a fresh `program` (squib or Firecracker).
fn load_with(
    program: &Path,
    extra: &[&str],
    state: &Path,
    backend: (&str, &Path),
    huge_pages: Option<&str>,
    serial: &Path,
) -> (Squib, u16, String) {
    let vm = spawn_vmm(program, extra);
    let socket = vm.socket.clone().expect("API socket");
    let serial_body = json!({ "serial_out_path": serial }).to_string();
    assert_eq!(vm.api("PUT", "/serial", Some(&serial_body)).0, 204);
    let mut body = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": backend.0, "backend_path": backend.1},
        "resume_vm": true,
    });
    if let Some(hp) = huge_pages {
        body["huge_pages"] = json!(hp);
    }
    let (s, b) = api_request(&socket, "PUT", "/snapshot/load", Some(&body.to_string()));
    (vm, s, b)
}

fn fault(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["fault_message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

#[test]
fn test_should_run_the_guest_on_2m_pages_and_restore_it_only_through_uffd() {
    if !kvm_or_skip() {
        return;
    }
    // The guest's 64 pages plus room for the restored copy's (the first VM is gone by then).
    let Some(_pool) = HugePool::reserve(GUEST_MIB / 2 + 16) else {
        return;
    };
    let free_before = meminfo("HugePages_Free").unwrap();
    let serial1 = tmp_path("huge-serial1.log");
    let (mut vm1, s, b) = start(&squib_bin(), &[], &serial1);
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    wait_ticks(&serial1, 3);
    let free_running = meminfo("HugePages_Free").unwrap();
    assert!(
        free_running < free_before,
        "HugePages_Free did not drop: {free_before} -> {free_running}"
    );
    assert_guest_ram_on_huge_pages(vm1.child.id());
    let (_, cfg) = vm1.api("GET", "/machine-config", None);
    assert!(cfg.contains(r#""huge_pages":"2M""#), "{cfg}");

    let (s, b) = vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(s, 204, "{b}");
    let paused_at = ticks(&serial1).into_iter().max().unwrap_or(0);
    let (state, mem) = (tmp_path("huge.state"), tmp_path("huge.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    assert_eq!(std::fs::metadata(&mem).unwrap().len(), GUEST_MIB << 20);
    // Dirty tracking and Diff snapshots work on huge pages (Firecracker 1.17 allows them).
    assert_eq!(
        vm1.api("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#)).0,
        204
    );
    wait_ticks(&serial1, paused_at + 3);
    let (s, b) = vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(s, 204, "{b}");
    let diff_at = ticks(&serial1).into_iter().max().unwrap_or(0);
    let (state_diff, mem_diff) = (tmp_path("huge-diff.state"), tmp_path("huge-diff.mem"));
    let body =
        json!({"snapshot_type": "Diff", "snapshot_path": state_diff, "mem_file_path": mem_diff});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    let _ = vm1.child.kill();
    let _ = vm1.wait(Duration::from_secs(10));
    let diff_file = std::fs::File::open(&mem_diff).unwrap();
    let ranges: Vec<squib_snapshot::FileRange> = squib_sys::sparse::data_extents(&diff_file)
        .unwrap()
        .into_iter()
        .map(|(offset, len)| squib_snapshot::FileRange { offset, len })
        .collect();
    let dirty: u64 = ranges.iter().map(|r| r.len).sum();
    assert!(
        dirty > 0 && dirty < GUEST_MIB << 20,
        "diff holds {dirty} bytes"
    );
    let merged = tmp_path("huge-merged.mem");
    std::fs::copy(&mem, &merged).unwrap();
    squib_snapshot::merge_diff_into(&merged, &mem_diff, &ranges).unwrap();

    // File backend: refused (the snapshot says 2M), fatal to the process.
    let serial2 = tmp_path("huge-serial2.log");
    let (mut vm2, s, b) = load(&state, ("File", &mem), None, &serial2);
    assert_eq!(s, 400, "{b}");
    assert_eq!(fault(&b), FILE_BACKEND_REFUSED);
    assert_eq!(
        vm2.wait(Duration::from_secs(10)),
        Some(1),
        "{}",
        vm2.output()
    );
    // ... and so is asking for 2M explicitly.
    let (mut vm2, s, b) = load(&state, ("File", &mem), Some("2M"), &serial2);
    assert_eq!((s, fault(&b).as_str()), (400, FILE_BACKEND_REFUSED));
    assert_eq!(vm2.wait(Duration::from_secs(10)), Some(1));

    // File backend with huge_pages None: normal pages, the guest continues.
    let (vm3, s, b) = load(&state, ("File", &mem), Some("None"), &serial2);
    assert_eq!(s, 204, "{b}\n{}", vm3.output());
    let (_, cfg) = vm3.api("GET", "/machine-config", None);
    assert!(cfg.contains(r#""huge_pages":"None""#), "{cfg}");
    wait_ticks(&serial2, paused_at + 2);
    drop(vm3);

    // Uffd backend (the Diff state over the merged memory): the handler is told 2 MiB pages
    // and serves them; the guest continues from the Diff.
    let serial3 = tmp_path("huge-serial3.log");
    let sock = tmp_path("huge-uffd.sock");
    let listener = UnixListener::bind(&sock).expect("bind uffd socket");
    let mem_file = std::fs::File::open(&merged).unwrap();
    let handler = std::thread::spawn(move || squib_sys::uffd_handler::serve(&listener, &mem_file));
    let (vm4, s, b) = load(&state_diff, ("Uffd", &sock), None, &serial3);
    assert_eq!(s, 204, "{b}\n{}", vm4.output());
    wait_ticks(&serial3, diff_at + 2);
    assert!(
        ticks(&serial3).iter().all(|&t| t >= diff_at),
        "restored before the Diff (tick {diff_at}): {:?}",
        ticks(&serial3)
    );
    assert_guest_ram_on_huge_pages(vm4.child.id());
    let (_, cfg) = vm4.api("GET", "/machine-config", None);
    assert!(cfg.contains(r#""huge_pages":"2M""#), "{cfg}");
    drop(vm4);
    let stats = handler.join().unwrap().expect("the handler served the VM");
    assert!(!stats.mappings.is_empty());
    for m in &stats.mappings {
        assert_eq!((m.page_size, m.page_size_kib), (2 << 20, 2 << 20), "{m:?}");
    }
    assert!(stats.pages_served > 0);
    for p in [
        &state,
        &mem,
        &state_diff,
        &mem_diff,
        &merged,
        &serial1,
        &serial2,
        &serial3,
    ] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn test_empty_pool_fails_instance_start_with_firecrackers_text() {
    if !kvm_or_skip() {
        return;
    }
    let Some(_pool) = HugePool::reserve(0) else {
        return;
    };
    let serial = tmp_path("huge-empty.log");
    let (mut vm, s, b) = start(&squib_bin(), &[], &serial);
    assert_eq!(s, 400, "{b}");
    assert_eq!(fault(&b), POOL_TOO_SMALL);
    // Not fatal, as in Firecracker: the process still answers.
    assert_eq!(vm.api("GET", "/", None).0, 200);
    assert_eq!(vm.child.try_wait().unwrap(), None);

    // Differential: the reference Firecracker answers the same on the same host and guest.
    let reference = std::env::var_os("SQUIB_REFERENCE_FIRECRACKER").map_or_else(
        || common::repo_root().join("../shared/peers/firecracker"),
        PathBuf::from,
    );
    if !reference.exists() {
        println!(
            "SKIPPED: no reference firecracker at {}",
            reference.display()
        );
        return;
    }
    let (fc, s_fc, b_fc) = start(&reference, &["--no-seccomp"], &serial);
    assert_eq!((s_fc, fault(&b_fc)), (s, fault(&b)), "{}", fc.output());
    let _ = std::fs::remove_file(&serial);
}

#[test]
fn test_odd_sized_snapshot_cannot_be_restored_on_huge_pages() {
    if !kvm_or_skip() {
        return;
    }
    // Normal pages: no pool needed. 65 MiB is fine for 4 KiB pages, not for 2 MiB ones.
    let serial = tmp_path("huge-odd.log");
    let (mut vm, s, b) = start_with(&squib_bin(), &[], &serial, 65, "None", false);
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    wait_ticks(&serial, 1);
    assert_eq!(vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0, 204);
    let (state, mem) = (tmp_path("odd.state"), tmp_path("odd.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}");
    let _ = vm.child.kill();
    let _ = vm.wait(Duration::from_secs(10));
    // The size is checked before the backend, as Firecracker does: 2M + File answers it too.
    for hp in ["Transparent", "2M"] {
        let (mut vm, s, b) = load(&state, ("File", &mem), Some(hp), &serial);
        assert_eq!((s, fault(&b).as_str()), (400, RESTORE_BAD_SIZE), "{hp}");
        assert_eq!(vm.wait(Duration::from_secs(10)), Some(1), "{}", vm.output());
    }
    let (vm, s, b) = load(&state, ("File", &mem), None, &serial);
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    let (_, cfg) = vm.api("GET", "/machine-config", None);
    assert!(
        cfg.contains(r#""mem_size_mib":65"#) && cfg.contains(r#""huge_pages":"None""#),
        "{cfg}"
    );
    drop(vm);
    for p in [&state, &mem, &serial] {
        let _ = std::fs::remove_file(p);
    }

    // Differential: Firecracker refuses its own 65 MiB snapshot on huge pages the same way.
    let Some(fc_bin) = reference_firecracker() else {
        return;
    };
    let (fc, s, b) = start_with(&fc_bin, &["--no-seccomp"], &serial, 65, "None", false);
    assert_eq!(s, 204, "{b}\n{}", fc.output());
    wait_ticks(&serial, 1);
    let (state, mem, _) = pause_and_snapshot(&fc, &serial, "fc-odd");
    drop(fc);
    for hp in ["Transparent", "2M"] {
        let (mut fc, s, b) = load_with(
            &fc_bin,
            &["--no-seccomp"],
            &state,
            ("File", &mem),
            Some(hp),
            &serial,
        );
        assert_eq!((s, fault(&b).as_str()), (400, RESTORE_BAD_SIZE), "{hp}");
        assert_eq!(fc.wait(Duration::from_secs(10)), Some(1));
    }
    for p in [&state, &mem, &serial] {
        let _ = std::fs::remove_file(p);
    }
}

/// The reference Firecracker on the same host, guest and pool: its own 2M snapshot is refused
/// on `File` with the text squib answers, and its Uffd handshake advertises the 2 MiB pages
/// squib advertises (served by squib's handler, which the restored Firecracker guest runs on).
#[test]
fn test_reference_firecracker_agrees_on_2m_snapshots() {
    if !kvm_or_skip() {
        return;
    }
    let Some(fc_bin) = reference_firecracker() else {
        return;
    };
    let Some(_pool) = HugePool::reserve(GUEST_MIB / 2 + 16) else {
        return;
    };
    let fc_args = ["--no-seccomp"];
    let serial = tmp_path("fc-huge.log");
    let (fc, s, b) = start(&fc_bin, &fc_args, &serial);
    assert_eq!(s, 204, "{b}\n{}", fc.output());
    wait_ticks(&serial, 2);
    let (state, mem, paused_at) = pause_and_snapshot(&fc, &serial, "fc-huge");
    drop(fc);

    let (mut fc, s, b) = load_with(&fc_bin, &fc_args, &state, ("File", &mem), None, &serial);
    assert_eq!((s, fault(&b).as_str()), (400, FILE_BACKEND_REFUSED));
    assert_eq!(fc.wait(Duration::from_secs(10)), Some(1));

    let serial2 = tmp_path("fc-huge2.log");
    let sock = tmp_path("fc-uffd.sock");
    let listener = UnixListener::bind(&sock).expect("bind uffd socket");
    let mem_file = std::fs::File::open(&mem).unwrap();
    let handler = std::thread::spawn(move || squib_sys::uffd_handler::serve(&listener, &mem_file));
    let (fc, s, b) = load_with(&fc_bin, &fc_args, &state, ("Uffd", &sock), None, &serial2);
    assert_eq!(s, 204, "{b}\n{}", fc.output());
    wait_ticks(&serial2, paused_at + 2);
    drop(fc);
    let stats = handler
        .join()
        .unwrap()
        .expect("the handler served Firecracker");
    assert!(!stats.mappings.is_empty());
    for m in &stats.mappings {
        assert_eq!((m.page_size, m.page_size_kib), (2 << 20, 2 << 20), "{m:?}");
    }
    for p in [&state, &mem, &serial, &serial2] {
        let _ = std::fs::remove_file(p);
    }
}
