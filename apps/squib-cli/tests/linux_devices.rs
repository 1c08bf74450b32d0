//! End-to-end: the Linux guest's own drivers on squib's memory and socket devices, in ONE boot
//! (256 MiB, `squib.mode=shell`, the guest's initramfs followed by an extra newc archive with
//! the static helper `guest/linux-tools/vsock-echo`):
//!
//! - vsock host→guest (`CONNECT <port>` on `uds_path`, echo) and guest→host (CID 2, a host
//!   listener at `<uds_path>_<port>`), with connection setup latency and one-way throughput
//!   both ways;
//! - virtio-pmem: `/dev/pmem0` reads a host file with a known pattern (`md5sum`, `od`), read
//!   throughput cold and warm, a write + `fsync` (virtio-pmem FLUSH) lands in the host file;
//! - virtio-balloon: the guest makes 96 MiB resident (time-bounded) and frees it, then
//!   `PATCH /balloon` 64 MiB; the host RSS must fall by ≥ 80 % of 64 MiB (the acceptance
//!   figure) when at least 64 MiB became resident;
//! - virtio-mem: `PATCH /hotplug/memory` 128 MiB grows `MemTotal` by 128 MiB
//!   (`memhp_default_state=online`), time to plug.
//!
//! Figures are printed (`LINUX-DEVICES ...` lines), never asserted on. One slow boot (1–3 min on
//! nested-PVM hosts, more under load): skipped loudly without /dev/kvm, the guest assets or gcc.

mod common;
#[path = "linux_devices/guest.rs"]
mod guest;
#[path = "linux_devices/host.rs"]
mod host;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::linux::{Guest, cmdline};
use common::{Squib, kvm_or_skip, linux_guest_dir, repo_root, tmp_path, wait_for};
use guest::{mib_s, status_bytes};
use serde_json::{Value, json};

const BOOT_LIMIT: Duration = Duration::from_secs(900);
const CMD_LIMIT: Duration = Duration::from_secs(180);
const MIB: usize = 1 << 20;
const GUEST_CID: u32 = 3;
/// Host→guest connections timed for the setup latency (plus one for the echo check).
const SETUP_CONNS: usize = 10;
/// Bytes per direction in the one-way throughput runs (small: under nested PVM a Linux guest
/// moves vsock data at a fraction of a MiB/s).
const STREAM_BYTES: usize = host::SINK_BYTES;
/// Bytes of the host→guest echo round trip.
const ECHO_BYTES: usize = 256 * 1024;
/// Small: the emulated guest reads pmem at about 0.3 MiB/s on a loaded nested-PVM host.
const PMEM_BYTES: usize = 4 * MIB;
const BALLOON_MIB: u64 = 64;
/// Guest memory made resident before the inflation, and the time allowed for it.
const TOUCH_MIB: u64 = 96;
const TOUCH_SECONDS: u64 = 180;
const PLUG_MIB: u64 = 128;

