//! End-to-end: virtio-net and MMDS through the `squib` binary, driven by the test guest's own
//! virtio-net driver and its ARP/IPv4/TCP/HTTP client (`guest/src/virtio_net.c`,
//! `guest/src/scenarios/{net_tx,net_echo,mmds}.c`).
//!
//! Each test runs in a private network namespace (see `common/net.rs`): squib is spawned from a
//! thread that unshared a new one, so the tap it creates at `PUT /network-interfaces`, the test's
//! `AF_PACKET` socket on it and everything sent stay there and vanish with it. Needs /dev/kvm
//! (except the API error test), /dev/net/tun and `CAP_SYS_ADMIN`; otherwise one `SKIPPED:` line.

mod common;
#[path = "common/net.rs"]
mod net;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Squib, api_request, kvm_or_skip, reference_firecracker_path, test_guest, tmp_path, wait_for,
};
use net::{
    GUEST_MAC, HOST_MAC, TAP, api_ok, configure_guest, host_socket, iface, in_netns, mac_str,
    net_tx_size, recv_frame, start, test_frame, tun_or_skip,
};
use serde_json::{Value, json};

const EXIT_LIMIT: Duration = Duration::from_secs(180);

/// A squib with the test guest configured to run `scenario` and one interface `eth0` on `TAP`.
fn net_vm(scenario: &str, args: &str) -> (Squib, PathBuf) {
    let socket = tmp_path("net.sock");
    let vm = Squib::spawn(&[], Some(&socket));
    configure_guest(&socket, &test_guest(), scenario, args);
    api_ok(
        &socket,
        "PUT",
        "/network-interfaces/eth0",
        &iface("eth0", TAP, &GUEST_MAC),
    );
    (vm, socket)
}

fn finish(mut vm: Squib, ok_line: &str) -> String {
    let code = vm.wait(EXIT_LIMIT);
    let out = vm.output();
    assert_eq!(code, Some(0), "squib did not exit 0:\n{out}");
    assert!(out.contains(ok_line), "no `{ok_line}`:\n{out}");
    assert!(!out.contains("TEST fail"), "{out}");
    out
}

fn skip_unless_ready() -> bool {
    kvm_or_skip() && tun_or_skip()
}

#[test]
fn test_guest_frames_reach_the_host_byte_exact() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net guest->host", || {
        const FRAMES: u32 = 16;
        let (vm, socket) = net_vm(
            "net-tx",
            &format!(
                "squibtest.frames={FRAMES} squibtest.dst={}",
                mac_str(&HOST_MAC)
            ),
        );
        let sock = host_socket(TAP);
        start(&socket);
        for seq in 0..FRAMES {
            let got = recv_frame(&sock, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("frame {seq}: {e}\n{}", vm.output()));
            let want = test_frame(&HOST_MAC, &GUEST_MAC, b'X', seq, net_tx_size(seq));
            assert_eq!(got.len(), want.len(), "frame {seq} length");
            assert!(got == want, "frame {seq} differs:\n{got:02x?}\n{want:02x?}");
        }
        let total: usize = (0..FRAMES).map(net_tx_size).sum();
        finish(vm, &format!("TEST ok net-tx frames={FRAMES} bytes={total}"));
    });
}

#[test]
fn test_host_frames_are_echoed_by_the_guest() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net host->guest", || {
        const FRAMES: u32 = 8;
        let (vm, socket) = net_vm("net-echo", &format!("squibtest.frames={FRAMES}"));
        let sock = host_socket(TAP);
        start(&socket);
        assert!(
            wait_for(Duration::from_secs(60), || vm
                .output()
                .contains("NET-READY")
                .then_some(()))
            .is_some(),
            "{}",
            vm.output()
        );
        let mut bytes = 0;
        for seq in 0..FRAMES {
            let len = [60, 64, 128, 500, 1000, 1499, 1514, 61][seq as usize % 8];
            let sent = test_frame(&GUEST_MAC, &HOST_MAC, b'E', seq, len);
            sock.send(&sent).expect("send");
            let got = recv_frame(&sock, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("echo {seq}: {e}\n{}", vm.output()));
            let want = test_frame(&HOST_MAC, &GUEST_MAC, b'E', seq, len);
            assert!(got == want, "echo {seq} differs:\n{got:02x?}\n{want:02x?}");
            bytes += len;
        }
        finish(
            vm,
            &format!("TEST ok net-echo frames={FRAMES} bytes={bytes}"),
        );
    });
}

