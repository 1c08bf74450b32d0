//! End-to-end virtio-vsock through the `squib` binary and the test guest's own driver
//! (`guest/src/virtio_vsock.c`), over Firecracker's hybrid Unix-socket protocol:
//! host-initiated connections (`CONNECT <port>\n` on `uds_path` → `OK <host port>\n`),
//! guest-initiated ones (to a host listener at `<uds_path>_<port>`), refusals both ways,
//! `PUT /vsock` replacing the socket, many sequential connections without fd leaks, and a
//! snapshot restored in a new process with `vsock_override` (the guest sees
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` and the new path works), and the same reset announced
//! to the source VM when the snapshot is created (as Firecracker).
//!
//! Each test boots its own VM; they take turns (`one_at_a_time`) because the polling guest
//! keeps a host CPU busy.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Squib, kvm_or_skip, test_guest, tmp_path, wait_for};
use serde_json::json;

const GUEST_CID: u32 = 3;
/// Host ports the device hands to host-initiated connections start here.
const LOCAL_PORT_BASE: u32 = 1 << 30;
/// Sequential connections per direction in the fd-leak test.
const H2G: usize = 1000;
const G2H: usize = 1000;
/// MiB per direction in the streaming test.
const MIB: usize = 4;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Byte `i` of the guest's pattern stream `seed` (`vsock_pattern_byte`).
fn pattern(i: u64, seed: u8) -> u8 {
    u8::try_from((i & 4095) % 251)
        .expect("< 251")
        .wrapping_add(seed)
}

/// A `squib` process whose guest console goes to its own file (`serial_out_path`), so the
/// guest's lines never interleave with the VMM's log.
struct Vm {
    squib: Squib,
    serial: PathBuf,
}

impl Vm {
    fn spawn() -> Self {
        let squib = Squib::spawn(&[], Some(&tmp_path("api.sock")));
        let serial = tmp_path("serial.log");
        let body = json!({ "serial_out_path": serial }).to_string();
        let (s, b) = squib.api("PUT", "/serial", Some(&body));
        assert_eq!(s, 204, "{b}");
        Self { squib, serial }
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.squib.api(method, path, body)
    }

    /// The guest's console so far.
    fn console(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Console and VMM log, for failure messages.
    fn output(&self) -> String {
        format!(
            "--- console ---\n{}--- squib ---\n{}",
            self.console(),
            self.squib.output()
        )
    }

    fn pid(&self) -> u32 {
        self.squib.child.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.serial);
    }
}

/// Starts `squib` with an API socket and configures a 1-vCPU VM running `args`, with vsock
/// at `uds` (not started).
fn configure(args: &str, uds: &Path) -> Vm {
    let vm = Vm::spawn();
    let (s, b) = vm.api(
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count":1,"mem_size_mib":64}"#),
    );
    assert_eq!(s, 204, "{b}");
    let bs = json!({
        "kernel_image_path": test_guest(),
        "boot_args": format!("console=ttyS0 reboot=k panic=1 {args}"),
    });
    let (s, b) = vm.api("PUT", "/boot-source", Some(&bs.to_string()));
    assert_eq!(s, 204, "{b}");
    put_vsock(&vm, uds);
    vm
}

fn put_vsock(vm: &Vm, uds: &Path) {
    let body = json!({"guest_cid": GUEST_CID, "uds_path": uds}).to_string();
    let (s, b) = vm.api("PUT", "/vsock", Some(&body));
    assert_eq!(s, 204, "{b}");
}

fn start(vm: &Vm) {
    let (s, b) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 204, "{b}\n{}", vm.output());
}

fn boot(args: &str, uds: &Path) -> Vm {
    let vm = configure(args, uds);
    start(&vm);
    vm
}

fn wait_output(vm: &Vm, needle: &str, limit: Duration) {
    assert!(
        wait_for(limit, || vm.console().contains(needle).then_some(())).is_some(),
        "no `{needle}` in:\n{}",
        vm.output()
    );
}

fn wait_exit(vm: &mut Vm) {
    let code = vm.squib.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{}", vm.output());
}

/// Connects to `uds` and asks for guest port `port`: the stream and the host port from
/// `OK <port>`, or what the device answered instead (an empty string: it closed the client).
fn host_connect(uds: &Path, port: u32) -> Result<(UnixStream, u32), String> {
    let mut s = UnixStream::connect(uds).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(format!("{e} after {:?}", String::from_utf8_lossy(&line))),
        }
    }
    let text = String::from_utf8_lossy(&line).into_owned();
    let port = text
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse().ok())
        .ok_or_else(|| text.clone())?;
    Ok((s, port))
}

/// Writes `data` and reads the same number of bytes back; returns them.
fn round_trip(s: &mut UnixStream, data: &[u8]) -> Vec<u8> {
    let mut reader = s.try_clone().expect("clone");
    let want = data.len();
    let echo = std::thread::spawn(move || {
        let mut got = vec![0u8; want];
        reader.read_exact(&mut got).map(|()| got)
    });
    s.write_all(data).expect("write");
    echo.join().expect("reader").expect("echo")
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 256) % 256).expect("byte") ^ seed)
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A host listener at `<uds>_<port>` that echoes each connection and records what it got.
struct EchoServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Bytes received per connection, in accept order.
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(uds: &Path, port: u32) -> Self {
        let path = PathBuf::from(format!("{}_{port}", uds.display()));
        let listener = UnixListener::bind(&path).expect("bind echo listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let got = echo_until_eof(s);
                        conns2.lock().expect("conns").push(got);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Self {
            path,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    fn conns(&self) -> Vec<Vec<u8>> {
        self.conns.lock().expect("conns").clone()
    }

    fn count(&self) -> usize {
        self.conns.lock().expect("conns").len()
    }
}

fn echo_until_eof(mut s: UnixStream) -> Vec<u8> {
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if s.write_all(&buf[..n]).is_err() {
                    return got;
                }
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn test_should_echo_a_host_initiated_connection() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let uds = tmp_path("v.sock");
    let mut vm = boot(
        "squibtest=vsock-listen squibtest.port=52 squibtest.conns=1",
        &uds,
    );
    wait_output(
        &vm,
        "vsock-listen port=52 cid=3 listening",
        Duration::from_secs(30),
    );
    let (mut s, port) = host_connect(&uds, 52).expect("CONNECT 52");
    assert!(port >= LOCAL_PORT_BASE, "host port {port}");
    let data = bytes(20_000, 1);
    assert!(round_trip(&mut s, &data) == data, "echo differs");
    drop(s);
    wait_output(
        &vm,
        "TEST ok vsock-listen conns=1 bytes=20000",
        Duration::from_secs(30),
    );
    wait_exit(&mut vm);
}

#[test]
fn test_should_close_the_host_connection_when_no_guest_listener() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let uds = tmp_path("v.sock");
    let mut vm = boot(
        "squibtest=vsock-listen squibtest.port=52 squibtest.conns=1",
        &uds,
    );
    wait_output(&vm, "listening", Duration::from_secs(30));
    // Port 53 has no listener: the guest answers RST and the device closes the client.
    assert_eq!(host_connect(&uds, 53).map(|x| x.1), Err(String::new()));
    // The device still serves the listening port.
    let (mut s, _) = host_connect(&uds, 52).expect("CONNECT 52");
    assert_eq!(round_trip(&mut s, b"after a refusal"), b"after a refusal");
    drop(s);
    wait_output(
        &vm,
        "TEST ok vsock-listen conns=1 bytes=15",
        Duration::from_secs(30),
    );
    wait_exit(&mut vm);
}

#[test]
fn test_should_echo_guest_initiated_connections_through_the_port_socket() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let uds = tmp_path("v.sock");
    let echo = EchoServer::start(&uds, 60);
    let mut vm = boot(
        "squibtest=vsock-connect squibtest.port=60 squibtest.conns=3 squibtest.bytes=30000",
        &uds,
    );
    wait_exit(&mut vm);
    let out = vm.console();
    assert!(
        out.contains("TEST ok vsock-connect conns=3 bytes=90000"),
        "{out}"
    );
    let conns = wait_for(Duration::from_secs(5), || {
        (echo.count() == 3).then(|| echo.conns())
    })
    .expect("3 host connections");
    for (seed, got) in conns.iter().enumerate() {
        let seed = u8::try_from(seed).expect("seed");
        assert_eq!(got.len(), 30_000, "connection {seed}");
        let bad = got
            .iter()
            .enumerate()
            .position(|(i, b)| *b != pattern(i as u64, seed));
        assert_eq!(bad, None, "connection {seed}: pattern mismatch");
    }
}

#[test]
fn test_should_deliver_rst_to_the_guest_when_no_host_listener() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let uds = tmp_path("v.sock");
    let mut vm = boot(
        "squibtest=vsock-connect squibtest.port=61 squibtest.expect_rst=1",
        &uds,
    );
    wait_exit(&mut vm);
    let out = vm.console();
    assert!(out.contains("TEST info vsock-connect rst port=61"), "{out}");
    assert!(out.contains("TEST ok vsock-connect rst=1"), "{out}");
}

#[test]
fn test_should_remove_the_old_socket_file_when_vsock_is_put_again() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let (first, second) = (tmp_path("first.sock"), tmp_path("second.sock"));
    let mut vm = configure(
        "squibtest=vsock-listen squibtest.port=52 squibtest.conns=1",
        &first,
    );
    assert!(first.exists(), "PUT /vsock binds uds_path at once");
    put_vsock(&vm, &second);
    assert!(!first.exists(), "the old socket file was left behind");
    assert!(second.exists());
    let (_, cfg) = vm.api("GET", "/vm/config", None);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    assert_eq!(cfg["vsock"]["uds_path"], json!(second));
    start(&vm);
    wait_output(&vm, "listening", Duration::from_secs(30));
    assert!(UnixStream::connect(&first).is_err());
    let (mut s, _) = host_connect(&second, 52).expect("CONNECT through the new socket");
    assert_eq!(round_trip(&mut s, b"new path"), b"new path");
    drop(s);
    wait_output(
        &vm,
        "TEST ok vsock-listen conns=1 bytes=8",
        Duration::from_secs(30),
    );
    wait_exit(&mut vm);
}

/// Sequential connections in both directions; the squib process's open fds return to where
/// they were.
#[test]
fn test_should_serve_many_sequential_connections_without_fd_leaks() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    // Host → guest.
    let uds = tmp_path("v.sock");
    let vm = boot(
        "squibtest=vsock-listen squibtest.port=52 squibtest.conns=0",
        &uds,
    );
    wait_output(&vm, "listening", Duration::from_secs(30));
    let pid = vm.pid();
    let one = |i: usize| {
        let (mut s, _) = host_connect(&uds, 52).unwrap_or_else(|e| panic!("connection {i}: {e:?}"));
        let msg = format!("hello {i:06}");
        assert_eq!(round_trip(&mut s, msg.as_bytes()), msg.as_bytes());
    };
    one(0);
    std::thread::sleep(Duration::from_millis(200));
    let before = fd_count(pid);
    let t0 = Instant::now();
    for i in 1..=H2G {
        one(i);
    }
    let h2g_time = t0.elapsed();
    let settled = wait_for(Duration::from_secs(10), || {
        (fd_count(pid) <= before).then_some(())
    });
    assert!(
        settled.is_some(),
        "host->guest: {} fds after {H2G} connections, {before} before",
        fd_count(pid)
    );
    drop(vm);

    // Guest → host: the guest connects G2H times; fds are sampled near the end of the run.
    // (A killed VM leaves its socket file behind, as Firecracker does: use a new path.)
    let uds = tmp_path("v.sock");
    let echo = EchoServer::start(&uds, 60);
    let mut vm = boot(
        &format!(
            "squibtest=vsock-connect squibtest.port=60 squibtest.conns={G2H} squibtest.bytes=16"
        ),
        &uds,
    );
    let pid = vm.pid();
    wait_for(Duration::from_secs(60), || {
        (echo.count() >= 1).then_some(())
    })
    .expect("first guest connection");
    let early = fd_count(pid);
    let t0 = Instant::now();
    wait_for(Duration::from_secs(300), || {
        (echo.count() >= G2H - 5).then_some(())
    })
    .unwrap_or_else(|| panic!("{} of {G2H} connections\n{}", echo.count(), vm.output()));
    let late = fd_count(pid);
    let g2h_time = t0.elapsed();
    wait_exit(&mut vm);
    let out = vm.console();
    assert!(
        out.contains(&format!(
            "TEST ok vsock-connect conns={G2H} bytes={}",
            G2H * 16
        )),
        "{out}"
    );
    assert!(
        late <= early + 2,
        "guest->host: {late} fds near the end, {early} after the first connection"
    );
    println!(
        "host->guest: {H2G} connections in {h2g_time:?}; guest->host: {} in {g2h_time:?}",
        G2H - 1
    );
}

/// A VM with vsock and an open host connection is snapshotted; a new process restores it with
/// `vsock_override`: the guest sees the transport reset, drops that connection, and a new host
/// connection through the new path works while the old path is dead.
#[test]
fn test_should_reset_the_transport_and_listen_on_the_override_path_after_restore() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let (old_uds, new_uds) = (tmp_path("old.sock"), tmp_path("new.sock"));
    let vm1 = boot(
        "squibtest=vsock-listen squibtest.port=52 squibtest.conns=0",
        &old_uds,
    );
    wait_output(&vm1, "listening", Duration::from_secs(30));
    let (mut held, _) = host_connect(&old_uds, 52).expect("CONNECT before the snapshot");
    assert_eq!(round_trip(&mut held, b"before"), b"before");
    let (s, b) = vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(s, 204, "{b}");
    let (state, mem) = (tmp_path("vsock.state"), tmp_path("vsock.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm1.output());
    drop(vm1);
    drop(held);

    let vm2 = Vm::spawn();
    let body = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
        "vsock_override": {"uds_path": new_uds},
    });
    let (s, b) = vm2.api("PUT", "/snapshot/load", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm2.output());
    wait_output(
        &vm2,
        "TEST info vsock transport-reset",
        Duration::from_secs(30),
    );
    wait_output(
        &vm2,
        "vsock-listen port=52 cid=3 listening again dropped=1",
        Duration::from_secs(30),
    );
    assert!(
        UnixStream::connect(&old_uds).is_err(),
        "nobody may listen on the old path"
    );
    let (mut s, port) = host_connect(&new_uds, 52).expect("CONNECT through vsock_override");
    assert!(port >= LOCAL_PORT_BASE);
    let data = bytes(10_000, 9);
    assert!(
        round_trip(&mut s, &data) == data,
        "echo after restore differs"
    );
    drop(s);
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&mem);
}

/// As Firecracker, creating a snapshot announces `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` to the
/// guest (not only a restore): the source VM, resumed after `PUT /snapshot/create`, drops its
/// connection and serves new ones once it has acknowledged the event.
#[test]
fn test_should_reset_the_transport_of_the_source_vm_at_snapshot_create() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let uds = tmp_path("src.sock");
    let vm = boot(
        "squibtest=vsock-listen squibtest.port=52 squibtest.conns=0",
        &uds,
    );
    wait_output(&vm, "listening", Duration::from_secs(30));
    let (mut held, _) = host_connect(&uds, 52).expect("CONNECT before the snapshot");
    assert_eq!(round_trip(&mut held, b"before"), b"before");
    let (s, b) = vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(s, 204, "{b}");
    let (state, mem) = (tmp_path("src.state"), tmp_path("src.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm.output());
    assert!(
        !vm.console().contains("TEST info vsock transport-reset"),
        "the guest is paused"
    );
    let (s, b) = vm.api("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
    assert_eq!(s, 204, "{b}");
    wait_output(
        &vm,
        "TEST info vsock transport-reset",
        Duration::from_secs(30),
    );
    wait_output(
        &vm,
        "vsock-listen port=52 cid=3 listening again dropped=1",
        Duration::from_secs(30),
    );
    let (mut s, _) = host_connect(&uds, 52).expect("CONNECT after the reset");
    let data = bytes(10_000, 5);
    assert!(round_trip(&mut s, &data) == data, "echo after the reset");
    drop(s);
    drop(held);
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&mem);
}

/// `vsock-throughput` with 4 MiB each way: the host checks every guest byte, the guest samples
/// the host's (first and last byte of every packet) and counts them exactly.
#[test]
fn test_should_stream_the_pattern_both_ways() {
    if !kvm_or_skip() {
        return;
    }
    let _turn = one_at_a_time();
    let uds = tmp_path("v.sock");
    let listener = UnixListener::bind(format!("{}_70", uds.display())).expect("bind");
    let mut vm = boot(
        &format!("squibtest=vsock-throughput squibtest.port=70 squibtest.mib={MIB}"),
        &uds,
    );
    let (mut s, _) = listener.accept().expect("guest connection");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut got = vec![0u8; MIB << 20];
    s.read_exact(&mut got).expect("guest->host bytes");
    let bad = got
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern(i as u64, 1));
    assert_eq!(bad, None, "guest->host pattern mismatch");
    s.write_all(b"g").expect("ack");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("ready byte");
    assert_eq!(&b, b"r");
    let page: Vec<u8> = (0..4096u64).map(|i| pattern(i, 2)).collect();
    for _ in 0..(MIB << 20) / 4096 {
        s.write_all(&page).expect("host->guest bytes");
    }
    s.read_exact(&mut b).expect("ack byte");
    assert_eq!(&b, b"h");
    wait_exit(&mut vm);
    let out = vm.console();
    assert!(
        out.contains(&format!("TEST ok vsock-throughput bytes={}", MIB << 20)),
        "{out}"
    );
}