/// Builds the helper and the guest initramfs with it appended; `None` (after the SKIPPED line
/// the script printed) when the host cannot build it.
fn initramfs_with_tools(dir: &Path) -> Option<PathBuf> {
    let out = repo_root().join("target/linux-tools");
    let run = Command::new("sh")
        .arg(repo_root().join("guest/linux-tools/build.sh"))
        .arg(&out)
        .arg(dir.join("initramfs.cpio"))
        .output()
        .expect("run guest/linux-tools/build.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    if run.status.code() == Some(77) {
        print!("{stdout}");
        return None;
    }
    assert!(
        run.status.success(),
        "guest/linux-tools/build.sh failed:\n{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Some(out.join("initramfs-tools.cpio"))
}

fn put(vm: &Squib, path: &str, body: &Value) {
    let (s, b) = vm.api("PUT", path, Some(&body.to_string()));
    assert_eq!(s, 204, "PUT {path}: {b}\n{}", vm.output());
}

fn get(vm: &Squib, path: &str) -> Value {
    let (s, b) = vm.api("GET", path, None);
    assert_eq!(s, 200, "GET {path}: {b}");
    serde_json::from_str(&b).expect("JSON")
}

fn figure(line: &str) {
    println!("LINUX-DEVICES {line}");
}

#[test]
fn test_linux_guest_drives_vsock_pmem_balloon_and_virtio_mem() {
    if !kvm_or_skip() {
        return;
    }
    let Some(dir) = linux_guest_dir() else { return };
    let Some(initrd) = initramfs_with_tools(&dir) else {
        return;
    };
    let uds = tmp_path("ld-vsock.sock");
    let pmem = common::random_file("ld-pmem.img", PMEM_BYTES, 0x5eed);
    let socket = tmp_path("ld-api.sock");
    let mut g = Guest::spawn_api(&socket);
    put(
        &g.vm,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 256}),
    );
    let args = cmdline(" squib.mode=shell memhp_default_state=online");
    put(
        &g.vm,
        "/boot-source",
        &json!({"kernel_image_path": dir.join("vmlinux"), "initrd_path": initrd, "boot_args": args}),
    );
    put(
        &g.vm,
        "/vsock",
        &json!({"guest_cid": GUEST_CID, "uds_path": uds}),
    );
    put(
        &g.vm,
        "/balloon",
        &json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
    );
    put(
        &g.vm,
        "/pmem/pmem0",
        &json!({"id": "pmem0", "path_on_host": pmem, "root_device": false, "read_only": false}),
    );
    put(&g.vm, "/hotplug/memory", &json!({"total_size_mib": 1024}));
    let t_boot = Instant::now();
    put(&g.vm, "/actions", &json!({"action_type": "InstanceStart"}));
    g.wait_shell_marker(BOOT_LIMIT);
    g.wait_shell();
    figure(&format!(
        "boot to shell: {:.1} s",
        t_boot.elapsed().as_secs_f64()
    ));
    let out = g.vm.output();
    for driver in [
        "vmw_vsock_virtio_transport",
        "virtio_balloon",
        "virtio_pmem",
        "virtio_mem",
    ] {
        assert!(
            out.contains(&format!("driver={driver}")),
            "{driver}:\n{out}"
        );
    }

    balloon_checks(&mut g);
    hotplug_checks(&mut g);
    vsock_host_to_guest(&mut g, &uds);
    vsock_guest_to_host(&mut g, &uds);
    pmem_checks(&mut g, &pmem);

    g.reboot(Duration::from_secs(180));
    let _ = std::fs::remove_file(&pmem);
}

/// Host-initiated: setup latency over [`SETUP_CONNS`] connections, an echo round trip, and
/// host→guest one-way throughput into the helper's `sink`.
fn vsock_host_to_guest(g: &mut Guest, uds: &Path) {
    let conns = SETUP_CONNS + 1;
    let mark = g.mark();
    g.run(
        &format!("vsock-echo listen 5000 {conns} &"),
        "VSOCK-ECHO LISTENING 5000",
        CMD_LIMIT,
    );
    let mut setup = Vec::new();
    for i in 0..SETUP_CONNS {
        let (mut s, took) = host::connect(uds, 5000);
        setup.push(took);
        let line = format!("ping {i}\n");
        let (back, _) = host::round_trip(&mut s, line.as_bytes());
        assert_eq!(back, line.as_bytes());
    }
    let (mut s, _) = host::connect(uds, 5000);
    let data = host::pattern(ECHO_BYTES, 0x5a);
    let (back, took) = host::round_trip(&mut s, &data);
    assert!(back == data, "the echo differs");
    drop(s);
    g.wait_line(mark, &format!("VSOCK-ECHO SERVED {conns}"), CMD_LIMIT);
    let (min, avg, max) = stats(&setup);
    figure(&format!(
        "vsock host->guest setup (connect..OK): n={SETUP_CONNS} min={min:.0} avg={avg:.0} max={max:.0} us"
    ));
    figure(&format!(
        "vsock host->guest echo {} KiB round trip: {:.1} ms ({:.2} MiB/s each way)",
        ECHO_BYTES >> 10,
        took.as_secs_f64() * 1e3,
        mib_s(ECHO_BYTES, took)
    ));

    g.run(
        &format!("vsock-echo sink 5001 {STREAM_BYTES} &"),
        "VSOCK-ECHO LISTENING 5001",
        CMD_LIMIT,
    );
    let (mut s, _) = host::connect(uds, 5001);
    let data = host::pattern(STREAM_BYTES, 0x33);
    let t0 = Instant::now();
    // No half-close: the hybrid protocol turns it into a full close (as Firecracker).
    s.write_all(&data).expect("stream to the guest");
    let answer = host::read_line(&mut s);
    let took = t0.elapsed();
    assert_eq!(answer, format!("GOT {STREAM_BYTES}\n"));
    figure(&format!(
        "vsock host->guest one-way {} MiB: {:.2} s = {:.2} MiB/s",
        STREAM_BYTES / MIB,
        took.as_secs_f64(),
        mib_s(STREAM_BYTES, took)
    ));
}

