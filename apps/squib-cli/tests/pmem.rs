//! End-to-end: virtio-pmem through the `squib` binary and the test guest's `pmem` scenario.
//! The guest checksums the window (the file, then zeros up to 2 MiB alignment) and the host
//! compares; a read-write device's guest writes reach the file after a FLUSH; a read-only
//! device's file never changes (guest writes are dropped); `root=/dev/pmem0` like Firecracker;
//! Firecracker's errors; the device keeps working across a snapshot (the restored window is
//! the file again: the guest sees a host write to it and its own writes reach it).

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::{Squib, kvm_or_skip, random_file, test_guest, tmp_path, wait_for};
use serde_json::json;

const FILE_LEN: usize = (1 << 20) + 1000;
const WINDOW: usize = 2 << 20;
const WRITE_OFF: usize = 8192;
const WRITE_LEN: usize = 4096;

/// The guest's checksum: 64-bit LE words, h = (h ^ w) * FNV prime from the FNV-1a basis.
fn sum_words(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0xcbf2_9ce4_8422_2325, |h, w| {
        (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0100_0000_01b3)
    })
}

fn window_of(file: &[u8]) -> Vec<u8> {
    let mut w = file.to_vec();
    w.resize(WINDOW, 0);
    w
}

fn pattern(i: usize) -> u8 {
    u8::try_from((i * 131 + 7) & 0xff).unwrap()
}

/// The host's TSC frequency in kHz (for the guest's timings), if /proc/cpuinfo says.
fn tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info.lines().find_map(|l| {
        l.strip_prefix("cpu MHz")?
            .split(':')
            .nth(1)?
            .trim()
            .parse()
            .ok()
    })?;
    format!("{:.0}", mhz * 1000.0).parse().ok()
}

fn boot_args(extra: &str) -> String {
    let tsc = tsc_khz().map_or(String::new(), |k| format!(" squibtest.tsc_khz={k}"));
    format!("console=ttyS0 reboot=k panic=1 squibtest=pmem{tsc} {extra}")
}

/// What one `--no-api` run left behind.
struct Run {
    code: Option<i32>,
    out: String,
    /// Every metrics line (one at boot, one when the VMM stopped).
    metrics: Vec<serde_json::Value>,
}

impl Run {
    /// `group.key` summed over the metrics lines (counters are deltas).
    fn total(&self, group: &str, key: &str) -> u64 {
        self.metrics
            .iter()
            .map(|l| l[group][key].as_u64().expect("metric is a number"))
            .sum()
    }
}

/// Boots with `--no-api --config-file`, one pmem device and a metrics file.
fn run(pmem: &serde_json::Value, extra: &str) -> Run {
    let cfg = tmp_path("pmem.json");
    let metrics = tmp_path("pmem-metrics.json");
    let doc = json!({
        "boot-source": {"kernel_image_path": test_guest(), "boot_args": boot_args(extra)},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "pmem": [pmem],
        "metrics": {"metrics_path": metrics},
    });
    std::fs::write(&cfg, doc.to_string()).expect("config");
    let mut vm = Squib::spawn(
        &["--no-api", "--config-file", cfg.to_str().expect("utf8")],
        None,
    );
    let code = vm.wait(Duration::from_secs(120));
    let _ = std::fs::remove_file(&cfg);
    let lines = std::fs::read_to_string(&metrics)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("metrics line is JSON"))
        .collect();
    let _ = std::fs::remove_file(&metrics);
    Run {
        code,
        out: vm.output(),
        metrics: lines,
    }
}

fn read_line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line:\n{out}"))
}

