//! virtio-net and MMDS as the test guest sees them, under squib and under the reference
//! Firecracker (same guest, same API calls, same host-side code), side by side.
//!
//! - Throughput (`squibtest=net-throughput`, per round one boot per frame size, 1514 B then
//!   64 B, each with a tx then an rx phase; a failed boot is reported, not fatal for the
//!   reference): guest→host, the guest queues `TX_FRAMES` frames to the host's MAC and
//!   times from the first queued to the last used; host→guest, the host floods test frames
//!   into the tap (an `AF_PACKET` socket) between the guest's `NET-T0 rx` and `NET-T1 rx` and
//!   the guest times from the first to the last of `RX_FRAMES` received. MiB/s and frames/s are
//!   the guest's (its TSC rate from CPUID, else the host's `cpu MHz`: the same for both VMMs).
//! - VMM CPU time per GiB moved: `utime + stime` of every thread of the VMM process except its
//!   vCPU threads (`fc_vcpu N`, the guest's own time), from `/proc/<pid>/task/*/stat` at the
//!   phase's `NET-T0`/`NET-T1` lines, summed over rounds and divided by the bytes moved.
//! - MMDS V2 latency from the guest (`squibtest=mmds`): the token `PUT` (one per boot, with its
//!   TCP connection setup) and the mean of `MMDS_REPS` `GET`s (a connection each).
//!
//! Isolation: everything runs in a network namespace the bench creates (`common/net.rs`); each
//! VM gets its own tap there, gone when the VMM exits.
//!
//! Run: `cargo bench -p squib-cli --bench net` (needs /dev/kvm, /dev/net/tun, `CAP_SYS_ADMIN`;
//! the reference binary is `$SQUIB_REFERENCE_FIRECRACKER`, else `../shared/peers/firecracker`,
//! else its column is skipped loudly; `SQUIB_BENCH_RUNS=<n>` rounds per VMM, default 3).

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;
#[path = "../tests/common/net.rs"]
mod net;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{Res, api, median};
use net::{GUEST_MAC, HOST_MAC, mac_str, test_frame};
use serde_json::json;

const TX_FRAMES: u64 = 100_000;
const RX_FRAMES: u64 = 40_000;
const MMDS_REPS: u64 = 50;
const RUNS: usize = 3;
const SIZES: [usize; 2] = [1514, 64];
const LIMIT: Duration = Duration::from_secs(300);

/// A configured (not yet started) VM with one interface on its own tap; killed on drop.
struct Vm {
    child: Child,
    api: PathBuf,
    serial: PathBuf,
    tap: String,
}

