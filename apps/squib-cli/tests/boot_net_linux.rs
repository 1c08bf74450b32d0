//! End-to-end: the Linux guest (`../shared/guest`, `squib.mode=shell`) on a squib virtio-net
//! device backed by a tap, with MMDS V2 on the same interface.
//!
//! One boot: the kernel configures `eth0` from its `ip=` argument; commands typed on the
//! console then ping the tap's host end, fetch an MMDS V2 session token with busybox `nc`
//! (`PUT /latest/api/token` with `X-metadata-token-ttl-seconds`), GET a value with
//! `X-metadata-token` (the body is printed on the console), and check that a V2 GET without a
//! token answers 401.
//!
//! Isolation (see `common/net.rs`): the test body runs on a thread that unshared a new network
//! namespace; squib is spawned from it, so its tap, the host address and the guest's traffic
//! exist only there and vanish with the VMM and the thread.
//!
//! Slow (a Linux boot: 1–3 minutes on nested-PVM hosts). Needs /dev/kvm, /dev/net/tun,
//! `CAP_SYS_ADMIN` (for the namespace) and the guest assets; otherwise one `SKIPPED:` line.

mod common;
#[path = "common/net.rs"]
mod net;

use std::time::Duration;

use common::linux::{Guest, cmdline};
use common::{kvm_or_skip, linux_guest_dir, tmp_path};
use net::{GUEST_MAC, TAP, api_ok, iface, in_netns, ip, tun_or_skip};
use serde_json::json;

const BOOT_LIMIT: Duration = Duration::from_secs(420);
const COMMAND_LIMIT: Duration = Duration::from_secs(90);
const HOST_IP: &str = "172.16.0.1";
const GUEST_IP: &str = "172.16.0.2";
const MMDS_IP: &str = "169.254.169.254";

/// Types `command` on the console and waits for a line holding `want` after it; returns the
/// whole output.
fn run(g: &mut Guest, command: &str, want: &str) -> String {
    g.run(command, want, COMMAND_LIMIT);
    g.vm.output()
}

/// A shell pipeline sending the HTTP request `head` (CRLFs as `\r\n` escapes for `printf`) to
/// MMDS with busybox `nc`; nc half-closes after the request and exits when MMDS closes.
fn mmds_nc(head: &str) -> String {
    format!("printf '{head}' | timeout 20 nc {MMDS_IP} 80")
}

#[test]
fn test_linux_guest_pings_the_host_and_reads_mmds_v2_over_virtio_net() {
    if !kvm_or_skip() || !tun_or_skip() {
        return;
    }
    let Some(dir) = linux_guest_dir() else { return };
    in_netns("boot_net_linux", move || {
        let socket = tmp_path("net-linux.sock");
        let mut g = Guest::spawn_api(&socket);
        api_ok(
            &socket,
            "PUT",
            "/machine-config",
            &json!({"vcpu_count": 1, "mem_size_mib": 256}),
        );
        let boot_args = cmdline(&format!(
            " squib.mode=shell ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off"
        ));
        api_ok(
            &socket,
            "PUT",
            "/boot-source",
            &json!({
                "kernel_image_path": dir.join("vmlinux"),
                "initrd_path": dir.join("initramfs.cpio"),
                "boot_args": boot_args,
            }),
        );
        api_ok(
            &socket,
            "PUT",
            "/network-interfaces/eth0",
            &iface("eth0", TAP, &GUEST_MAC),
        );
        api_ok(
            &socket,
            "PUT",
            "/mmds/config",
            &json!({"version": "V2", "network_interfaces": ["eth0"]}),
        );
        api_ok(
            &socket,
            "PUT",
            "/mmds",
            &json!({"latest": {"meta-data": {"ami-id": "ami-12345678"}}}),
        );
        // The tap exists since PUT /network-interfaces: give it the host address.
        ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP]);
        ip(&["link", "set", TAP, "up"]);
        api_ok(
            &socket,
            "PUT",
            "/actions",
            &json!({"action_type": "InstanceStart"}),
        );
        g.wait_shell_marker(BOOT_LIMIT);
        let out = g.vm.output();
        assert!(
            out.contains(&format!("SQUIB-NET eth0 mac={}", net::mac_str(&GUEST_MAC))),
            "{out}"
        );
        // Markers are computed by the shell so that the echoed command line never matches.
        run(
            &mut g,
            &format!("ping -c 3 -W 5 {HOST_IP} >/dev/null && echo PING-OK-$((40+2))"),
            "PING-OK-42",
        );
        run(
            &mut g,
            &format!("ip route add {MMDS_IP} dev eth0 && echo ROUTE-OK-$((40+3))"),
            "ROUTE-OK-43",
        );
        let put = mmds_nc(
            "PUT /latest/api/token HTTP/1.1\\r\\nX-metadata-token-ttl-seconds: 60\\r\\n\\r\\n",
        );
        run(
            &mut g,
            &format!("T=$({put} | tail -n 1); echo TOKEN-LEN-$((0+1))=${{#T}}."),
            "TOKEN-LEN-1=",
        );
        let get =
            mmds_nc("GET /latest/meta-data/ami-id HTTP/1.1\\r\\nX-metadata-token: %s\\r\\n\\r\\n")
                .replacen("' |", "' \"$T\" |", 1);
        let out = run(
            &mut g,
            &format!("echo MMDS-BODY=$({get} | tail -n 1)"),
            "MMDS-BODY=ami-",
        );
        assert!(out.contains("TOKEN-LEN-1=44."), "a V2 token:\n{out}");
        assert!(out.contains("MMDS-BODY=ami-12345678"), "{out}");
        let no_token = mmds_nc("GET /latest/meta-data/ami-id HTTP/1.1\\r\\n\\r\\n");
        let out = run(
            &mut g,
            &format!("echo NO-TOKEN-STATUS=$({no_token} | head -n 1 | cut -d' ' -f2)"),
            "NO-TOKEN-STATUS=4",
        );
        assert!(out.contains("NO-TOKEN-STATUS=401"), "{out}");
        g.reboot(Duration::from_secs(120));
    });
}
