//! Process and boot figures for the `squib` binary, over N runs (default 10, `SQUIB_BENCH_RUNS`):
//!
//! - process start → API socket connectable;
//! - `InstanceStart` → guest boot-timer write (squib's `Guest-boot-time` log line);
//! - process start → exit, `--no-api --config-file` booting the test guest's `hello`;
//! - VMM memory overhead: RSS of everything except guest memory, for a booted 1 vCPU / 128 MiB
//!   microVM (the Firecracker "memory cop" method: sum `Rss` over `/proc/<pid>/smaps` mappings
//!   other than the guest-memory mapping), plus `VmHWM`.
//!
//! Each figure is measured with squib's default seccomp filters and with `--no-seccomp`
//! (`SQUIB_BENCH_SECCOMP=on|off|both`, default both; runs alternate between the two).
//!
//! Run: `cargo bench -p squib-cli --bench boot` (needs /dev/kvm).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const GUEST_MIB: u64 = 128;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guest() -> PathBuf {
    let out = repo().join("target/guest");
    let ok = Command::new("sh")
        .arg(repo().join("guest/build.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "guest build failed");
    out.join("squib-test-guest.elf")
}

fn api(sock: &Path, method: &str, path: &str, body: &str) -> u16 {
    let mut s = UnixStream::connect(sock).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn stats(name: &str, unit: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / f64::from(u32::try_from(v.len()).unwrap_or(1));
    println!(
        "{name:<44} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {unit}",
        v[0],
        v[v.len() / 2],
        mean,
        v[v.len() - 1]
    );
}

/// kB of RSS outside the guest-memory mapping, and VmHWM in kB.
fn footprint(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut skip) = (0u64, false);
    for line in smaps.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("Size:"), Some(kb)) => skip = kb.parse::<u64>().ok() == Some(GUEST_MIB * 1024),
            (Some("Rss:"), Some(kb)) if !skip => total += kb.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (total, hwm)
}

/// The seccomp modes to measure: (label, extra flags).
fn seccomp_modes() -> Vec<(&'static str, &'static [&'static str])> {
    let on: (&str, &[&str]) = ("seccomp on (default)", &[]);
    let off: (&str, &[&str]) = ("--no-seccomp", &["--no-seccomp"]);
    match std::env::var("SQUIB_BENCH_SECCOMP").as_deref() {
        Ok("on") => vec![on],
        Ok("off") => vec![off],
        _ => vec![on, off],
    }
}

#[derive(Default)]
struct Figures {
    sock_ms: Vec<f64>,
    boot_ms: Vec<f64>,
    noapi_ms: Vec<f64>,
    overhead: Vec<f64>,
    hwm: Vec<f64>,
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let runs: usize = std::env::var("SQUIB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let guest = guest();
    let modes = seccomp_modes();
    let mut figures: Vec<Figures> = modes.iter().map(|_| Figures::default()).collect();
    for i in 0..runs {
        for ((_, flags), f) in modes.iter().zip(figures.iter_mut()) {
            one_run(i, flags, &guest, f);
        }
    }
    for ((label, _), f) in modes.iter().zip(figures) {
        println!("squib boot bench: {runs} runs, test guest, 1 vCPU, {GUEST_MIB} MiB, {label}");
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9}",
            "measure", "min", "median", "mean", "max"
        );
        stats("process start -> API socket ready", "ms", f.sock_ms);
        stats("InstanceStart -> guest boot-timer write", "ms", f.boot_ms);
        stats("--no-api: process start -> exit (hello)", "ms", f.noapi_ms);
        stats("RSS outside guest memory (booted VM)", "MiB", f.overhead);
        stats("VmHWM (incl. touched guest memory)", "MiB", f.hwm);
    }
}

fn one_run(i: usize, flags: &[&str], guest: &Path, f: &mut Figures) {
    let bin = env!("CARGO_BIN_EXE_squib");
    let tmp = std::env::temp_dir();
    {
        // API mode: socket readiness, InstanceStart → boot timer, footprint of a running VM.
        let sock = tmp.join(format!("squib-bench-{}-{i}.sock", std::process::id()));
        let log = tmp.join(format!("squib-bench-{}-{i}.log", std::process::id()));
        let t0 = Instant::now();
        let mut child = Command::new(bin)
            .args(["--api-sock", sock.to_str().expect("utf8"), "--boot-timer"])
            .args(flags)
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        while UnixStream::connect(&sock).is_err() {
            std::thread::sleep(Duration::from_micros(200));
        }
        f.sock_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        api(
            &sock,
            "PUT",
            "/machine-config",
            &format!(r#"{{"vcpu_count":1,"mem_size_mib":{GUEST_MIB}}}"#),
        );
        let bs = format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 squibtest=counter squibtest.tick_shift=30"}}"#,
            guest.display()
        );
        api(&sock, "PUT", "/boot-source", &bs);
        assert_eq!(
            api(
                &sock,
                "PUT",
                "/actions",
                r#"{"action_type":"InstanceStart"}"#
            ),
            204
        );
        let mut boot = None;
        for _ in 0..500 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            boot = text
                .lines()
                .find_map(|l| l.split("Guest-boot-time = ").nth(1))
                .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok());
            if boot.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f.boot_ms.push(boot.expect("no Guest-boot-time line") / 1e3);
        std::thread::sleep(Duration::from_millis(200));
        let (o, h) = footprint(child.id());
        f.overhead
            .push(f64::from(u32::try_from(o).unwrap_or(u32::MAX)) / 1024.0);
        f.hwm
            .push(f64::from(u32::try_from(h).unwrap_or(u32::MAX)) / 1024.0);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(&log);

        // --no-api: process start → exit.
        let cfg = tmp.join(format!("squib-bench-{}-{i}.json", std::process::id()));
        std::fs::write(
            &cfg,
            format!(
                r#"{{"boot-source":{{"kernel_image_path":"{}","boot_args":"console=ttyS0 squibtest=hello"}},"drives":[],"machine-config":{{"vcpu_count":1,"mem_size_mib":{GUEST_MIB}}}}}"#,
                guest.display()
            ),
        )
        .expect("cfg");
        let t0 = Instant::now();
        let status = Command::new(bin)
            .args(["--no-api", "--config-file", cfg.to_str().expect("utf8")])
            .args(flags)
            .stdout(Stdio::null())
            .status()
            .expect("run");
        f.noapi_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(status.success());
        let _ = std::fs::remove_file(&cfg);
    }
}
