//! virtio-vsock as the test guest sees it, under squib and under the reference Firecracker
//! (same guest, same API calls, same host-side code), side by side.
//!
//! - Throughput (`squibtest=vsock-throughput`, one connection the guest opens to the host
//!   listener at `<uds_path>_60`): guest→host, the host times from `accept` to the last of
//!   `MIB` MiB (checked byte for byte); host→guest, from the guest's ready byte to its ack after
//!   the last byte (the guest samples two bytes per packet). The guest moves data without
//!   per-byte work, so this measures the device path, not the (emulated) guest CPU.
//! - Host→guest connection setup: `connect(uds_path)` + `CONNECT 52\n` until `OK <port>\n`
//!   (`squibtest=vsock-listen`), `CONNS` sequential connections after a warm-up.
//! - Guest→host connection setup: the guest's REQUEST→RESPONSE time for `CONNS` sequential
//!   connections (`squibtest=vsock-connect`, no payload), its TSC calibrated against the host
//!   clock over the whole loop; and the whole connect+close cycle (loop time / `CONNS`).
//!
//! Run: `cargo bench -p squib-cli --bench vsock` (needs /dev/kvm; the reference binary is
//! `$SQUIB_REFERENCE_FIRECRACKER`, else `../shared/peers/firecracker`, else skipped loudly;
//! `SQUIB_BENCH_RUNS=<n>` rounds per VMM, default 5).

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::{
    io::{Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::tmp_path as tmp;
use harness::{Res, api, median, percentile, range};

const MIB: u64 = 32;
/// Rounds per VMM; `SQUIB_BENCH_RUNS` overrides.
const RUNS: usize = 5;
const CONNS: usize = 200;
const WARMUP: usize = 10;
const GUEST_PORT: u32 = 52;
const HOST_PORT: u32 = 60;
const LIMIT: Duration = Duration::from_secs(300);

/// A booted VM; killed and cleaned up on drop.
struct Vm {
    child: Child,
    api: PathBuf,
    serial: PathBuf,
    uds: PathBuf,
}

impl Vm {
    fn boot(vmm: &Path, guest: &Path, uds: &Path, args: &str) -> Res<Self> {
        let api_sock = tmp("api.sock");
        let serial = tmp("serial.log");
        let _ = std::fs::remove_file(&serial);
        let child = harness::spawn_vmm(vmm, &api_sock)?;
        let vm = Self {
            child,
            api: api_sock,
            serial,
            uds: uds.to_path_buf(),
        };
        let serial_body = format!(r#"{{"serial_out_path":"{}"}}"#, vm.serial.display());
        api(&vm.api, "PUT", "/serial", &serial_body)?;
        let mc = r#"{"vcpu_count":1,"mem_size_mib":64}"#;
        api(&vm.api, "PUT", "/machine-config", mc)?;
        let bs = format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1 {args}"}}"#,
            guest.display()
        );
        api(&vm.api, "PUT", "/boot-source", &bs)?;
        let vs = format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, uds.display());
        api(&vm.api, "PUT", "/vsock", &vs)?;
        api(
            &vm.api,
            "PUT",
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        )?;
        Ok(vm)
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Polls the console every millisecond; the moment `needle` appeared.
    fn wait_line(&self, needle: &str) -> Res<Instant> {
        harness::wait_console(&self.serial, needle, LIMIT).map(|(_, at)| at)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in [&self.api, &self.serial, &self.uds] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn port_path(uds: &Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", uds.display()))
}

/// Accepts one connection within `LIMIT` (the listener is nonblocking).
fn accept(l: &UnixListener) -> Res<UnixStream> {
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(_) if start.elapsed() < LIMIT => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// 4 KiB of the guest's pattern `seed` (byte i = i % 251 + seed; the stream repeats it).
fn pattern_page(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0).wrapping_add(seed))
        .collect()
}

fn read_byte(s: &mut UnixStream) -> Res<u8> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(b[0])
}

/// One throughput run: (guest→host MiB/s, host→guest MiB/s).
fn throughput(vmm: &Path, guest: &Path) -> Res<(f64, f64)> {
    let uds = tmp("tput.sock");
    let port_sock = port_path(&uds, HOST_PORT);
    let _ = std::fs::remove_file(&port_sock);
    let listener = UnixListener::bind(&port_sock).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let args = format!("squibtest=vsock-throughput squibtest.mib={MIB} squibtest.port={HOST_PORT}");
    let vm = Vm::boot(vmm, guest, &uds, &args)?;
    let result = (|| {
        let mut s = accept(&listener)?;
        let t0 = Instant::now();
        let total = usize::try_from(MIB << 20).map_err(|e| e.to_string())?;
        let want = pattern_page(1);
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        while got < total {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("g2h: EOF after {got} bytes"));
            }
            for (i, b) in buf[..n].iter().enumerate() {
                if *b != want[(got + i) % 4096] {
                    return Err(format!("g2h: mismatch at {}", got + i));
                }
            }
            got += n;
        }
        let g2h = t0.elapsed();
        s.write_all(b"g").map_err(|e| e.to_string())?;
        if read_byte(&mut s)? != b'r' {
            return Err("h2g: no ready byte".into());
        }
        let t1 = Instant::now();
        let chunk = pattern_page(2).repeat(16);
        for _ in 0..total / chunk.len() {
            s.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        if read_byte(&mut s)? != b'h' {
            return Err("h2g: no ack byte".into());
        }
        let h2g = t1.elapsed();
        vm.wait_line("TEST ok vsock-throughput")?;
        let mib = f64::from(u32::try_from(MIB).unwrap_or(0));
        Ok((mib / g2h.as_secs_f64(), mib / h2g.as_secs_f64()))
    })();
    drop(vm);
    let _ = std::fs::remove_file(&port_sock);
    result
}

/// Host→guest: `CONNECT` → `OK` latency of `CONNS` sequential connections, in µs.
fn h2g_connect(vmm: &Path, guest: &Path) -> Res<Vec<f64>> {
    let uds = tmp("h2g.sock");
    let args = format!("squibtest=vsock-listen squibtest.conns=0 squibtest.port={GUEST_PORT}");
    let vm = Vm::boot(vmm, guest, &uds, &args)?;
    vm.wait_line("listening")?;
    let mut lat = Vec::with_capacity(CONNS);
    for i in 0..WARMUP + CONNS {
        let t = Instant::now();
        let mut s = UnixStream::connect(&uds).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        while line.last() != Some(&b'\n') {
            line.push(read_byte(&mut s).map_err(|e| format!("connection {i}: {e}"))?);
        }
        let us = t.elapsed().as_secs_f64() * 1e6;
        if !line.starts_with(b"OK ") {
            return Err(format!(
                "connection {i}: {}",
                String::from_utf8_lossy(&line)
            ));
        }
        // One echoed byte: the guest has the connection; then close it.
        s.write_all(b"x").map_err(|e| e.to_string())?;
        read_byte(&mut s)?;
        if i >= WARMUP {
            lat.push(us);
        }
    }
    Ok(lat)
}

/// Guest→host: (mean REQUEST→RESPONSE µs, mean connect+close cycle µs).
fn g2h_connect(vmm: &Path, guest: &Path) -> Res<(f64, f64)> {
    let uds = tmp("g2h.sock");
    let port_sock = port_path(&uds, HOST_PORT);
    let _ = std::fs::remove_file(&port_sock);
    let listener = UnixListener::bind(&port_sock).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    });
    let args = format!(
        "squibtest=vsock-connect squibtest.conns={CONNS} squibtest.bytes=0 squibtest.port={HOST_PORT}"
    );
    let result = Vm::boot(vmm, guest, &uds, &args).and_then(|vm| {
        let t0 = vm.wait_line("VSOCK-T0 connect")?;
        let t1 = vm.wait_line("VSOCK-T1 connect")?;
        // The whole result line: the END line comes after it.
        vm.wait_line("SQUIBTEST END vsock-connect")?;
        let text = vm.console();
        let field = |key: &str| -> Res<f64> {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no {key} in:\n{text}"))
        };
        let (connect, looped) = (field("connect_cycles=")?, field("loop_cycles=")?);
        let secs = (t1 - t0).as_secs_f64();
        let tsc_hz = looped / secs;
        let conns = f64::from(u32::try_from(CONNS).unwrap_or(1));
        Ok((connect / tsc_hz * 1e6, secs / conns * 1e6))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let _ = std::fs::remove_file(&port_sock);
    result
}

/// Every sample of one VMM.
#[derive(Default)]
struct Samples {
    g2h: Vec<f64>,
    h2g: Vec<f64>,
    h2g_connect: Vec<f64>,
    g2h_connect: Vec<f64>,
    g2h_cycle: Vec<f64>,
}

impl Samples {
    /// One round of every measurement.
    fn round(&mut self, vmm: &Path, guest: &Path) -> Res<()> {
        let (g, h) = throughput(vmm, guest)?;
        self.g2h.push(g);
        self.h2g.push(h);
        self.h2g_connect.extend(h2g_connect(vmm, guest)?);
        let (connect, cycle) = g2h_connect(vmm, guest)?;
        self.g2h_connect.push(connect);
        self.g2h_cycle.push(cycle);
        Ok(())
    }

    /// The table's figures, in its order: (median, spread) where the spread is the
    /// per-round range (empty for the pooled connect samples).
    fn row(&self) -> Vec<harness::Cell> {
        vec![
            (median(&self.g2h), range(&self.g2h)),
            (median(&self.h2g), range(&self.h2g)),
            (median(&self.h2g_connect), String::new()),
            (percentile(&self.h2g_connect, 90), String::new()),
            (median(&self.g2h_connect), range(&self.g2h_connect)),
            (median(&self.g2h_cycle), range(&self.g2h_cycle)),
        ]
    }
}

fn main() {
    if !common::kvm_or_skip() {
        return;
    }
    let guest = common::test_guest();
    let mut vmms = harness::vmms::<Samples>(common::reference_firecracker_path());
    let runs = harness::alternate(&mut vmms, RUNS, |name, bin, samples| {
        samples
            .round(bin, &guest)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    });
    let squib_row = vmms[0].2.row();
    let fc_row = vmms.get(1).map(|v| v.2.row());
    println!(
        "virtio-vsock, test guest (1 vCPU, 64 MiB): {MIB} MiB per direction, {CONNS} sequential connections per direction; medians of {runs} alternating rounds (connect: of all samples / of per-round means); loadavg {}",
        harness::loadavg()
    );
    let names = [
        "guest->host throughput, MiB/s",
        "host->guest throughput, MiB/s",
        "host->guest connect (CONNECT..OK), median us",
        "host->guest connect (CONNECT..OK), p90 us",
        "guest->host connect (REQUEST..RESPONSE), us",
        "guest->host connect+close cycle, us",
    ]
    .map(String::from);
    harness::print_table(
        44,
        "metric (median, per-round range)",
        &names,
        &squib_row,
        fc_row.as_deref(),
        true,
    );
}
