//! End-to-end: virtio-balloon through the `squib` binary, driven by the test guest's `balloon`
//! scenario. The guest touches 128 MiB of its 256 MiB; `PATCH /balloon` to 64 MiB makes it
//! inflate, and the squib process's RSS must fall by at least 80 % of 64 MiB; statistics show up
//! in `GET /balloon/statistics`; Firecracker's errors for what cannot be done; `PATCH` back to
//! 0 deflates and the guest checks that every ballooned page reads zero (the host released it)
//! while the others kept their contents. The same continues across a snapshot.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Squib, configure_metrics, flush_metrics, kvm_or_skip, metrics_total, test_guest, tmp_path,
    wait_for,
};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const INFLATE_MIB: u64 = 64;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn serial(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_line(vm: &Squib, path: &Path, needle: &str, secs: u64) {
    assert!(
        wait_for(Duration::from_secs(secs), || serial(path)
            .contains(needle)
            .then_some(()))
        .is_some(),
        "no `{needle}` on the console:\n{}\n{}",
        serial(path),
        vm.output()
    );
}

/// Boots the `balloon` scenario with 256 MiB and the balloon configured as `balloon`; returns
/// the microVM and its metrics file.
fn boot(balloon: &Value, serial_path: &Path) -> (Squib, std::path::PathBuf) {
    let vm = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    let metrics = configure_metrics(&vm);
    let body = json!({ "serial_out_path": serial_path }).to_string();
    assert_eq!(vm.api("PUT", "/serial", Some(&body)).0, 204);
    let (s, b) = vm.api("GET", "/balloon", None);
    assert_eq!(s, 400);
    assert!(
        b.contains("Balloon config error: No balloon device found."),
        "{b}"
    );
    let mc = r#"{"vcpu_count":1,"mem_size_mib":256}"#;
    assert_eq!(vm.api("PUT", "/machine-config", Some(mc)).0, 204);
    let bs = json!({
        "kernel_image_path": test_guest(),
        "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=balloon",
    });
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    let too_big = json!({"amount_mib": 300, "deflate_on_oom": false}).to_string();
    let (s, b) = vm.api("PUT", "/balloon", Some(&too_big));
    assert_eq!(s, 400);
    assert!(b.contains("Amount of pages requested is too large."), "{b}");
    let (s, b) = vm.api("PUT", "/balloon", Some(&balloon.to_string()));
    assert_eq!(s, 204, "{b}");
    let (s, b) = vm.api("PATCH", "/balloon", Some(r#"{"amount_mib":1}"#));
    assert_eq!(s, 400);
    assert!(
        b.contains("not supported before starting the microVM"),
        "{b}"
    );
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    (vm, metrics)
}

fn stats(vm: &Squib) -> Value {
    let (s, b) = vm.api("GET", "/balloon/statistics", None);
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).expect("stats json")
}

/// Inflates 64 MiB of a guest that touched 128 MiB; returns (RSS before, RSS after).
fn inflate(vm: &Squib, serial_path: &Path) -> (u64, u64) {
    wait_line(
        vm,
        serial_path,
        "TEST info balloon ready touched_mib=128",
        60,
    );
    let pid = vm.child.id();
    let before = rss_bytes(pid);
    let started = Instant::now();
    let body = json!({ "amount_mib": INFLATE_MIB }).to_string();
    let (s, b) = vm.api("PATCH", "/balloon", Some(&body));
    assert_eq!(s, 204, "{b}");
    wait_line(
        vm,
        serial_path,
        "TEST info balloon inflated pages=16384",
        60,
    );
    let took = started.elapsed();
    let after = rss_bytes(pid);
    let kib = |b: u64| b >> 10;
    println!(
        "balloon: RSS before inflating {INFLATE_MIB} MiB: {} KiB, after: {} KiB (released {} KiB = {} % of {INFLATE_MIB} MiB), inflate took {took:?}",
        kib(before),
        kib(after),
        kib(before.saturating_sub(after)),
        before.saturating_sub(after) * 100 / (INFLATE_MIB * MIB),
    );
    (before, after)
}

#[test]
fn test_should_return_inflated_memory_to_the_host_and_report_statistics() {
    if !kvm_or_skip() {
        return;
    }
    let serial_path = tmp_path("balloon.log");
    let (mut vm, metrics) = boot(
        &json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
        &serial_path,
    );
    let (before, after) = inflate(&vm, &serial_path);
    assert!(
        before.saturating_sub(after) >= INFLATE_MIB * MIB * 8 / 10,
        "less than 80 % of {INFLATE_MIB} MiB returned: RSS {before} -> {after}"
    );

    // Statistics: the guest's numbers (major_faults counts the host's requests) and the
    // target/actual the device knows.
    let s = wait_for(Duration::from_secs(30), || {
        let s = stats(&vm);
        (s["major_faults"].as_u64() >= Some(1)).then_some(s)
    })
    .expect("the guest never refreshed its statistics");
    assert_eq!(s["target_mib"], 64, "{s}");
    assert_eq!(s["actual_mib"], 64, "{s}");
    assert_eq!(s["target_pages"], 16384, "{s}");
    assert_eq!(
        s["total_memory"].as_u64().map(|t| t >> 20),
        Some(255),
        "{s}"
    );
    assert!(s["free_memory"].as_u64() > Some(0), "{s}");
    assert!(s.get("hugetlb_failures").is_none(), "unreported field: {s}");
    let (_, b) = vm.api("GET", "/balloon", None);
    assert!(b.contains(r#""amount_mib":64"#), "{b}");
    // The device's own counters reach the metrics line.
    flush_metrics(&vm);
    let total = |key| metrics_total(&metrics, "balloon", key);
    let (inflates, updates) = (total("inflate_count"), total("stats_updates_count"));
    println!("balloon metrics: inflate_count={inflates} stats_updates_count={updates}");
    assert!(inflates >= 1, "inflate_count {inflates}");
    assert!(updates >= 1, "stats_updates_count {updates}");
    assert_eq!(total("event_fails"), 0);

    // Firecracker's errors.
    let (s, b) = vm.api("PATCH", "/balloon", Some(r#"{"amount_mib":257}"#));
    assert_eq!(s, 400);
    assert!(b.contains("Amount of pages requested is too large."), "{b}");
    let (s, b) = vm.api(
        "PATCH",
        "/balloon/statistics",
        Some(r#"{"stats_polling_interval_s":0}"#),
    );
    assert_eq!(s, 400);
    assert!(
        b.contains(
            "Balloon update error: Balloon: Statistics cannot be enabled/disabled after activation."
        ),
        "{b}"
    );
    let (s, b) = vm.api("PATCH", "/balloon/hinting/start", None);
    assert_eq!(s, 400);
    assert!(
        b.contains("Balloon update error: Balloon: Attempting to use hinting when not enabled"),
        "{b}"
    );
    let (s, b) = vm.api(
        "PATCH",
        "/balloon/statistics",
        Some(r#"{"stats_polling_interval_s":2}"#),
    );
    assert_eq!(s, 204, "{b}");
    let (_, b) = vm.api("GET", "/vm/config", None);
    assert!(b.contains(r#""stats_polling_interval_s":2"#), "{b}");

    // Deflate: the guest checks the released pages read zero and the rest is intact.
    let (s, b) = vm.api("PATCH", "/balloon", Some(r#"{"amount_mib":0}"#));
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        vm.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        vm.output()
    );
    let out = serial(&serial_path);
    assert!(
        out.contains("TEST ok balloon inflated=16384 zeroed=16384 intact=16384"),
        "{out}"
    );
    // The line written when the VMM stopped carries the deflate.
    let deflates = metrics_total(&metrics, "balloon", "deflate_count");
    assert!(deflates >= 1, "deflate_count {deflates}");
    let _ = std::fs::remove_file(&serial_path);
    let _ = std::fs::remove_file(&metrics);
}

#[test]
fn test_should_refuse_statistics_when_disabled_and_run_hinting_commands() {
    if !kvm_or_skip() {
        return;
    }
    let serial_path = tmp_path("balloon-hint.log");
    let (mut vm, _metrics) = boot(
        &json!({"amount_mib": 0, "deflate_on_oom": false, "free_page_hinting": true,
                "free_page_reporting": true}),
        &serial_path,
    );
    wait_line(&vm, &serial_path, "TEST info balloon ready", 60);
    assert!(
        serial(&serial_path).contains("queues=4"),
        "{}",
        serial(&serial_path)
    );
    let (s, b) = vm.api("GET", "/balloon/statistics", None);
    assert_eq!(s, 400);
    assert!(
        b.contains("Internal VMM error: Balloon: Received stats query when stats are disabled."),
        "{b}"
    );
    let (s, b) = vm.api(
        "PATCH",
        "/balloon/statistics",
        Some(r#"{"stats_polling_interval_s":1}"#),
    );
    assert_eq!(s, 400);
    assert!(
        b.contains(
            "Balloon update error: Balloon: Statistics cannot be enabled/disabled after activation."
        ),
        "{b}"
    );

    let (s, b) = vm.api("GET", "/balloon/hinting/status", None);
    assert_eq!((s, b.as_str()), (200, r#"{"host_cmd":0,"guest_cmd":null}"#));
    let (s, b) = vm.api("PATCH", "/balloon/hinting/start", None);
    assert_eq!(s, 204, "{b}");
    let (s, b) = vm.api("GET", "/balloon/hinting/status", None);
    assert_eq!((s, b.as_str()), (200, r#"{"host_cmd":2,"guest_cmd":null}"#));
    let (s, b) = vm.api(
        "PATCH",
        "/balloon/hinting/start",
        Some(r#"{"acknowledge_on_stop":false}"#),
    );
    assert_eq!(s, 204, "{b}");
    let (s, b) = vm.api("PATCH", "/balloon/hinting/status", None);
    assert_eq!((s, b.as_str()), (200, r#"{"host_cmd":3,"guest_cmd":null}"#));
    let (s, b) = vm.api("PATCH", "/balloon/hinting/stop", None);
    assert_eq!(s, 204, "{b}");
    let (_, b) = vm.api("GET", "/balloon/hinting/status", None);
    assert_eq!(b, r#"{"host_cmd":1,"guest_cmd":null}"#);

    // A full inflate/deflate cycle still works with the extra queues.
    let (s, _) = vm.api("PATCH", "/balloon", Some(r#"{"amount_mib":8}"#));
    assert_eq!(s, 204);
    wait_line(
        &vm,
        &serial_path,
        "TEST info balloon inflated pages=2048",
        60,
    );
    let (s, _) = vm.api("PATCH", "/balloon", Some(r#"{"amount_mib":0}"#));
    assert_eq!(s, 204);
    assert_eq!(
        vm.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        vm.output()
    );
    assert!(
        serial(&serial_path).contains("TEST ok balloon inflated=2048 zeroed=2048 intact=30720"),
        "{}",
        serial(&serial_path)
    );
    let _ = std::fs::remove_file(&serial_path);
}

/// Inflated, snapshotted, restored in a new process: the restored balloon keeps its target and
/// statistics, and deflating there completes the guest's check.
#[test]
fn test_should_keep_the_balloon_across_a_snapshot() {
    if !kvm_or_skip() {
        return;
    }
    let serial1 = tmp_path("balloon-snap1.log");
    let (vm1, _metrics) = boot(
        &json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
        &serial1,
    );
    inflate(&vm1, &serial1);
    let (s, b) = vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(s, 204, "{b}");
    let (state, mem) = (tmp_path("balloon.state"), tmp_path("balloon.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    drop(vm1);

    let serial2 = tmp_path("balloon-snap2.log");
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
    let (_, b) = vm2.api("GET", "/balloon", None);
    assert!(b.contains(r#""amount_mib":64"#), "{b}");
    let s = stats(&vm2);
    assert_eq!(
        (s["target_mib"].as_u64(), s["actual_mib"].as_u64()),
        (Some(64), Some(64))
    );
    let (s, b) = vm2.api("PATCH", "/balloon", Some(r#"{"amount_mib":0}"#));
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        vm2.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        vm2.output()
    );
    let out = serial(&serial2);
    assert!(
        out.contains("TEST ok balloon inflated=16384 zeroed=16384 intact=16384"),
        "{out}"
    );
    for p in [&state, &mem, &serial1, &serial2] {
        let _ = std::fs::remove_file(p);
    }
}