fn mmds_doc() -> Value {
    json!({"latest": {"meta-data": {
        "ami-id": "ami-12345678",
        "instance": {"type": "t-small", "zone": "eu-1a"}
    }}})
}

/// Boots the `mmds` scenario with MMDS `version` on eth0 and the document above.
fn mmds_run(version: &str, args: &str) -> String {
    let (vm, socket) = net_vm("mmds", args);
    api_ok(
        &socket,
        "PUT",
        "/mmds/config",
        &json!({"version": version, "network_interfaces": ["eth0"]}),
    );
    api_ok(&socket, "PUT", "/mmds", &mmds_doc());
    // MMDS frames never reach the tap; nothing listens there.
    net::ip(&["link", "set", TAP, "up"]);
    start(&socket);
    let mut vm = vm;
    let code = vm.wait(EXIT_LIMIT);
    let out = vm.output();
    assert_eq!(code, Some(0), "{out}");
    out
}

#[test]
fn test_mmds_v2_token_put_then_get_returns_the_document_value() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net mmds v2", || {
        let out = mmds_run(
            "V2",
            "squibtest.mmds_version=2 squibtest.mmds_path=/latest/meta-data/ami-id",
        );
        // 14 + 28 bytes: Firecracker's dumbo writes the ARP reply unpadded (its
        // `write_arp_reply`: Ethernet header + `ETH_IPV4_FRAME_LEN`); the bench compares the
        // length with the reference binary's.
        assert!(
            out.contains("TEST info mmds arp mac=06:01:23:45:67:01 len=42\n"),
            "{out}"
        );
        let token = net::field(&out, "TEST info mmds token=", "token").expect("token line");
        assert_eq!(token.len(), 44, "a V2 token: {token}");
        assert!(
            out.contains("TEST ok mmds status=200 body=ami-12345678\n"),
            "{out}"
        );
    });
}

#[test]
fn test_mmds_v2_get_without_token_is_401() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net mmds 401", || {
        let out = mmds_run(
            "V2",
            "squibtest.mmds_version=2 squibtest.mmds_token=0 squibtest.mmds_path=/latest/meta-data/ami-id",
        );
        assert!(
            out.contains(
                "TEST ok mmds status=401 body=No MMDS token provided. Use `X-metadata-token` or \
                 `X-aws-ec2-metadata-token` header to specify the session token.\n"
            ),
            "{out}"
        );
    });
}

#[test]
fn test_mmds_v1_plain_get_returns_the_json_subtree() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net mmds v1", || {
        let out = mmds_run(
            "V1",
            "squibtest.mmds_version=1 squibtest.mmds_json=1 squibtest.mmds_path=/latest/meta-data/instance",
        );
        assert!(
            !out.contains("TEST info mmds token="),
            "V1 asks for no token:\n{out}"
        );
        let body = out
            .lines()
            .find_map(|l| l.strip_prefix("TEST ok mmds status=200 body="))
            .unwrap_or_else(|| panic!("{out}"));
        let got: Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(got, mmds_doc()["latest"]["meta-data"]["instance"]);
    });
}

/// Sends `n` frames of `len` bytes at once and returns the seconds from the first echo to the
/// last (each echo checked byte for byte).
fn echo_burst(
    sock: &squib_sys::netns::PacketSocket,
    vm: &Squib,
    first_seq: u32,
    n: u32,
    len: usize,
) -> f64 {
    for seq in first_seq..first_seq + n {
        sock.send(&test_frame(&GUEST_MAC, &HOST_MAC, b'L', seq, len))
            .expect("send");
    }
    let mut first = None;
    let mut last = Instant::now();
    for seq in first_seq..first_seq + n {
        let got = recv_frame(sock, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("echo {seq}: {e}\n{}", vm.output()));
        assert!(
            got == test_frame(&HOST_MAC, &GUEST_MAC, b'L', seq, len),
            "echo {seq} differs"
        );
        last = Instant::now();
        first.get_or_insert(last);
    }
    (last - first.unwrap_or(last)).as_secs_f64()
}

