//! End-to-end: virtio-blk and virtio-rng, exercised by the test guest's own virtio-mmio driver,
//! configured through the Firecracker API / `--config-file` exactly as a Firecracker user would.

mod common;

use std::time::{Duration, Instant};

use common::{Squib, fnv1a, kvm_or_skip, random_file, test_guest, tmp_path, wait_for};
use serde_json::json;

/// Boot the test guest with `--no-api --config-file`; returns (exit code, console output).
fn run(
    scenario: &str,
    extra: &str,
    drives: &serde_json::Value,
    entropy: bool,
) -> (Option<i32>, String) {
    let cfg = tmp_path("virtio.json");
    let mut doc = json!({
        "boot-source": {
            "kernel_image_path": test_guest(),
            "boot_args": format!("console=ttyS0 reboot=k panic=1 squibtest={scenario} {extra}"),
        },
        "drives": drives,
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
    });
    if entropy {
        doc["entropy"] = json!({});
    }
    std::fs::write(&cfg, doc.to_string()).expect("config");
    let mut vm = Squib::spawn(
        &["--no-api", "--config-file", cfg.to_str().expect("utf8")],
        None,
    );
    let code = vm.wait(Duration::from_secs(120));
    (code, vm.output())
}

fn drive(id: &str, path: &std::path::Path, read_only: bool, cache: &str) -> serde_json::Value {
    json!({"drive_id": id, "path_on_host": path, "is_root_device": false,
           "is_read_only": read_only, "cache_type": cache})
}

/// `drive` with an explicit `io_engine` ("Sync" or "Async").
fn drive_on(
    engine: &str,
    path: &std::path::Path,
    read_only: bool,
    cache: &str,
) -> serde_json::Value {
    let mut d = drive("d0", path, read_only, cache);
    d["io_engine"] = json!(engine);
    d
}

#[test]
fn test_should_read_known_sectors_from_virtio_blk() {
    read_known_sectors("Sync");
}

/// The same guest reads through the io_uring engine.
#[test]
fn test_should_read_known_sectors_from_virtio_blk_with_async_engine() {
    read_known_sectors("Async");
}

fn read_known_sectors(engine: &str) {
    if !kvm_or_skip() {
        return;
    }
    let disk = random_file(&format!("read-{engine}.img"), 4 << 20, 7);
    let (code, out) = run(
        "blk-read",
        "",
        &json!([drive_on(engine, &disk, true, "Unsafe")]),
        false,
    );
    assert_eq!(code, Some(0), "{out}");
    let want = fnv1a(&std::fs::read(&disk).expect("disk")[..64 * 512]);
    assert!(
        out.contains(&format!(
            "TEST ok blk-read sectors=64 capacity=8192 sum={want:016x}"
        )),
        "{out}"
    );
}

#[test]
fn test_should_write_pattern_and_flush_through_virtio_blk() {
    write_pattern_and_flush("Sync");
}

/// The same writes and flush through the io_uring engine (flush = io_uring fsync).
#[test]
fn test_should_write_pattern_and_flush_through_virtio_blk_with_async_engine() {
    write_pattern_and_flush("Async");
}

fn write_pattern_and_flush(engine: &str) {
    if !kvm_or_skip() {
        return;
    }
    let disk = tmp_path(&format!("write-{engine}.img"));
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk");
    let (code, out) = run(
        "blk-write",
        "",
        &json!([drive_on(engine, &disk, false, "Writeback")]),
        false,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TEST ok blk-write sectors=8 start=8"), "{out}");
    let data = std::fs::read(&disk).expect("disk");
    for s in 8..16usize {
        for i in 0..512usize {
            assert_eq!(
                usize::from(data[s * 512 + i]),
                (s * 31 + i) & 0xff,
                "sector {s} byte {i}"
            );
        }
    }
    assert!(data[..8 * 512].iter().all(|b| *b == 0) && data[16 * 512..].iter().all(|b| *b == 0));
}

#[test]
fn test_should_fail_writes_to_read_only_drive_with_ioerr() {
    if !kvm_or_skip() {
        return;
    }
    let disk = random_file("ro.img", 1 << 20, 9);
    let before = std::fs::read(&disk).expect("disk");
    let (code, out) = run(
        "blk-ro",
        "",
        &json!([drive("d0", &disk, true, "Unsafe")]),
        false,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("TEST ok blk-ro status=1 ro_offered=1"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&disk).expect("disk"),
        before,
        "read-only file changed"
    );
}

#[test]
fn test_should_offer_flush_only_for_writeback() {
    if !kvm_or_skip() {
        return;
    }
    for (cache, offered) in [("Writeback", 1), ("Unsafe", 0)] {
        let disk = tmp_path("flush.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk");
        let (code, out) = run(
            "blk-flush",
            "",
            &json!([drive("d0", &disk, false, cache)]),
            false,
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains(&format!(
                "TEST ok blk-flush status=0 flush_offered={offered}"
            )),
            "{cache}: {out}"
        );
    }
}

#[test]
fn test_should_serve_entropy_from_virtio_rng() {
    if !kvm_or_skip() {
        return;
    }
    let (code, out) = run("rng", "", &json!([]), true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TEST ok rng bytes=4096"), "{out}");
}

#[test]
fn test_should_patch_drive_backing_file_after_boot() {
    if !kvm_or_skip() {
        return;
    }
    let small = random_file("patch-a.img", 1 << 20, 3);
    let big = random_file("patch-b.img", 2 << 20, 4);
    let socket = tmp_path("patch.sock");
    let serial = tmp_path("patch.serial");
    let mut vm = Squib::spawn(&[], Some(&socket));
    let ok = |r: (u16, String)| assert_eq!(r.0, 204, "{}", r.1);
    ok(vm.api(
        "PUT",
        "/serial",
        Some(&json!({"serial_out_path": serial}).to_string()),
    ));
    ok(vm.api(
        "PUT",
        "/drives/d0",
        Some(&drive("d0", &small, false, "Unsafe").to_string()),
    ));
    let bs = json!({"kernel_image_path": test_guest(), "boot_args": "console=ttyS0 squibtest=blk-patch"});
    ok(vm.api("PUT", "/boot-source", Some(&bs.to_string())));
    // Before boot, PATCH is refused with Firecracker's text.
    let (s, body) = vm.api(
        "PATCH",
        "/drives/d0",
        Some(&json!({"drive_id": "d0", "path_on_host": big}).to_string()),
    );
    assert_eq!(
        (s, body.contains("not supported before starting")),
        (400, true),
        "{body}"
    );
    ok(vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    ));
    let seen = |needle: &str| {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains(needle)
    };
    assert!(
        wait_for(Duration::from_secs(60), || seen(
            "TEST info blk-patch capacity=2048"
        )
        .then_some(()))
        .is_some()
    );
    ok(vm.api(
        "PATCH",
        "/drives/d0",
        Some(&json!({"drive_id": "d0", "path_on_host": big}).to_string()),
    ));
    let code = vm.wait(Duration::from_secs(60));
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("TEST ok blk-patch old=2048 new=4096"),
        "{text}"
    );
}