/// Guest-initiated: the helper's `connect` (setup latency on the guest's clock) to a line
/// listener, then guest→host one-way throughput into a host sink.
fn vsock_guest_to_host(g: &mut Guest, uds: &Path) {
    let lines = host::Listener::lines(uds, 6000, SETUP_CONNS);
    let mark = g.mark();
    let (lat, host_took) = g.run(
        &format!("vsock-echo connect 2 6000 {SETUP_CONNS}"),
        "VSOCK-ECHO CONNECT-US",
        CMD_LIMIT,
    );
    let reply = g.wait_line(mark, "VSOCK-ECHO REPLY", Duration::from_secs(5));
    assert!(
        reply.contains("VSOCK-ECHO REPLY echo: hello 0 from guest"),
        "{reply}"
    );
    let served = lines.join();
    assert_eq!(served.len(), SETUP_CONNS);
    assert!(
        served[SETUP_CONNS - 1]
            .line
            .starts_with(&format!("hello {} from guest", SETUP_CONNS - 1)),
        "{:?}",
        served[SETUP_CONNS - 1]
    );
    let lat = lat
        .split_once("VSOCK-ECHO CONNECT-US ")
        .map_or(lat.as_str(), |x| x.1);
    figure(&format!(
        "vsock guest->host setup (connect(2), guest clock): {lat} us; {SETUP_CONNS} connect+line+reply cycles took {:.2} s from the host's view",
        host_took.as_secs_f64()
    ));

    let sink = host::Listener::sink(uds, 6001);
    let (line, _) = g.run(
        &format!("vsock-echo source 2 6001 {STREAM_BYTES}"),
        "VSOCK-ECHO SOURCE",
        CMD_LIMIT,
    );
    let served = sink.join();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].bytes, STREAM_BYTES, "{line}");
    assert!(served[0].pattern_ok, "guest->host stream corrupted");
    assert!(
        line.contains(&format!("answer=GOT {STREAM_BYTES}")),
        "{line}"
    );
    figure(&format!(
        "vsock guest->host one-way {} MiB: {:.2} s = {:.2} MiB/s (host: first byte..EOF); guest: {}",
        STREAM_BYTES / MIB,
        served[0].took.as_secs_f64(),
        mib_s(STREAM_BYTES, served[0].took),
        line.split_once("guest_us=").map_or("?", |x| x.1)
    ));
}