#[test]
fn test_patch_network_interface_rate_limiters_after_boot_throttle_traffic() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net rate limiter", || {
        const N: u32 = 10;
        let (vm, socket) = net_vm("net-echo", &format!("squibtest.frames={}", 3 * N));
        let sock = host_socket(TAP);
        start(&socket);
        assert!(
            wait_for(Duration::from_secs(60), || vm
                .output()
                .contains("NET-READY")
                .then_some(()))
            .is_some(),
            "{}",
            vm.output()
        );
        let free = echo_burst(&sock, &vm, 0, N, 1000);
        // TX: one frame per 100 ms (ops bucket of 1).
        api_ok(
            &socket,
            "PATCH",
            "/network-interfaces/eth0",
            &json!({"iface_id": "eth0", "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 100}}}),
        );
        let tx_limited = echo_burst(&sock, &vm, N, N, 1000);
        // Lift the TX limit (size 0 disables a bucket) and limit RX to 1100 bytes per 100 ms:
        // one 1000-byte frame (+ 12-byte header) per 100 ms.
        api_ok(
            &socket,
            "PATCH",
            "/network-interfaces/eth0",
            &json!({"iface_id": "eth0",
                    "tx_rate_limiter": {"ops": {"size": 0, "refill_time": 100}},
                    "rx_rate_limiter": {"bandwidth": {"size": 1100, "refill_time": 100}}}),
        );
        let rx_limited = echo_burst(&sock, &vm, 2 * N, N, 1000);
        let rate = |secs: f64| f64::from(N - 1) / secs;
        println!(
            "echo rates (frames/s): unlimited {:.1}, tx ops 10/s {:.1}, rx 11 KB/s {:.1}",
            rate(free),
            rate(tx_limited),
            rate(rx_limited)
        );
        // 9 intervals of 100 ms each, minus scheduling slack.
        assert!(
            tx_limited >= 0.8,
            "TX limiter not applied: {tx_limited:.3}s\n{}",
            vm.output()
        );
        assert!(
            rx_limited >= 0.8,
            "RX limiter not applied: {rx_limited:.3}s\n{}",
            vm.output()
        );
        assert!(rate(tx_limited) <= 11.5 && rate(rx_limited) <= 11.5);
        assert!(
            free < tx_limited && free < rx_limited,
            "unlimited {free:.3}s"
        );
        let (_, cfg) = api_request(&socket, "GET", "/vm/config", None);
        assert!(cfg.contains(r#""refill_time":100"#), "{cfg}");
        finish(vm, &format!("TEST ok net-echo frames={}", 3 * N));
    });
}

/// Spawns `program` (squib or Firecracker, optionally under `setpriv` without `CAP_NET_ADMIN`)
/// with an API socket.
fn spawn_vmm(program: &Path, no_net_admin: bool) -> Squib {
    let mut cmd = if no_net_admin {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--inh-caps=-net_admin", "--bounding-set=-net_admin"])
            .arg(program);
        c
    } else {
        std::process::Command::new(program)
    };
    if program.ends_with("firecracker") {
        cmd.arg("--no-seccomp");
    }
    let socket = tmp_path("neterr.sock");
    Squib::spawn_command(cmd, Some(&socket), std::process::Stdio::null())
}

/// The answers to the tap/MAC error cases, as (status, body) per request.
fn tap_error_answers(program: &Path) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    let vm = spawn_vmm(program, false);
    let busy = squib_sys::tap::Tap::open_named("sqbusy0").expect("hold a tap");
    let put = |id: &str, body: Value| {
        vm.api(
            "PUT",
            &format!("/network-interfaces/{id}"),
            Some(&body.to_string()),
        )
    };
    // A tap another process holds.
    answers.push(put("eth0", iface("eth0", "sqbusy0", &GUEST_MAC)));
    // A tap that does not exist: created (we are root in this namespace), like Firecracker.
    answers.push(put("eth1", iface("eth1", "sqnew0", &GUEST_MAC)));
    assert!(
        squib_sys::netns::if_index("sqnew0").is_ok(),
        "{} did not create the tap",
        program.display()
    );
    // The same MAC on another interface.
    answers.push(put("eth2", iface("eth2", "sqnew1", &GUEST_MAC)));
    // A tap name over 15 bytes (16 here).
    answers.push(put("eth3", iface("eth3", "sq34567890123456", &HOST_MAC)));
    // An interface without `mtu`, then the configuration as GET /vm/config shows it.
    answers.push(put(
        "eth4",
        json!({"iface_id": "eth4", "host_dev_name": "sqnew4"}),
    ));
    let (status, cfg) = vm.api("GET", "/vm/config", None);
    let ifaces = serde_json::from_str::<Value>(&cfg)
        .map_or(Value::Null, |c| c["network-interfaces"].clone());
    answers.push((status, ifaces.to_string()));
    drop(vm);
    drop(busy);
    // Without CAP_NET_ADMIN a missing tap cannot be created.
    if Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists() {
        let vm = spawn_vmm(program, true);
        answers.push(vm.api(
            "PUT",
            "/network-interfaces/eth0",
            Some(&iface("eth0", "sqmissing0", &GUEST_MAC).to_string()),
        ));
    } else {
        println!("SKIPPED: no setpriv: the missing-tap-without-CAP_NET_ADMIN case");
    }
    answers
}

