//! End-to-end: the metrics system of the `squib` binary against Firecracker 1.17's.
//!
//! - the key set of a metrics line equals Firecracker's: the checked-in list
//!   (`tests/data/firecracker-metrics-keys.txt`, made by `scripts/firecracker-metrics-keys.sh`)
//!   and, when the reference binary exists, the live one captured from it on the same guest;
//! - counters move with the guest's work and are deltas (zero after a flush), store metrics
//!   persist, the sink may be a FIFO, `PUT /metrics` is accepted once;
//! - an fctools-style launch (`PUT /logger`, `PUT /metrics`, configuration, `InstanceStart`)
//!   works unchanged.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    Squib, api_request, kvm_or_skip, random_file, reference_firecracker, repo_root, spawn_vmm,
    test_guest, tmp_path, wait_for,
};
use serde_json::{Value, json};

const SECTORS: usize = 64;

/// Dotted leaf paths of a metrics line, in document order.
fn flatten(v: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

fn metrics_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `sum(line[group][field])` over `lines`.
fn sum(lines: &[Value], group: &str, field: &str) -> u64 {
    lines
        .iter()
        .map(|l| l[group][field].as_u64().expect(field))
        .sum()
}

fn checked_in_keys() -> Vec<String> {
    let path = repo_root().join("apps/squib-cli/tests/data/firecracker-metrics-keys.txt");
    std::fs::read_to_string(path)
        .expect("checked-in key list")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One PUT on a fresh connection ([`api_request`] frames the answer by its `Content-Length`:
/// Firecracker ignores `Connection: close`).
fn put(socket: &Path, path: &str, body: &Value) {
    let (status, answer) = api_request(socket, "PUT", path, Some(&body.to_string()));
    assert_eq!(status, 204, "PUT {path}: {answer}");
}

/// The key-set configuration (the script's): drive `rootfs`, entropy, `counter`, booted, then
/// one FlushMetrics. Returns the last metrics line.
fn keyset_flow(socket: &Path, metrics: &Path, tap: Option<&str>) -> Value {
    let disk = tmp_path("keyset.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk");
    put(
        socket,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    put(
        socket,
        "/boot-source",
        &json!({"kernel_image_path": test_guest(),
                "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=counter"}),
    );
    put(
        socket,
        "/drives/rootfs",
        &json!({"drive_id": "rootfs", "path_on_host": disk, "is_root_device": false,
                "is_read_only": true}),
    );
    put(socket, "/entropy", &json!({}));
    if let Some(tap) = tap {
        put(
            socket,
            "/network-interfaces/eth0",
            &json!({"iface_id": "eth0", "host_dev_name": tap}),
        );
        put(
            socket,
            "/vsock",
            &json!({"guest_cid": 3, "uds_path": tmp_path("keys.vsock")}),
        );
        put(
            socket,
            "/mmds/config",
            &json!({"network_interfaces": ["eth0"], "version": "V2"}),
        );
    }
    put(socket, "/actions", &json!({"action_type": "InstanceStart"}));
    put(socket, "/actions", &json!({"action_type": "FlushMetrics"}));
    let lines = metrics_lines(metrics);
    assert_eq!(lines.len(), 2, "one line at boot, one per FlushMetrics");
    lines[1].clone()
}

fn squib_keyset_line(tap: Option<&str>) -> Value {
    let socket = tmp_path("keys.sock");
    let metrics = tmp_path("keys.ndjson");
    let serial = tmp_path("keys.serial");
    let vm = Squib::spawn(
        &["--metrics-path", metrics.to_str().unwrap()],
        Some(&socket),
    );
    put(&socket, "/serial", &json!({"serial_out_path": serial}));
    let line = keyset_flow(&socket, &metrics, tap);
    drop(vm);
    line
}

#[test]
fn test_metrics_line_has_exactly_firecrackers_checked_in_keys() {
    if !kvm_or_skip() {
        return;
    }
    let line = squib_keyset_line(None);
    let ours = flatten(&line);
    let theirs = checked_in_keys();
    assert_eq!(theirs.len(), 263, "the checked-in list");
    let missing: Vec<_> = theirs.iter().filter(|k| !ours.contains(k)).collect();
    let extra: Vec<_> = ours.iter().filter(|k| !theirs.contains(k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(ours, theirs, "same keys in the same order");
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let ts = line["utc_timestamp_ms"].as_u64().unwrap();
    assert!(
        now.abs_diff(ts) < 5_000,
        "utc_timestamp_ms {ts} vs now {now}"
    );
}

/// The reference Firecracker's last line for the key-set flow.
fn firecracker_keyset_line(fc: &Path, tap: Option<&str>) -> Value {
    let metrics = tmp_path("fc.ndjson");
    let serial = tmp_path("fc.serial");
    let metrics_arg = metrics.to_str().expect("utf8");
    let vm = spawn_vmm(fc, &["--no-seccomp", "--metrics-path", metrics_arg]);
    let socket = vm.socket.clone().expect("API socket");
    put(&socket, "/serial", &json!({"serial_out_path": serial}));
    keyset_flow(&socket, &metrics, tap)
}

#[test]
fn test_metrics_keys_match_live_firecracker_on_the_same_guest() {
    if !kvm_or_skip() {
        return;
    }
    let Some(fc) = reference_firecracker() else {
        return;
    };
    let theirs = flatten(&firecracker_keyset_line(&fc, None));
    assert_eq!(
        theirs,
        checked_in_keys(),
        "the checked-in list is Firecracker's current set"
    );
    let ours = flatten(&squib_keyset_line(None));
    assert_eq!(
        ours, theirs,
        "squib's keys (and order) = the live Firecracker's"
    );
    println!("live Firecracker key set: {} keys, identical", theirs.len());
}

/// A host tap interface (`ip tuntap`), deleted on drop.
struct HostTap(String);

impl HostTap {
    fn create(name: String) -> Option<Self> {
        let ok = Command::new("ip")
            .args(["tuntap", "add", "dev", &name, "mode", "tap"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(name))
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn test_metrics_keys_with_net_vsock_mmds_match_live_firecracker() {
    if !kvm_or_skip() {
        return;
    }
    let Some(fc) = reference_firecracker() else {
        return;
    };
    let tag = std::process::id() % 100_000;
    let (Some(a), Some(b)) = (
        HostTap::create(format!("sqm{tag}a")),
        HostTap::create(format!("sqm{tag}b")),
    ) else {
        println!("SKIPPED: cannot create tap interfaces (needs root and `ip`)");
        return;
    };
    let theirs = flatten(&firecracker_keyset_line(&fc, Some(&a.0)));
    let ours = flatten(&squib_keyset_line(Some(&b.0)));
    assert!(
        theirs.iter().any(|k| k.starts_with("net_eth0.")),
        "{theirs:?}"
    );
    assert_eq!(ours, theirs, "with net_<id>, vsock and MMDS in use");
    println!(
        "live Firecracker key set with net/vsock/MMDS: {} keys, identical",
        theirs.len()
    );
}

#[test]
fn test_metrics_counters_move_with_the_guest_and_reset_after_each_flush() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("count.sock");
    let metrics = tmp_path("count.ndjson");
    let serial = tmp_path("count.serial");
    let disk = random_file("count.img", 1 << 20, 7);
    let start_us = squib_sys::monotonic_time_us().to_string();
    let vm = Squib::spawn(
        &[
            "--metrics-path",
            metrics.to_str().unwrap(),
            "--start-time-us",
            &start_us,
        ],
        Some(&socket),
    );
    put(&socket, "/serial", &json!({"serial_out_path": serial}));
    put(
        &socket,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    put(
        &socket,
        "/boot-source",
        &json!({"kernel_image_path": test_guest(),
                "boot_args": format!("console=ttyS0 reboot=k panic=1 squibtest=blk-read squibtest.sectors={SECTORS} squibtest.hold=1")}),
    );
    put(
        &socket,
        "/drives/rootfs",
        &json!({"drive_id": "rootfs", "path_on_host": disk, "is_root_device": false,
                "is_read_only": true}),
    );
    put(
        &socket,
        "/actions",
        &json!({"action_type": "InstanceStart"}),
    );
    let console = || std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || console()
            .contains("SQUIBTEST END")
            .then_some(()))
        .is_some(),
        "guest never finished: {}",
        console()
    );
    assert!(console().contains("TEST ok blk-read"), "{}", console());
    for _ in 0..2 {
        assert_eq!(vm.api("GET", "/", None).0, 200);
    }
    assert_eq!(vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0, 204);
    let (state, mem) = (tmp_path("count.state"), tmp_path("count.mem"));
    put(
        &socket,
        "/snapshot/create",
        &json!({"snapshot_path": state, "mem_file_path": mem}),
    );
    let _ = (std::fs::remove_file(&state), std::fs::remove_file(&mem));
    assert_eq!(
        vm.api("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#)).0,
        204
    );
    put(&socket, "/actions", &json!({"action_type": "FlushMetrics"}));
    let lines = metrics_lines(&metrics);
    assert_eq!(lines.len(), 2, "boot line + flush");

    // The guest read SECTORS sectors (the boot line may or may not have seen them).
    assert_eq!(
        sum(&lines, "block_rootfs", "read_bytes"),
        (SECTORS * 512) as u64
    );
    assert_eq!(
        sum(&lines, "block", "read_bytes"),
        (SECTORS * 512) as u64,
        "aggregate"
    );
    assert!(sum(&lines, "block_rootfs", "read_count") >= 1);
    // Every console byte went through the UART (no rate limiter): the counts are exact.
    assert_eq!(sum(&lines, "uart", "write_count"), console().len() as u64);
    assert!(sum(&lines, "vcpu", "exit_io_out") >= console().len() as u64);
    assert!(
        sum(&lines, "vcpu", "exit_mmio_write") > 0,
        "virtio-mmio registers"
    );
    assert!(
        sum(&lines, "interrupts", "triggers") > 0,
        "virtio interrupts"
    );
    let last = &lines[1];
    assert_eq!(last["get_api_requests"]["instance_info_count"], 2);
    assert!(last["latencies_us"]["pause_vm"].as_u64().unwrap() > 0);
    assert!(last["latencies_us"]["vmm_resume_vm"].as_u64().unwrap() > 0);
    let full = last["latencies_us"]["full_create_snapshot"]
        .as_u64()
        .unwrap();
    let vmm_full = last["latencies_us"]["vmm_full_create_snapshot"]
        .as_u64()
        .unwrap();
    assert!(
        full >= vmm_full && vmm_full > 0,
        "API {full} us >= VMM {vmm_full} us > 0"
    );
    assert_eq!(last["latencies_us"]["diff_create_snapshot"], 0);
    assert!(
        last["api_server"]["process_startup_time_us"]
            .as_u64()
            .unwrap()
            > 0
    );
    // InstanceStart + FlushMetrics; PUTs before boot are in the boot line.
    assert_eq!(sum(&lines, "put_api_requests", "actions_count"), 2);
    assert_eq!(lines[0]["put_api_requests"]["drive_count"], 1);
    assert_eq!(lines[0]["put_api_requests"]["serial_count"], 1);

    // The guest is halted: the next line's counters are all zero, store metrics persist.
    let (s, body) = vm.api("PUT", "/drives/x", Some("{bad json"));
    assert_eq!(s, 400, "{body}");
    put(&socket, "/actions", &json!({"action_type": "FlushMetrics"}));
    let lines = metrics_lines(&metrics);
    let next = &lines[2];
    for (group, field) in [
        ("block_rootfs", "read_bytes"),
        ("block", "read_bytes"),
        ("uart", "write_count"),
        ("get_api_requests", "instance_info_count"),
        ("vcpu", "exit_mmio_write"),
    ] {
        assert_eq!(next[group][field], 0, "{group}.{field} is a delta");
    }
    assert_eq!(next["put_api_requests"]["drive_count"], 1);
    assert_eq!(
        next["put_api_requests"]["drive_fails"], 1,
        "unparsable body"
    );
    assert_eq!(next["put_api_requests"]["actions_count"], 1);
    assert_eq!(
        next["latencies_us"]["pause_vm"], last["latencies_us"]["pause_vm"],
        "store"
    );
    assert_eq!(
        next["block_rootfs"]["read_agg"]["max_us"], last["block_rootfs"]["read_agg"]["max_us"],
        "min/max are store metrics"
    );
}

#[test]
fn test_put_metrics_is_accepted_once_with_firecrackers_texts() {
    let socket = tmp_path("twice.sock");
    let (m1, m2) = (tmp_path("twice1.ndjson"), tmp_path("twice2.ndjson"));
    let vm = Squib::spawn(&[], Some(&socket));
    let (s, body) = vm.api(
        "PUT",
        "/metrics",
        Some(r#"{"metrics_path":"/nonexistent-dir/m"}"#),
    );
    assert_eq!(
        (s, body.as_str()),
        (
            400,
            r#"{"fault_message":"Metrics error: Cannot initialize the metrics system due to bad user input: No such file or directory (os error 2)"}"#
        )
    );
    put(&socket, "/metrics", &json!({"metrics_path": m1}));
    let reinit = r#"{"fault_message":"Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."}"#;
    let (s, body) = vm.api(
        "PUT",
        "/metrics",
        Some(&json!({"metrics_path": m2}).to_string()),
    );
    assert_eq!((s, body.as_str()), (400, reinit));
    assert!(m1.exists() && !m2.exists());
    drop(vm);

    // `--metrics-path` counts as the first initialisation.
    let vm = Squib::spawn(&["--metrics-path", m1.to_str().unwrap()], Some(&socket));
    let (s, body) = vm.api(
        "PUT",
        "/metrics",
        Some(&json!({"metrics_path": m2}).to_string()),
    );
    assert_eq!((s, body.as_str()), (400, reinit));
    let (_, cfg) = vm.api("GET", "/vm/config", None);
    assert!(
        cfg.contains(r#""metrics":null"#),
        "reported as null, as Firecracker: {cfg}"
    );
    drop(vm);

    let mut bad = Squib::spawn(&["--metrics-path", "/nonexistent-dir/m"], None);
    assert_eq!(bad.wait(Duration::from_secs(10)), Some(1));
    assert!(bad.output().contains("Could not initialize metrics: Cannot initialize the metrics system due to bad user input: No such file or directory"), "{}", bad.output());
}

/// Reads lines from a FIFO on a thread.
fn fifo_reader(path: &Path) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let Ok(f) = std::fs::File::open(&path) else {
            return;
        };
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn mkfifo(tag: &str) -> PathBuf {
    let p = tmp_path(tag);
    assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
    p
}

#[test]
fn test_fctools_style_launch_with_logger_and_fifo_metrics() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("fct.sock");
    let log = tmp_path("fct.log");
    let metrics = mkfifo("fct.fifo");
    let serial = tmp_path("fct.serial");
    let vm = Squib::spawn(&[], Some(&socket));
    put(&socket, "/serial", &json!({"serial_out_path": serial}));
    put(
        &socket,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    put(
        &socket,
        "/boot-source",
        &json!({"kernel_image_path": test_guest(),
                "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=hello squibtest.hold=1"}),
    );
    put(
        &socket,
        "/logger",
        &json!({"log_path": log, "level": "Info", "show_level": true}),
    );
    put(&socket, "/metrics", &json!({"metrics_path": metrics}));
    put(
        &socket,
        "/actions",
        &json!({"action_type": "InstanceStart"}),
    );
    // fctools opens the FIFO only after the start: the boot line waits in the pipe.
    let lines = fifo_reader(&metrics);
    let first: Value = serde_json::from_str(
        &lines
            .recv_timeout(Duration::from_secs(10))
            .expect("boot line"),
    )
    .expect("JSON");
    assert!(first["put_api_requests"]["actions_count"].as_u64().unwrap() > 0);
    assert_eq!(first["put_api_requests"]["logger_count"], 1);
    assert_eq!(first["put_api_requests"]["metrics_count"], 1);
    put(&socket, "/actions", &json!({"action_type": "FlushMetrics"}));
    let second: Value = serde_json::from_str(
        &lines
            .recv_timeout(Duration::from_secs(10))
            .expect("flush line"),
    )
    .expect("JSON");
    assert_eq!(flatten(&second), checked_in_keys_without_block());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(":INFO] The request was executed successfully."),
        "{text}"
    );
    assert!(text.contains("Successfully started microvm."), "{text}");
    drop(vm);
    let _ = std::fs::remove_file(&metrics);
}

/// Firecracker's keys for a microVM without drives (no `block_<id>` group).
fn checked_in_keys_without_block() -> Vec<String> {
    checked_in_keys()
        .into_iter()
        .filter(|k| !k.starts_with("block_"))
        .collect()
}

#[test]
fn test_periodic_line_is_written_at_boot_and_time_stamped() {
    if !kvm_or_skip() {
        return;
    }
    let metrics = tmp_path("boot.ndjson");
    let cfg = tmp_path("boot.json");
    let doc = json!({
        "boot-source": {"kernel_image_path": test_guest(),
                        "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=hello squibtest.hold=1"},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "metrics": {"metrics_path": metrics, "emit_id": true, "properties": {"team": "squib"}},
    });
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let started = Instant::now();
    let _vm = Squib::spawn(
        &[
            "--no-api",
            "--id",
            "vm-7",
            "--config-file",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    let line = wait_for(Duration::from_secs(30), || {
        metrics_lines(&metrics).into_iter().next()
    })
    .expect("no metrics line at boot");
    let keys: Vec<&String> = line.as_object().unwrap().keys().take(4).collect();
    assert_eq!(keys, ["utc_timestamp_ms", "id", "properties", "api_server"]);
    assert_eq!(line["id"], "vm-7");
    assert_eq!(line["properties"]["team"], "squib");
    assert!(started.elapsed() < Duration::from_secs(30));
}

fn kill(vm: &Squib, signal: &str) {
    let pid = vm.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn test_signals_are_counted_and_fatal_ones_exit_with_firecrackers_codes() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("sig.sock");
    let metrics = tmp_path("sig.ndjson");
    let serial = tmp_path("sig.serial");
    let mut vm = Squib::spawn(
        &["--metrics-path", metrics.to_str().unwrap()],
        Some(&socket),
    );
    put(&socket, "/serial", &json!({"serial_out_path": serial}));
    put(
        &socket,
        "/boot-source",
        &json!({"kernel_image_path": test_guest(),
                "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=hello squibtest.hold=1"}),
    );
    put(
        &socket,
        "/actions",
        &json!({"action_type": "InstanceStart"}),
    );
    kill(&vm, "-PIPE");
    put(&socket, "/actions", &json!({"action_type": "FlushMetrics"}));
    let lines = metrics_lines(&metrics);
    assert_eq!(
        lines.last().unwrap()["signals"]["sigpipe"],
        1,
        "counted, not fatal"
    );
    kill(&vm, "-BUS");
    assert_eq!(
        vm.wait(Duration::from_secs(10)),
        Some(149),
        "{}",
        vm.output()
    );
    let lines = metrics_lines(&metrics);
    let last = lines.last().unwrap();
    assert_eq!(
        last["signals"]["sigbus"], 1,
        "the last line is written before exiting"
    );
    assert_eq!(last["signals"]["sigpipe"], 0);
    assert!(
        vm.output()
            .contains("Shutting down VM after intercepting signal 7, code 0."),
        "{}",
        vm.output()
    );
}

/// Reads one HTTP response (head + Content-Length body) and returns its status line.
fn read_response(s: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read"), 1, "connection closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse::<usize>().expect("length"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    head.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn test_boot_line_is_written_before_the_next_request_is_served() {
    use std::io::Write;
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("order.sock");
    let metrics = tmp_path("order.ndjson");
    let serial = tmp_path("order.serial");
    let _vm = Squib::spawn(
        &["--metrics-path", metrics.to_str().unwrap()],
        Some(&socket),
    );
    put(&socket, "/serial", &json!({"serial_out_path": serial}));
    put(
        &socket,
        "/boot-source",
        &json!({"kernel_image_path": test_guest(),
                "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=hello squibtest.hold=1"}),
    );
    // InstanceStart and FlushMetrics pipelined: the flush is served right after the start.
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = |body: &str| {
        format!(
            "PUT /actions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let both =
        req(r#"{"action_type":"InstanceStart"}"#) + &req(r#"{"action_type":"FlushMetrics"}"#);
    s.write_all(both.as_bytes()).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 204"));
    assert!(read_response(&mut s).starts_with("HTTP/1.1 204"));
    assert_eq!(
        metrics_lines(&metrics).len(),
        2,
        "the boot line precedes the flush line"
    );
}