impl Vm {
    fn new(vmm: &Path, guest: &Path, args: &str) -> Res<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let api_sock = common::tmp_path("netbench.sock");
        let serial = common::tmp_path("netbench.serial");
        let child = harness::spawn_vmm(vmm, &api_sock)?;
        let vm = Self {
            child,
            api: api_sock,
            serial,
            tap: format!("sqb{n}"),
        };
        let put =
            |path: &str, body: serde_json::Value| api(&vm.api, "PUT", path, &body.to_string());
        put("/serial", json!({"serial_out_path": vm.serial}))?;
        put(
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 128}),
        )?;
        put(
            "/boot-source",
            json!({
                "kernel_image_path": guest,
                "boot_args": format!("console=ttyS0 reboot=k panic=1 {args}"),
            }),
        )?;
        put(
            "/network-interfaces/eth0",
            net::iface("eth0", &vm.tap, &GUEST_MAC),
        )?;
        squib_sys::netns::set_link_up(&vm.tap).map_err(|e| format!("{}: {e}", vm.tap))?;
        Ok(vm)
    }

    fn start(&self) -> Res<()> {
        api(
            &self.api,
            "PUT",
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        )
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Polls the console every millisecond until `needle` appears; returns the console.
    fn wait_line(&self, needle: &str) -> Res<String> {
        harness::wait_console(&self.serial, needle, LIMIT).map(|(text, _)| text)
    }

    /// CPU seconds of the VMM's non-vCPU threads (`utime + stime` from `/proc`).
    fn vmm_cpu_secs(&self) -> f64 {
        let mut ticks = 0u32;
        let dir = format!("/proc/{}/task", self.child.id());
        for task in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ... : fields after the last ')' start at field 3.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            if head.contains("fc_vcpu") {
                continue;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 (1-based), i.e. rest[11], rest[12].
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
            ticks = ticks.saturating_add(get(11).saturating_add(get(12)));
        }
        f64::from(ticks) / clk_tck()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.api);
        let _ = std::fs::remove_file(&self.serial);
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The value of `key=` in the guest's `net-throughput` line for `dir`/`size`.
fn tput_field(text: &str, dir: &str, size: usize, key: &str) -> Res<f64> {
    let prefix = format!("TEST info net-throughput dir={dir} size={size} ");
    net::field(text, &prefix, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {key} for {dir} {size}:\n{text}"))
}

/// Per (direction, size): MiB/s and frames/s samples, VMM CPU seconds and bytes moved.
#[derive(Default, Clone)]
struct Phase {
    mib_s: Vec<f64>,
    fps: Vec<f64>,
    cpu_secs: f64,
    bytes: f64,
}

#[derive(Default)]
struct Samples {
    /// Index: `dir * 2 + size index`, dir 0 = guest→host, 1 = host→guest.
    phases: [Phase; 4],
    mmds_put_ms: Vec<f64>,
    mmds_get_ms: Vec<f64>,
    /// Ethernet bytes of MMDS's ARP reply as the guest received it.
    arp_len: Vec<f64>,
    /// Boots that failed (the guest's last lines).
    failures: Vec<String>,
}

/// Host side of the rx phases: floods frames of the size in `flood` (0 = idle) into the tap.
fn flooder(tap: String, flood: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Protocol 0: this socket only sends (the guest's frames are not copied to it).
        let sock = squib_sys::netns::PacketSocket::bind(&tap, 0).expect("AF_PACKET socket");
        let frames: Vec<Vec<u8>> = SIZES
            .iter()
            .map(|&s| test_frame(&GUEST_MAC, &HOST_MAC, b'R', 0, s))
            .collect();
        loop {
            match flood.load(Ordering::Relaxed) {
                usize::MAX => return,
                0 => std::thread::sleep(Duration::from_micros(200)),
                size => {
                    let f = frames.iter().find(|f| f.len() == size).expect("size");
                    for _ in 0..64 {
                        let _ = sock.send(f);
                    }
                }
            }
        }
    })
}

impl Samples {
    /// One boot per frame size (tx then rx). A failed boot is recorded in `failures` (the
    /// other figures still count); only squib's failures abort the bench.
    fn throughput_round(&mut self, vmm: &Path, guest: &Path, khz: u64) {
        for (si, &size) in SIZES.iter().enumerate() {
            if let Err(e) = self.throughput_boot(vmm, guest, khz, si, size) {
                let tail: String = e.lines().rev().take(6).collect::<Vec<_>>().join(" | ");
                self.failures.push(format!("{size} B: {tail}"));
            }
        }
    }

    fn throughput_boot(
        &mut self,
        vmm: &Path,
        guest: &Path,
        khz: u64,
        si: usize,
        size: usize,
    ) -> Res<()> {
        let args = format!(
            "squibtest=net-throughput squibtest.frame_size={size} squibtest.frames={TX_FRAMES} \
             squibtest.rx_frames={RX_FRAMES} squibtest.dst={} squibtest.tsc_khz={khz} \
             squibtest.timeout_ms=20000",
            mac_str(&HOST_MAC)
        );
        let vm = Vm::new(vmm, guest, &args)?;
        let flood = Arc::new(AtomicUsize::new(0));
        let flood_thread = flooder(vm.tap.clone(), flood.clone());
        let result = (|| {
            vm.start()?;
            for (d, dir) in ["tx", "rx"].iter().enumerate() {
                vm.wait_line(&format!("NET-T0 {dir} size={size}"))?;
                let c0 = vm.vmm_cpu_secs();
                if d == 1 {
                    flood.store(size, Ordering::Relaxed);
                }
                let r = vm.wait_line(&format!("NET-T1 {dir} size={size}"));
                let c1 = vm.vmm_cpu_secs();
                flood.store(0, Ordering::Relaxed);
                r?;
                let text = wait_complete(&vm, dir, size)?;
                let p = &mut self.phases[d * 2 + si];
                p.mib_s.push(tput_field(&text, dir, size, "mib_s")?);
                p.fps.push(tput_field(&text, dir, size, "fps")?);
                p.cpu_secs += c1 - c0;
                p.bytes += tput_field(&text, dir, size, "bytes")?;
            }
            vm.wait_line("TEST ok net-throughput").map(|_| ())
        })();
        flood.store(usize::MAX, Ordering::Relaxed);
        let _ = flood_thread.join();
        result
    }

    fn mmds_round(&mut self, vmm: &Path, guest: &Path, khz: u64) -> Res<()> {
        let args = format!(
            "squibtest=mmds squibtest.mmds_reps={MMDS_REPS} squibtest.tsc_khz={khz} \
             squibtest.mmds_path=/latest/meta-data/ami-id"
        );
        let vm = Vm::new(vmm, guest, &args)?;
        let cfg = json!({"version": "V2", "network_interfaces": ["eth0"]});
        api(&vm.api, "PUT", "/mmds/config", &cfg.to_string())?;
        let doc = json!({"latest": {"meta-data": {"ami-id": "ami-12345678"}}});
        api(&vm.api, "PUT", "/mmds", &doc.to_string())?;
        vm.start()?;
        let text = vm.wait_line("TEST ok mmds status=200")?;
        let num = |prefix: &str, key: &str| -> Res<f64> {
            net::field(&text, prefix, key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {key}:\n{text}"))
        };
        let put_cycles = num("put_token_tsc_cycles=", "put_token_tsc_cycles")?;
        let khz = num("us_per_get=", "tsc_khz")?;
        self.mmds_put_ms.push(put_cycles / khz);
        self.mmds_get_ms
            .push(num("us_per_get=", "us_per_get")? / 1000.0);
        self.arp_len.push(num("TEST info mmds arp ", "len")?);
        Ok(())
    }
}

/// Waits until the `net-throughput` line for `dir`/`size` is followed by another line.
fn wait_complete(vm: &Vm, dir: &str, size: usize) -> Res<String> {
    let prefix = format!("TEST info net-throughput dir={dir} size={size} ");
    let start = Instant::now();
    loop {
        let text = vm.console();
        if let Some(at) = text.find(&prefix)
            && text[at..].contains('\n')
        {
            return Ok(text);
        }
        if start.elapsed() > LIMIT {
            return Err(format!("incomplete `{prefix}`:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rows(s: &Samples) -> Vec<harness::Cell> {
    let mut r = Vec::new();
    for p in &s.phases {
        r.push(median(&p.mib_s));
        r.push(median(&p.fps));
    }
    for p in &s.phases {
        r.push(p.cpu_secs / (p.bytes / f64::from(1u32 << 30)));
    }
    r.push(median(&s.mmds_get_ms));
    r.push(median(&s.mmds_put_ms));
    r.push(median(&s.arp_len));
    r.into_iter().map(|v| (v, String::new())).collect()
}

fn bench() {
    let guest = common::test_guest();
    let khz = net::host_tsc_khz();
    let mut vmms = harness::vmms::<Samples>(common::reference_firecracker_path());
    let runs = harness::alternate(&mut vmms, RUNS, |name, bin, samples| {
        samples.throughput_round(bin, &guest, khz);
        assert!(
            name != "squib" || samples.failures.is_empty(),
            "squib throughput: {:?}",
            samples.failures
        );
        samples
            .mmds_round(bin, &guest, khz)
            .unwrap_or_else(|e| panic!("{name} mmds: {e}"));
    });
    for (name, _, samples) in &vmms {
        for f in &samples.failures {
            println!("FAILED ({name}): {f}");
        }
    }
    let squib_row = rows(&vmms[0].2);
    let fc_row = vmms.get(1).map(|v| rows(&v.2));
    println!(
        "virtio-net + MMDS, test guest (1 vCPU, 128 MiB), tap in a private netns: g->h {TX_FRAMES} \
         frames, h->g {RX_FRAMES} frames per size; MMDS {MMDS_REPS} GETs per boot; medians of \
         {runs} alternating rounds (CPU: sum over rounds); loadavg {}",
        harness::loadavg()
    );
    let mut names = Vec::new();
    for (dir, size) in [("g->h", 1514), ("g->h", 64), ("h->g", 1514), ("h->g", 64)] {
        names.push(format!("{dir} {size} B, MiB/s"));
        names.push(format!("{dir} {size} B, frames/s"));
    }
    for (dir, size) in [("g->h", 1514), ("g->h", 64), ("h->g", 1514), ("h->g", 64)] {
        names.push(format!("{dir} {size} B, VMM CPU s/GiB (lower better)"));
    }
    names.push("MMDS V2 GET from the guest, ms".into());
    names.push("MMDS V2 token PUT from the guest, ms".into());
    names.push("MMDS ARP reply as received, bytes".into());
    harness::print_table(46, "metric", &names, &squib_row, fc_row.as_deref(), false);
}

fn main() {
    if !common::kvm_or_skip() || !net::tun_or_skip() {
        return;
    }
    net::in_netns("net bench", bench);
}