fn pmem_checks(g: &mut Guest, file: &Path) {
    let bytes = std::fs::read(file).expect("pmem file");
    let size = g.number("PMSZ", "cat /sys/block/pmem0/size");
    assert_eq!(size * 512, PMEM_BYTES as u64, "/dev/pmem0 size");
    // Small reads and the FLUSH first, then whole-device reads.
    let off = 3 * MIB + 17;
    let (line, _) = g.run(
        &format!("od -A n -t x1 -N 8 -j {off} /dev/pmem0 | sed 's/^/PMEMOD/'"),
        "PMEMOD ",
        CMD_LIMIT,
    );
    let host_hex: Vec<String> = bytes[off..off + 8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        line.split_once("PMEMOD")
            .map(|x| x.1.split_whitespace().collect::<Vec<_>>()),
        Some(host_hex.iter().map(String::as_str).collect()),
        "{line}"
    );
    // A write through the block device, then fsync: the block layer's flush becomes a
    // virtio-pmem FLUSH (msync + fdatasync on the host); dd fails if the device refuses it.
    let (line, _) = g.run(
        "printf SQUIB-PMEM-FLUSHED | dd of=/dev/pmem0 bs=4096 seek=1 conv=notrunc,fsync 2>/dev/null; echo PMEMWR\"\"=$?",
        "PMEMWR=",
        CMD_LIMIT,
    );
    assert!(line.contains("PMEMWR=0"), "{line}");
    let now = std::fs::read(file).expect("pmem file");
    let flushed = b"SQUIB-PMEM-FLUSHED";
    assert_eq!(&now[4096..4096 + flushed.len()], &flushed[..]);
    assert_eq!(
        &now[..4096],
        &bytes[..4096],
        "bytes before the write changed"
    );
    for pass in ["cold", "warm"] {
        // busybox dd prints no `bytes ... copied` line: the guest's own clock brackets it.
        let (line, host_took) = g.run(
            "a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/pmem0 of=/dev/null bs=1M 2>/dev/null; \
             r=$?; b=$(cut -d' ' -f1 /proc/uptime); echo PMEMDD\"\"=$r up=$a..$b",
            "PMEMDD=",
            CMD_LIMIT,
        );
        assert!(line.contains("PMEMDD=0 "), "{line}");
        let guest_s = line
            .split_once("up=")
            .and_then(|(_, r)| r.trim().split_once(".."))
            .and_then(|(a, b)| Some(b.parse::<f64>().ok()? - a.parse::<f64>().ok()?));
        figure(&format!(
            "pmem read {} MiB ({pass}): guest clock {} = {} MiB/s; host view (command to prompt) {:.2} s = {:.2} MiB/s",
            PMEM_BYTES / MIB,
            guest_s.map_or("?".into(), |s| format!("{s:.2} s")),
            guest_s.map_or("?".into(), |s| format!(
                "{:.1}",
                mib_s(PMEM_BYTES, Duration::from_secs_f64(s.max(0.01)))
            )),
            host_took.as_secs_f64(),
            mib_s(PMEM_BYTES, host_took)
        ));
    }
    // The file as the guest's write left it.
    let md5 = Command::new("md5sum").arg(file).output().expect("md5sum");
    let want = String::from_utf8_lossy(&md5.stdout)
        .split_whitespace()
        .next()
        .expect("md5")
        .to_owned();
    let (line, _) = g.run("md5sum /dev/pmem0", "  /dev/pmem0", CMD_LIMIT);
    assert!(line.starts_with(&want), "guest md5 `{line}`, host {want}");
}

