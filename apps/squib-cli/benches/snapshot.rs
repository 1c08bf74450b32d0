//! Snapshot figures, squib side by side with the reference Firecracker on the same test guest:
//!
//! - `PUT /snapshot/create` Full for 128 MiB and 1 GiB guests (client-measured API latency);
//! - `PUT /snapshot/create` Diff after the guest rewrote ~1 % of its pages;
//! - `PUT /snapshot/load` (`File` backend, `resume_vm`) latency, and load → first guest serial
//!   byte after resume, in a fresh process each time.
//!
//! The guest runs the test guest's `dirty` scenario (it rewrites `dirty_pages` pages and prints
//! `TICK <n>` every tick). Runs per figure: `SQUIB_BENCH_RUNS` (default 5). The reference binary
//! is `$SQUIB_FIRECRACKER` or `../shared/peers/firecracker`; without it only squib is measured
//! (printed loudly). Run: `cargo bench -p squib-cli --bench snapshot` (needs /dev/kvm).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn api(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

fn ok(sock: &Path, method: &str, path: &str, body: &str) {
    let (s, out) = api(sock, method, path, body);
    assert!((200..300).contains(&s), "{method} {path}: {out}");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Vmm {
    Squib,
    Firecracker,
}

struct Proc {
    child: Child,
    sock: PathBuf,
    out: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

fn tmp(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "squib-bench-snap-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn spawn(vmm: Vmm, bin: &Path) -> Proc {
    let sock = tmp("api.sock");
    let out = tmp("out.log");
    let f = std::fs::File::create(&out).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--api-sock").arg(&sock);
    if vmm == Vmm::Firecracker {
        cmd.arg("--no-seccomp");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "no API socket");
        std::thread::sleep(Duration::from_millis(2));
    }
    Proc { child, sock, out }
}

fn max_tick(p: &Proc) -> u64 {
    std::fs::read_to_string(&p.out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TICK ")?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

fn wait_tick(p: &Proc, at_least: u64) {
    let start = Instant::now();
    while max_tick(p) < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no tick {at_least}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Figures {
    full_ms: f64,
    diff_ms: f64,
    diff_bytes: u64,
    load_ms: Vec<f64>,
    first_byte_ms: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

fn measure(vmm: Vmm, bin: &Path, mem_mib: u64, runs: usize) -> Figures {
    let kernel = guest();
    let pages = mem_mib * 256 / 100;
    let vm = spawn(vmm, bin);
    ok(
        &vm.sock,
        "PUT",
        "/machine-config",
        &format!(r#"{{"vcpu_count":1,"mem_size_mib":{mem_mib},"track_dirty_pages":true}}"#),
    );
    ok(
        &vm.sock,
        "PUT",
        "/boot-source",
        &format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1 squibtest=dirty squibtest.tick_shift=10 squibtest.dirty_pages={pages}"}}"#,
            kernel.display()
        ),
    );
    ok(
        &vm.sock,
        "PUT",
        "/actions",
        r#"{"action_type":"InstanceStart"}"#,
    );
    wait_tick(&vm, 3);
    ok(&vm.sock, "PATCH", "/vm", r#"{"state":"Paused"}"#);
    let (state, mem) = (tmp("full.state"), tmp("full.mem"));
    let t = Instant::now();
    ok(
        &vm.sock,
        "PUT",
        "/snapshot/create",
        &format!(
            r#"{{"snapshot_type":"Full","snapshot_path":"{}","mem_file_path":"{}"}}"#,
            state.display(),
            mem.display()
        ),
    );
    let full_ms = ms(t.elapsed());
    ok(&vm.sock, "PATCH", "/vm", r#"{"state":"Resumed"}"#);
    let now = max_tick(&vm);
    wait_tick(&vm, now + 2);
    ok(&vm.sock, "PATCH", "/vm", r#"{"state":"Paused"}"#);
    let (dstate, dmem) = (tmp("diff.state"), tmp("diff.mem"));
    let t = Instant::now();
    ok(
        &vm.sock,
        "PUT",
        "/snapshot/create",
        &format!(
            r#"{{"snapshot_type":"Diff","snapshot_path":"{}","mem_file_path":"{}"}}"#,
            dstate.display(),
            dmem.display()
        ),
    );
    let diff_ms = ms(t.elapsed());
    let diff_bytes = allocated_bytes(&dmem);
    drop(vm);

    let mut load_ms = Vec::new();
    let mut first_byte_ms = Vec::new();
    for _ in 0..runs {
        let vm = spawn(vmm, bin);
        let before = std::fs::metadata(&vm.out).map_or(0, |m| m.len());
        let body = format!(
            r#"{{"snapshot_path":"{}","mem_backend":{{"backend_type":"File","backend_path":"{}"}},"resume_vm":true}}"#,
            state.display(),
            mem.display()
        );
        let t = Instant::now();
        ok(&vm.sock, "PUT", "/snapshot/load", &body);
        load_ms.push(ms(t.elapsed()));
        // First guest byte after resume: the next TICK line.
        while !std::fs::read_to_string(&vm.out)
            .unwrap_or_default()
            .get(usize::try_from(before).unwrap_or(0)..)
            .is_some_and(|s| s.contains("TICK "))
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no output after load"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        first_byte_ms.push(ms(t.elapsed()));
    }
    for p in [&state, &mem, &dstate, &dmem] {
        let _ = std::fs::remove_file(p);
    }
    Figures {
        full_ms,
        diff_ms,
        diff_bytes,
        load_ms,
        first_byte_ms,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let runs = std::env::var("SQUIB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize);
    let squib = PathBuf::from(env!("CARGO_BIN_EXE_squib"));
    let fc = std::env::var("SQUIB_FIRECRACKER").map_or_else(
        |_| repo().join("../shared/peers/firecracker"),
        PathBuf::from,
    );
    let have_fc = fc.exists();
    if !have_fc {
        println!(
            "SKIPPED: no reference firecracker at {}: squib only",
            fc.display()
        );
    }
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "figure (median)", "squib", "firecracker", "fc/squib"
    );
    for mem_mib in [128u64, 1024] {
        let s = measure(Vmm::Squib, &squib, mem_mib, runs);
        let f = have_fc.then(|| measure(Vmm::Firecracker, &fc, mem_mib, runs));
        let row = |name: &str, a: f64, b: Option<f64>, unit: &str| {
            let (bs, ratio) = b.map_or(("-".to_owned(), "-".to_owned()), |b| {
                (format!("{b:.2}"), format!("{:.2}", b / a))
            });
            println!("{name:<40} {a:>12.2} {bs:>12} {ratio:>8}  {unit}");
        };
        row(
            &format!("create Full, {mem_mib} MiB"),
            s.full_ms,
            f.as_ref().map(|f| f.full_ms),
            "ms",
        );
        row(
            &format!("create Diff (~1% dirty), {mem_mib} MiB"),
            s.diff_ms,
            f.as_ref().map(|f| f.diff_ms),
            "ms",
        );
        #[allow(clippy::cast_precision_loss)]
        row(
            &format!("Diff file allocated, {mem_mib} MiB"),
            s.diff_bytes as f64 / 1_048_576.0,
            f.as_ref().map(|f| f.diff_bytes as f64 / 1_048_576.0),
            "MiB",
        );
        row(
            &format!("load (resume_vm) API, {mem_mib} MiB"),
            median(s.load_ms.clone()),
            f.as_ref().map(|f| median(f.load_ms.clone())),
            "ms",
        );
        row(
            &format!("load → first serial byte, {mem_mib} MiB"),
            median(s.first_byte_ms.clone()),
            f.as_ref().map(|f| median(f.first_byte_ms.clone())),
            "ms",
        );
    }
}