#[test]
fn test_put_network_interface_errors_are_firecrackers() {
    if !tun_or_skip() {
        return;
    }
    in_netns("boot_net API errors", || {
        let squib = PathBuf::from(env!("CARGO_BIN_EXE_squib"));
        let got = tap_error_answers(&squib);
        let msg = |s: &str| json!({ "fault_message": s }).to_string();
        let tap_err = |errno: &str, tap: &str| {
            format!(
                "Network config error: Could not create the network device: Open tap device failed: \
                 Error while creating ifreq structure: {errno}. Invalid TUN/TAP Backend provided by \
                 {tap}. Check our documentation on setting up the network devices."
            )
        };
        assert_eq!(
            got[0],
            (
                400,
                msg(&tap_err("Device or resource busy (os error 16)", "sqbusy0"))
            )
        );
        assert_eq!(got[1], (204, String::new()));
        assert_eq!(
            got[2],
            (
                400,
                msg("Network config error: The MAC address is already in use: 02:00:00:00:00:01")
            )
        );
        assert_eq!(
            got[3],
            (
                400,
                msg(
                    "Network config error: Could not create the network device: Open tap \
                     device failed: Invalid interface name"
                )
            )
        );
        assert_eq!(got[4], (204, String::new()));
        let ifaces: Value = serde_json::from_str(&got[5].1).expect("network-interfaces");
        assert_eq!(
            ifaces[0],
            json!({"iface_id": "eth1", "host_dev_name": "sqnew0", "guest_mac": mac_str(&GUEST_MAC),
                   "mtu": null, "rx_rate_limiter": null, "tx_rate_limiter": null}),
            "{ifaces}"
        );
        assert_eq!(
            ifaces[1],
            json!({"iface_id": "eth4", "host_dev_name": "sqnew4", "guest_mac": null,
                   "mtu": null, "rx_rate_limiter": null, "tx_rate_limiter": null}),
            "{ifaces}"
        );
        assert!(
            got[5].1.contains(r#""mtu":null"#),
            "GET /vm/config must show \"mtu\":null like Firecracker: {}",
            got[5].1
        );
        if let Some(missing) = got.get(6) {
            assert_eq!(
                *missing,
                (
                    400,
                    msg(&tap_err(
                        "Operation not permitted (os error 1)",
                        "sqmissing0"
                    ))
                )
            );
        }
        // The same requests against the reference Firecracker give the same answers.
        match reference_firecracker_path() {
            Some(fc) => {
                let normalize = |v: &[(u16, String)]| {
                    v.iter()
                        .map(|(s, b)| (*s, serde_json::from_str::<Value>(b).unwrap_or(Value::Null)))
                        .collect::<Vec<_>>()
                };
                assert_eq!(normalize(&tap_error_answers(&fc)), normalize(&got));
            }
            None => println!("SKIPPED: no reference firecracker (differential part)"),
        }
    });
}

/// Net + MMDS V2 survive a snapshot restored onto another tap (`network_overrides`): host
/// frames reach the restored guest and its echo comes back on the new tap, and the V2 token
/// the guest got before the snapshot still opens MMDS afterwards.
#[test]
fn test_snapshot_with_net_and_mmds_restores_on_another_tap() {
    if !skip_unless_ready() {
        return;
    }
    in_netns("boot_net snapshot", || {
        let serial1 = tmp_path("net-serial1.log");
        let (vm1, sock1) = net_vm(
            "mmds",
            "squibtest.mmds_hold=1 squibtest.mmds_ttl=21600 squibtest.timeout_ms=60000 \
             squibtest.mmds_path=/latest/meta-data/ami-id",
        );
        api_ok(
            &sock1,
            "PUT",
            "/serial",
            &json!({"serial_out_path": serial1}),
        );
        api_ok(
            &sock1,
            "PUT",
            "/mmds/config",
            &json!({"version": "V2", "network_interfaces": ["eth0"]}),
        );
        api_ok(&sock1, "PUT", "/mmds", &mmds_doc());
        net::ip(&["link", "set", TAP, "up"]);
        start(&sock1);
        let read1 = || std::fs::read_to_string(&serial1).unwrap_or_default();
        assert!(
            net::wait_text(Duration::from_secs(120), read1, "MMDS-HOLD").is_some(),
            "{}\n{}",
            read1(),
            vm1.output()
        );
        let before = read1();
        let token = net::field(&before, "TEST info mmds token=", "token").expect("token");
        assert!(
            before.contains("req=GET status=200 len=12 body=ami-12345678"),
            "{before}"
        );
        api_ok(&sock1, "PATCH", "/vm", &json!({"state": "Paused"}));
        let (state, mem) = (tmp_path("net.state"), tmp_path("net.mem"));
        api_ok(
            &sock1,
            "PUT",
            "/snapshot/create",
            &json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem}),
        );
        drop(vm1);

        let serial2 = tmp_path("net-serial2.log");
        let sock2 = tmp_path("net2.sock");
        let vm2 = Squib::spawn(&[], Some(&sock2));
        api_ok(
            &sock2,
            "PUT",
            "/serial",
            &json!({"serial_out_path": serial2}),
        );
        api_ok(
            &sock2,
            "PUT",
            "/snapshot/load",
            &json!({
                "snapshot_path": state,
                "mem_backend": {"backend_type": "File", "backend_path": mem},
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "sqtap1"}],
                "resume_vm": true,
            }),
        );
        // The data store is not part of a snapshot (Firecracker): put it back.
        api_ok(&sock2, "PUT", "/mmds", &mmds_doc());
        let host = host_socket("sqtap1");
        let trigger = test_frame(&GUEST_MAC, &HOST_MAC, b'S', 7, 100);
        host.send(&trigger).expect("send");
        let echo = recv_frame(&host, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no echo on the new tap: {e}\n{}", vm2.output()));
        assert!(echo == test_frame(&HOST_MAC, &GUEST_MAC, b'S', 7, 100));
        let read2 = || std::fs::read_to_string(&serial2).unwrap_or_default();
        assert!(
            net::wait_text(Duration::from_secs(120), read2, "SQUIBTEST END mmds").is_some(),
            "{}\n{}",
            read2(),
            vm2.output()
        );
        let after = read2();
        assert!(
            after.contains("TEST info mmds hold-released len=100"),
            "{after}"
        );
        assert!(
            after.contains("TEST ok mmds status=200 body=ami-12345678\n"),
            "the pre-snapshot token {token} did not work after the restore:\n{after}"
        );
        assert!(
            !after.contains("SQUIBTEST BEGIN"),
            "the guest rebooted:\n{after}"
        );
        let mut vm2 = vm2;
        assert_eq!(vm2.wait(EXIT_LIMIT), Some(0), "{}", vm2.output());
        for p in [&state, &mem, &serial1, &serial2] {
            let _ = std::fs::remove_file(p);
        }
    });
}
