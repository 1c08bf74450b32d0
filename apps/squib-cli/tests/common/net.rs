//! Host side of the network end-to-end tests and the `net` bench: a private network namespace,
//! the tap's host end (an `AF_PACKET` socket), the test guest's frame layout, and helpers to
//! configure and boot a microVM with a virtio-net device through the API.
//!
//! Isolation: every test runs its body on a thread that first unshares a new, empty network
//! namespace ([`squib_sys::netns::in_new_netns`]) and spawns the VMM from that thread, so the VMM
//! process lives in the namespace too: the tap it opens (created by name, non-persistent), the
//! socket the test binds and any address the test sets exist only there, and the kernel destroys
//! all of it when the VMM exits and the thread ends. No frame can reach another interface.
//!
//! Included with `#[path]` by `boot_net.rs` and `benches/net.rs` (next to `common/mod.rs`).

#![allow(clippy::trivially_copy_pass_by_ref)] // MACs are passed as they are stored
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use squib_sys::netns::{self, PacketSocket};

/// The test guest's EtherType for test frames (IEEE local experimental).
pub const ETHERTYPE_TEST: u16 = 0x88b5;
/// The MAC the tests give the guest.
pub const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The MAC the host side sends from.
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The TAP name used inside the private namespace.
pub const TAP: &str = "sqtap0";

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `f` in a fresh network namespace (see the module docs); `false` (after one
/// `SKIPPED:` line) if the host cannot create one.
pub fn in_netns<F: FnOnce() + Send + 'static>(what: &str, f: F) -> bool {
    netns::in_new_netns(what, f)
}

/// `/dev/net/tun` usable (a container may lack it).
pub fn tun_or_skip() -> bool {
    if Path::new("/dev/net/tun").exists() {
        return true;
    }
    println!("SKIPPED: no /dev/net/tun");
    false
}

/// The test guest's frame (guest/src/virtio_net.h): dst, src, 0x88B5, tag, seq (BE), then
/// byte k = k * 7 + seq * 13 + tag.
pub fn test_frame(dst: &[u8; 6], src: &[u8; 6], tag: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(19)];
    f[..6].copy_from_slice(dst);
    f[6..12].copy_from_slice(src);
    f[12..14].copy_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    f[14] = tag;
    f[15..19].copy_from_slice(&seq.to_be_bytes());
    let seq_term = seq.wrapping_mul(13);
    for (k, b) in f.iter_mut().enumerate().skip(19) {
        let k = u32::try_from(k).unwrap_or(0);
        *b = (k
            .wrapping_mul(7)
            .wrapping_add(seq_term)
            .wrapping_add(u32::from(tag))
            & 0xff)
            .to_le_bytes()[0];
    }
    f.truncate(len);
    f
}

/// `net-tx`'s frame size for `seq` when `squibtest.frame_size` is 0.
pub fn net_tx_size(seq: u32) -> usize {
    60 + usize::try_from(seq.wrapping_mul(367) % 1455).unwrap_or(0)
}

/// Brings the tap up and binds a test-frame socket to it (the tap must exist: the VMM creates
/// it at `PUT /network-interfaces` or at snapshot load).
pub fn host_socket(tap: &str) -> PacketSocket {
    let start = Instant::now();
    loop {
        match netns::set_link_up(tap) {
            Ok(()) => break,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("tap {tap} never appeared: {e}"),
        }
    }
    PacketSocket::bind(tap, ETHERTYPE_TEST).expect("bind AF_PACKET to the tap")
}

/// Receives the next test frame (skipping anything else), waiting at most `limit`.
pub fn recv_frame(sock: &PacketSocket, limit: Duration) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        let n = sock.recv(&mut buf, ms)?;
        if n >= 14 && buf[12..14] == ETHERTYPE_TEST.to_be_bytes() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// `PUT`/`PATCH` that must answer 204.
pub fn api_ok(socket: &Path, method: &str, path: &str, body: &Value) {
    let (s, b) = crate::common::api_request(socket, method, path, Some(&body.to_string()));
    assert_eq!(s, 204, "{method} {path} {body}: {b}");
}

/// The network interface body the tests use.
pub fn iface(id: &str, tap: &str, mac: &[u8; 6]) -> Value {
    json!({"iface_id": id, "host_dev_name": tap, "guest_mac": mac_str(mac)})
}

/// Machine config + boot source for the test guest running `scenario` with `args`.
pub fn configure_guest(socket: &Path, guest: &Path, scenario: &str, args: &str) {
    api_ok(
        socket,
        "PUT",
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    api_ok(
        socket,
        "PUT",
        "/boot-source",
        &json!({
            "kernel_image_path": guest,
            "boot_args": format!("console=ttyS0 reboot=k panic=1 squibtest={scenario} {args}"),
        }),
    );
}

/// `InstanceStart`.
pub fn start(socket: &Path) {
    api_ok(
        socket,
        "PUT",
        "/actions",
        &json!({"action_type": "InstanceStart"}),
    );
}

/// The host's TSC rate in kHz (the test guest cannot read it from CPUID on kvm_pvm), from
/// the kernel's `tsc: Detected ... MHz` or `/proc/cpuinfo`; 0 if unknown.
pub fn host_tsc_khz() -> u64 {
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let khz = (mhz * 1000.0).round();
    if khz.is_finite() && khz > 0.0 && khz < 1e9 {
        format!("{khz:.0}").parse().unwrap_or(0)
    } else {
        0
    }
}

/// Runs `ip` with `args` in the calling thread's namespace; panics on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `text()` until it contains `needle`; the elapsed time, or `None` after `limit`.
pub fn wait_text(
    limit: Duration,
    mut text: impl FnMut() -> String,
    needle: &str,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if text().contains(needle) {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The value of `key=` on the first line containing `prefix`.
pub fn field(text: &str, prefix: &str, key: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains(prefix))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}