fn balloon_checks(g: &mut Guest) {
    let pid = g.vm.child.id();
    // Make guest memory resident on the host, then free it in the guest right before the
    // inflation: the balloon's order-0 allocations take the most recently freed pages first.
    // First touches are slow under nested PVM (about 0.1-1 MiB/s under load), so the touch is
    // bounded in time and the 80 % assertion applies when at least the balloon's size became
    // resident.
    let (line, took) = g.run(
        &format!("vsock-echo touch {TOUCH_MIB} {TOUCH_SECONDS}"),
        "VSOCK-ECHO TOUCHED",
        Duration::from_secs(TOUCH_SECONDS + 600),
    );
    let touched: u64 = line
        .split_once("mib=")
        .and_then(|x| x.1.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    figure(&format!(
        "balloon: guest touched {touched} of {TOUCH_MIB} MiB in {:.1} s (`{}`)",
        took.as_secs_f64(),
        line.trim()
    ));
    let before = (status_bytes(pid, "VmRSS"), status_bytes(pid, "RssAnon"));
    let t0 = Instant::now();
    let (s, b) = g.vm.api(
        "PATCH",
        "/balloon",
        Some(&json!({"amount_mib": BALLOON_MIB}).to_string()),
    );
    assert_eq!(s, 204, "{b}");
    let inflated = wait_for(Duration::from_secs(600), || {
        (get(&g.vm, "/balloon/statistics")["actual_mib"].as_u64() == Some(BALLOON_MIB))
            .then_some(())
    });
    let took = t0.elapsed();
    assert!(
        inflated.is_some(),
        "the balloon never reached {BALLOON_MIB} MiB: {}\n{}",
        get(&g.vm, "/balloon/statistics"),
        g.vm.output()
    );
    let after = (status_bytes(pid, "VmRSS"), status_bytes(pid, "RssAnon"));
    let released = before.0.saturating_sub(after.0);
    let target = BALLOON_MIB * MIB as u64;
    figure(&format!(
        "balloon: inflate {BALLOON_MIB} MiB took {:.2} s; host VmRSS {} -> {} KiB, RssAnon {} -> {} KiB; released {} KiB = {} % of {BALLOON_MIB} MiB",
        took.as_secs_f64(),
        before.0 >> 10,
        after.0 >> 10,
        before.1 >> 10,
        after.1 >> 10,
        released >> 10,
        released * 100 / target
    ));
    if touched >= BALLOON_MIB {
        assert!(
            released >= target * 8 / 10,
            "less than 80 % of {BALLOON_MIB} MiB returned to the host: VmRSS {} -> {}",
            before.0,
            after.0
        );
    } else {
        println!(
            "SKIPPED: the balloon's 80 % assertion: only {touched} MiB could be made resident in {TOUCH_SECONDS} s"
        );
    }
    // The balloon stays inflated: with deflate_on_oom the guest's MemTotal does not count it,
    // so the hotplug check below is unaffected.
}

fn hotplug_checks(g: &mut Guest) {
    let before = g.meminfo_kib("MemTotal");
    let t0 = Instant::now();
    let body = json!({"requested_size_mib": PLUG_MIB}).to_string();
    let (s, b) = g.vm.api("PATCH", "/hotplug/memory", Some(&body));
    assert_eq!(s, 204, "{b}");
    let plugged = wait_for(Duration::from_secs(600), || {
        (get(&g.vm, "/hotplug/memory")["plugged_size_mib"].as_u64() == Some(PLUG_MIB))
            .then(|| t0.elapsed())
    });
    let plugged = plugged.unwrap_or_else(|| {
        panic!(
            "virtio-mem never plugged {PLUG_MIB} MiB: {}\n{}",
            get(&g.vm, "/hotplug/memory"),
            g.vm.output()
        )
    });
    let mut after = before;
    let limit = Instant::now() + Duration::from_secs(300);
    while after < before + PLUG_MIB * 1024 && Instant::now() < limit {
        after = g.meminfo_kib("MemTotal");
        if after < before + PLUG_MIB * 1024 {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let online = t0.elapsed();
    figure(&format!(
        "virtio-mem: plug {PLUG_MIB} MiB: device reports plugged after {:.2} s; MemTotal {before} -> {after} KiB (+{} KiB) seen after {:.2} s",
        plugged.as_secs_f64(),
        after.saturating_sub(before),
        online.as_secs_f64()
    ));
    assert!(
        after.saturating_sub(before) >= PLUG_MIB * 1024 * 9 / 10
            && after.saturating_sub(before) <= PLUG_MIB * 1024,
        "MemTotal {before} -> {after} KiB after plugging {PLUG_MIB} MiB\n{}",
        g.vm.output()
    );
}

fn stats(v: &[Duration]) -> (f64, f64, f64) {
    let us: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    let min = us.iter().copied().fold(f64::INFINITY, f64::min);
    let max = us.iter().copied().fold(0.0, f64::max);
    let n = f64::from(u32::try_from(us.len()).unwrap_or(u32::MAX)).max(1.0);
    (min, us.iter().sum::<f64>() / n, max)
}
