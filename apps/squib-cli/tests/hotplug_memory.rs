//! End-to-end: virtio-mem (`/hotplug/memory`) through the `squib` binary and the test guest's
//! `mem` scenario. `PATCH /hotplug/memory` makes the guest plug blocks of the region at 512 GiB
//! (it then writes and checks every page), the host's RSS grows by what the guest touches and
//! falls back when it unplugs (the memory is released), an unplugged slot is gone from the guest
//! (reads exit to the VMM: all ones), `GET /hotplug/memory` follows, Firecracker's errors; the
//! plugged memory survives a snapshot. Prints the time to plug 128 MiB.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Squib, configure_metrics, kvm_or_skip, metrics_total, test_guest, tmp_path, wait_for,
};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The console's complete lines (a line the guest is still printing is left out).
fn console(path: &Path) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text
}

/// Waits for a console line starting with `prefix`, returns it.
fn wait_line(vm: &Squib, path: &Path, prefix: &str) -> String {
    wait_for(Duration::from_secs(90), || {
        console(path)
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no `{prefix}`:\n{}\n{}", console(path), vm.output()))
}

fn tsc_khz() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("cpu MHz")?
                    .split(':')
                    .nth(1)?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(String::new(), |mhz| {
            format!(" squibtest.tsc_khz={mhz:.0}000")
        })
}

/// Boots the `mem` scenario with a 1 GiB hotplug region; returns the microVM and its metrics
/// file.
fn boot(serial: &Path, extra: &str) -> (Squib, std::path::PathBuf) {
    let vm = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    let metrics = configure_metrics(&vm);
    let body = json!({ "serial_out_path": serial }).to_string();
    assert_eq!(vm.api("PUT", "/serial", Some(&body)).0, 204);
    let (s, b) = vm.api("GET", "/hotplug/memory", None);
    assert_eq!(s, 400);
    assert!(b.contains("No memory hotplug device found."), "{b}");
    let mc = r#"{"vcpu_count":1,"mem_size_mib":128}"#;
    assert_eq!(vm.api("PUT", "/machine-config", Some(mc)).0, 204);
    let bs = json!({
        "kernel_image_path": test_guest(),
        "boot_args": format!("console=ttyS0 reboot=k panic=1 squibtest=mem{} {extra}", tsc_khz()),
    });
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    // Firecracker's rules beyond the schema.
    for (body, text) in [
        (
            r#"{"total_size_mib":1024,"block_size_mib":1}"#,
            "Memory hotplug config error: Block size must not be lower than 2 MiB",
        ),
        (
            r#"{"total_size_mib":512,"slot_size_mib":64}"#,
            "Memory hotplug config error: Slot size must not be lower than 128 MiB",
        ),
    ] {
        let (s, b) = vm.api("PUT", "/hotplug/memory", Some(body));
        assert_eq!(s, 400, "{body}");
        assert!(b.contains(text), "{b}");
    }
    let (s, b) = vm.api("PUT", "/hotplug/memory", Some(r#"{"total_size_mib":1024}"#));
    assert_eq!(s, 204, "{b}");
    let (s, b) = vm.api("GET", "/hotplug/memory", None);
    assert_eq!(s, 200);
    let st: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (
            st["total_size_mib"].as_u64(),
            st["plugged_size_mib"].as_u64()
        ),
        (Some(1024), Some(0))
    );
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    wait_line(&vm, serial, "TEST info mem ready");
    (vm, metrics)
}

fn status(vm: &Squib) -> Value {
    let (s, b) = vm.api("GET", "/hotplug/memory", None);
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

fn request(vm: &Squib, mib: u64) {
    let body = json!({ "requested_size_mib": mib }).to_string();
    let (s, b) = vm.api("PATCH", "/hotplug/memory", Some(&body));
    assert_eq!(s, 204, "{b}");
}

fn count_lines(path: &Path, prefix: &str) -> usize {
    console(path)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// Requests `mib` and waits for the guest's next "plugged"/"unplugged" line.
fn resize(vm: &Squib, serial: &Path, mib: u64, prefix: &str) -> (String, Duration) {
    let seen = count_lines(serial, prefix);
    let started = Instant::now();
    request(vm, mib);
    let line = wait_for(Duration::from_secs(90), || {
        console(serial)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .nth(seen)
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no new `{prefix}`:\n{}", console(serial)));
    (line, started.elapsed())
}

#[test]
fn test_should_plug_check_and_unplug_hotplug_memory() {
    if !kvm_or_skip() {
        return;
    }
    let serial = tmp_path("mem.log");
    let (mut vm, metrics) = boot(&serial, "");
    let pid = vm.child.id();

    // Firecracker's errors on PATCH.
    let (s, b) = vm.api(
        "PATCH",
        "/hotplug/memory",
        Some(r#"{"requested_size_mib":3}"#),
    );
    assert_eq!(s, 400);
    assert!(
        b.contains("Memory hotplug update error: Failed to create memory hotplug device: Size 3145728 is invalid: it must be a multiple of block size and less than the total size"),
        "{b}"
    );
    let (s, _) = vm.api(
        "PATCH",
        "/hotplug/memory",
        Some(r#"{"requested_size_mib":2048}"#),
    );
    assert_eq!(s, 400);

    let before = rss_bytes(pid);
    let (line, host_time) = resize(&vm, &serial, 128, "TEST info mem plugged");
    assert!(line.starts_with("TEST info mem plugged mib=128 "), "{line}");
    let checked = wait_line(&vm, &serial, "TEST info mem checked");
    assert_eq!(
        checked,
        "TEST info mem checked mib=128 pages=32768 ok=32768"
    );
    println!("virtio-mem: plug 128 MiB: guest `{line}`, host PATCH→line {host_time:?}");
    let st = status(&vm);
    assert_eq!(
        (
            st["plugged_size_mib"].as_u64(),
            st["requested_size_mib"].as_u64()
        ),
        (Some(128), Some(128)),
        "{st}"
    );
    let plugged_rss = rss_bytes(pid);
    assert!(
        plugged_rss >= before + 120 * MIB,
        "the guest touched 128 MiB: RSS {before} -> {plugged_rss}"
    );

    // Unplug down to 64 MiB then 0: the memory goes back to the host; unplugged memory is
    // inaccessible.
    let (line, _) = resize(&vm, &serial, 64, "TEST info mem unplugged");
    assert!(
        line.starts_with("TEST info mem unplugged mib=64 "),
        "{line}"
    );
    assert!(
        line.ends_with("unplugged_read=0x0"),
        "same slot, released: {line}"
    );
    let (line, _) = resize(&vm, &serial, 0, "TEST info mem unplugged");
    assert!(
        line.ends_with("unplugged_read=0xffffffffffffffff"),
        "slot removed: {line}"
    );
    let after = wait_for(Duration::from_secs(10), || {
        let r = rss_bytes(pid);
        (r + 100 * MIB <= plugged_rss).then_some(r)
    });
    println!(
        "virtio-mem: RSS before plug {} KiB, plugged {} KiB, after unplug {:?} KiB",
        before >> 10,
        plugged_rss >> 10,
        after.map(|r| r >> 10)
    );
    assert!(after.is_some(), "unplugged memory not released");
    assert_eq!(vm.wait(Duration::from_secs(60)), Some(0), "{}", vm.output());
    // The device's own counters reach the metrics lines (the guest ends after the last
    // unplug: the line written when the VMM stopped has the rest).
    let total = |key| metrics_total(&metrics, "memory_hotplug", key);
    let figures = [
        "queue_event_count",
        "plug_count",
        "plug_bytes",
        "unplug_count",
        "unplug_bytes",
        "plug_fails",
        "unplug_fails",
    ]
    .map(|k| (k, total(k)));
    println!("virtio-mem metrics: {figures:?}");
    assert!(total("queue_event_count") >= 1);
    assert!(total("plug_count") >= 1);
    assert_eq!(total("plug_bytes"), 128 * MIB, "{figures:?}");
    // 128 → 64 MiB is an UNPLUG of 64 MiB; 64 → 0 may be UNPLUG or UNPLUG_ALL.
    assert!(total("unplug_count") >= 1, "{figures:?}");
    assert!(total("unplug_bytes") >= 64 * MIB, "{figures:?}");
    assert_eq!(total("plug_fails"), 0);
    let out = console(&serial);
    assert!(
        out.contains("TEST info mem verify pages=32768 ok=32768"),
        "{out}"
    );
    assert!(out.contains("TEST ok mem max_mib=128"), "{out}");
    let _ = std::fs::remove_file(serial);
}

#[test]
fn test_should_plug_block_by_block_across_slots() {
    if !kvm_or_skip() {
        return;
    }
    let serial = tmp_path("mem-chunks.log");
    let (mut vm, _metrics) = boot(&serial, "squibtest.mem_chunk=1");
    let (line, _) = resize(&vm, &serial, 256, "TEST info mem plugged");
    assert!(
        line.starts_with("TEST info mem plugged mib=256 ") && line.ends_with("requests=128"),
        "{line}"
    );
    assert_eq!(
        wait_line(&vm, &serial, "TEST info mem checked"),
        "TEST info mem checked mib=256 pages=65536 ok=65536"
    );
    let (line, _) = resize(&vm, &serial, 0, "TEST info mem unplugged");
    assert!(
        line.ends_with("unplugged_read=0xffffffffffffffff"),
        "{line}"
    );
    assert_eq!(vm.wait(Duration::from_secs(60)), Some(0), "{}", vm.output());
    assert!(console(&serial).contains("TEST ok mem max_mib=256 requests=256"));
    let _ = std::fs::remove_file(serial);
}

#[test]
fn test_should_keep_plugged_memory_across_a_snapshot() {
    if !kvm_or_skip() {
        return;
    }
    let serial1 = tmp_path("mem-snap1.log");
    let (vm1, _metrics) = boot(&serial1, "");
    resize(&vm1, &serial1, 128, "TEST info mem plugged");
    wait_line(&vm1, &serial1, "TEST info mem checked");
    assert_eq!(
        vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0,
        204
    );
    let (state, mem) = (tmp_path("mem.state"), tmp_path("mem.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    drop(vm1);

    let serial2 = tmp_path("mem-snap2.log");
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
    let st = status(&vm2);
    assert_eq!(
        (
            st["plugged_size_mib"].as_u64(),
            st["total_size_mib"].as_u64()
        ),
        (Some(128), Some(1024)),
        "{st}"
    );
    let (_, cfg) = vm2.api("GET", "/vm/config", None);
    assert!(
        cfg.contains(r#""memory-hotplug":{"total_size_mib":1024"#),
        "{cfg}"
    );
    request(&vm2, 0);
    assert_eq!(
        vm2.wait(Duration::from_secs(90)),
        Some(0),
        "{}",
        vm2.output()
    );
    let out = console(&serial2);
    assert!(
        out.contains("TEST info mem verify pages=32768 ok=32768"),
        "plugged memory lost across the snapshot:\n{out}"
    );
    assert!(out.contains("unplugged_read=0xffffffffffffffff"), "{out}");
    assert!(out.contains("TEST ok mem max_mib=128"), "{out}");
    for p in [state, mem, serial1, serial2] {
        let _ = std::fs::remove_file(p);
    }
}