#[test]
fn test_should_checksum_write_and_flush_a_read_write_pmem_device() {
    if !kvm_or_skip() {
        return;
    }
    let file = random_file("pmem-rw.img", FILE_LEN, 21);
    let before = std::fs::read(&file).unwrap();
    let r = run(
        &json!({"id": "pmem0", "path_on_host": file, "root_device": true}),
        &format!("squibtest.pmem_write={WRITE_LEN} squibtest.pmem_write_off={WRITE_OFF}"),
    );
    let (code, out) = (r.code, r.out.as_str());
    assert_eq!(code, Some(0), "{out}");
    // The guest's FLUSH went through the queue: the device's group and the aggregate count
    // it (the line written when the VMM stopped carries it).
    assert!(
        r.total("pmem_pmem0", "queue_event_count") >= 1,
        "{:?}",
        r.metrics
    );
    assert_eq!(
        r.total("pmem", "queue_event_count"),
        r.total("pmem_pmem0", "queue_event_count"),
        "aggregate"
    );
    assert_eq!(r.total("pmem", "event_fails"), 0);
    let want = sum_words(&window_of(&before));
    assert!(
        out.contains(&format!(
            "TEST ok pmem bytes={WINDOW} sum={want:016x} root=/dev/pmem0"
        )),
        "{out}"
    );
    assert!(
        out.contains("start=0x8000000000 size=0x200000"),
        "512 GiB window: {out}"
    );
    assert!(
        out.contains(&format!(
            "TEST info pmem write bytes={WRITE_LEN} readback={WRITE_LEN} flush_status=0"
        )),
        "{out}"
    );
    println!("pmem: {}", read_line(out, "TEST info pmem read"));
    let after = std::fs::read(&file).unwrap();
    assert_eq!(after.len(), FILE_LEN, "the file never grows");
    for (i, b) in after.iter().enumerate() {
        let want = if (WRITE_OFF..WRITE_OFF + WRITE_LEN).contains(&i) {
            pattern(i - WRITE_OFF)
        } else {
            before[i]
        };
        assert_eq!(*b, want, "byte {i}");
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn test_should_never_change_the_file_of_a_read_only_pmem_device() {
    if !kvm_or_skip() {
        return;
    }
    let file = random_file("pmem-ro.img", FILE_LEN, 22);
    let before = std::fs::read(&file).unwrap();
    let r = run(
        &json!({"id": "ro0", "path_on_host": file, "root_device": true, "read_only": true}),
        &format!("squibtest.pmem_write={WRITE_LEN} squibtest.pmem_write_off={WRITE_OFF}"),
    );
    let (code, out) = (r.code, r.out.as_str());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        r.total("pmem_ro0", "queue_event_count") >= 1,
        "{:?}",
        r.metrics
    );
    let want = sum_words(&window_of(&before));
    assert!(
        out.contains(&format!("TEST ok pmem bytes={WINDOW} sum={want:016x}")),
        "{out}"
    );
    // The writes were dropped: the window still holds the file's bytes (only the random
    // coincidences with the pattern read back "as written").
    let coincidences = (0..WRITE_LEN)
        .filter(|&i| before[WRITE_OFF + i] == pattern(i))
        .count();
    assert!(
        out.contains(&format!(
            "TEST info pmem write bytes={WRITE_LEN} readback={coincidences} flush_status=0"
        )),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "read-only file changed"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn test_should_report_firecracker_errors_for_pmem() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    let bs = json!({"kernel_image_path": test_guest(), "boot_args": boot_args("")});
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    let missing = json!({"id": "p0", "path_on_host": "/nonexistent/pmem.img"}).to_string();
    assert_eq!(vm.api("PUT", "/pmem/p0", Some(&missing)).0, 204);
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 400);
    assert!(
        b.contains(
            "Start microvm error: Cannot create pmem device: Error accessing backing file: No such file or directory (os error 2)"
        ),
        "{b}"
    );
    let empty = tmp_path("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let body = json!({"id": "p0", "path_on_host": empty}).to_string();
    assert_eq!(vm.api("PUT", "/pmem/p0", Some(&body)).0, 204);
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 400);
    assert!(
        b.contains("Cannot create pmem device: Error backing file size is 0"),
        "{b}"
    );

    // A good device boots; then PUT is hot-plug (PCI) and PATCH updates the rate limiter.
    let file = random_file("pmem-api.img", 4096, 23);
    let body = json!({"id": "p0", "path_on_host": file}).to_string();
    assert_eq!(vm.api("PUT", "/pmem/p0", Some(&body)).0, 204);
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    let body = json!({"id": "p1", "path_on_host": file}).to_string();
    let (s, b) = vm.api("PUT", "/pmem/p1", Some(&body));
    assert_eq!((s, b.contains("PCI is not enabled")), (400, true), "{b}");
    let rl = r#"{"id":"p0","rate_limiter":{"ops":{"size":10,"refill_time":100}}}"#;
    let (s, b) = vm.api("PATCH", "/pmem/p0", Some(rl));
    assert_eq!(s, 204, "{b}");
    let (s, b) = vm.api(
        "PATCH",
        "/pmem/nope",
        Some(r#"{"id":"nope","rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#),
    );
    assert_eq!(s, 400);
    assert!(b.contains("Unable to patch the pmem device"), "{b}");
    let (_, b) = vm.api("GET", "/vm/config", None);
    assert!(b.contains(r#""pmem":[{"id":"p0""#), "{b}");
    for p in [empty, file] {
        let _ = std::fs::remove_file(p);
    }
}

fn wait_console(path: &Path, needle: &str) {
    assert!(
        wait_for(Duration::from_secs(60), || std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
            .then_some(()))
        .is_some(),
        "no `{needle}`:\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[test]
fn test_should_keep_a_pmem_device_working_across_a_snapshot() {
    if !kvm_or_skip() {
        return;
    }
    let file = random_file("pmem-snap.img", FILE_LEN, 24);
    let go_off: u64 = 0x10_0000;
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(&[0; 8], go_off)
        .unwrap();
    let before = std::fs::read(&file).unwrap();
    let serial1 = tmp_path("pmem-snap1.log");
    let vm1 = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    let body = json!({ "serial_out_path": serial1 }).to_string();
    assert_eq!(vm1.api("PUT", "/serial", Some(&body)).0, 204);
    let extra = format!(
        "squibtest.pmem_wait_off={go_off} squibtest.pmem_write={WRITE_LEN} squibtest.pmem_write_off={WRITE_OFF}"
    );
    let bs = json!({"kernel_image_path": test_guest(), "boot_args": boot_args(&extra)});
    assert_eq!(vm1.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    let body = json!({"id": "snap0", "path_on_host": file}).to_string();
    assert_eq!(vm1.api("PUT", "/pmem/snap0", Some(&body)).0, 204);
    let (s, b) = vm1.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 204, "{b}");
    wait_console(&serial1, "TEST info pmem waiting");
    assert_eq!(
        vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0,
        204
    );
    let (state, mem) = (tmp_path("pmem.state"), tmp_path("pmem.mem"));
    let body = json!({"snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    drop(vm1);

    let serial2 = tmp_path("pmem-snap2.log");
    let mut vm2 = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    let body = json!({ "serial_out_path": serial2 }).to_string();
    assert_eq!(vm2.api("PUT", "/serial", Some(&body)).0, 204);
    let body = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
    });
    let (s, b) = vm2.api("PUT", "/snapshot/load", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm2.output());
    let (_, cfg) = vm2.api("GET", "/vm/config", None);
    assert!(cfg.contains(r#""pmem":[{"id":"snap0""#), "{cfg}");
    // The host writes the go word into the file: the restored window shows it to the guest.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(b"sqb-go!!", go_off)
        .unwrap();
    assert_eq!(
        vm2.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        vm2.output()
    );
    let out = std::fs::read_to_string(&serial2).unwrap();
    assert!(out.contains("TEST info pmem go"), "{out}");
    assert!(out.contains("flush_status=0"), "{out}");
    assert!(out.contains("TEST ok pmem"), "{out}");
    let after = std::fs::read(&file).unwrap();
    for i in 0..WRITE_LEN {
        assert_eq!(after[WRITE_OFF + i], pattern(i), "byte {i}");
    }
    assert_eq!(after[..WRITE_OFF], before[..WRITE_OFF]);
    for p in [state, mem, serial1, serial2, file] {
        let _ = std::fs::remove_file(p);
    }
}