#[test]
fn test_should_refuse_bad_drives_with_firecracker_texts() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("drives.sock");
    let vm = Squib::spawn(&[], Some(&socket));
    let (s, body) = vm.api(
        "PUT",
        "/drives/d0",
        Some(r#"{"drive_id":"d0","path_on_host":"/nonexistent/disk.img","is_root_device":false}"#),
    );
    assert_eq!(s, 400);
    assert!(
        body.contains("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2)"),
        "{body}"
    );
    let a = random_file("root-a.img", 1 << 20, 1);
    let b = random_file("root-b.img", 1 << 20, 2);
    let root = |id: &str, p: &std::path::Path| {
        json!({"drive_id": id, "path_on_host": p, "is_root_device": true}).to_string()
    };
    assert_eq!(vm.api("PUT", "/drives/a", Some(&root("a", &a))).0, 204);
    let (s, body) = vm.api("PUT", "/drives/b", Some(&root("b", &b)));
    assert_eq!(
        (s, body.as_str()),
        (
            400,
            r#"{"fault_message":"Drive config error: A root block device already exists!"}"#
        )
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&vm.api("GET", "/vm/config", None).1).expect("json");
    assert_eq!(cfg["drives"][0]["drive_id"], "a");
    assert_eq!(cfg["drives"].as_array().map(Vec::len), Some(1));
}

/// A bandwidth-limited drive: the guest reads 8 MiB through a 2 MiB/s bucket (512 KiB, 250 ms).
/// The host times the transfer between the guest's `BLK-T0 seq` / `BLK-T1 seq` console markers.
#[test]
fn test_should_throttle_drive_to_configured_bandwidth() {
    if !kvm_or_skip() {
        return;
    }
    let disk = random_file("rl.img", 9 << 20, 5);
    let socket = tmp_path("rl.sock");
    let serial = tmp_path("rl.serial");
    let mut vm = Squib::spawn(&[], Some(&socket));
    let ok = |r: (u16, String)| assert_eq!(r.0, 204, "{}", r.1);
    ok(vm.api(
        "PUT",
        "/serial",
        Some(&json!({"serial_out_path": serial}).to_string()),
    ));
    let mut d = drive("d0", &disk, true, "Unsafe");
    d["rate_limiter"] = json!({"bandwidth": {"size": 524_288, "refill_time": 250}});
    ok(vm.api("PUT", "/drives/d0", Some(&d.to_string())));
    let bs = json!({"kernel_image_path": test_guest(),
        "boot_args": "console=ttyS0 squibtest=blk-throughput squibtest.mib=8 squibtest.iops_ops=8"});
    ok(vm.api("PUT", "/boot-source", Some(&bs.to_string())));
    ok(vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    ));
    let seen = |needle: &str| {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains(needle)
    };
    let poll = |needle: &str| {
        wait_for(Duration::from_secs(60), || seen(needle).then(Instant::now)).expect(needle)
    };
    let t0 = poll("BLK-T0 seq");
    let t1 = poll("BLK-T1 seq");
    let secs = (t1 - t0).as_secs_f64();
    let configured = 2.0; // MiB/s
    // The bucket starts full: the first 0.5 MiB are free.
    let measured = 7.5 / secs;
    println!(
        "rate-limited drive: configured {configured:.2} MiB/s, measured {measured:.2} MiB/s over {secs:.2} s"
    );
    assert!(
        (1.4..=2.6).contains(&measured),
        "measured {measured:.2} MiB/s, configured {configured} MiB/s"
    );
    assert_eq!(vm.wait(Duration::from_secs(60)), Some(0));
}
