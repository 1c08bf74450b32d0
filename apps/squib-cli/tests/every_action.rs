//! Every API action against the real VMM (the `squib` binary, not the API's stub): each one is
//! either executed (204/200) or refused with an explicit 400 naming what is not built — never
//! accepted and ignored. The VMM's `match` over `ApiAction` has no catch-all, so a new variant
//! cannot compile without a decision; this test checks the decisions on the wire, before and
//! after boot.

mod common;

use common::{Squib, kvm_or_skip, random_file, test_guest, tmp_path};
use serde_json::json;

const UNSUPPORTED: &str = "is not supported by this squib build yet.";

/// What the VMM must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// 2xx.
    Done,
    /// 400 with the "not supported by this squib build yet" text.
    Refused,
    /// 400 with this text in the fault message.
    Fault(&'static str),
    /// Implemented: 2xx, or a 400 from the device's own rules (never the "not supported" text).
    Implemented,
}

fn check(vm: &Squib, method: &str, path: &str, body: Option<&str>, want: Want) {
    let (status, text) = vm.api(method, path, body);
    eprintln!("{method} {path} -> {status} {text}");
    match want {
        Want::Done => assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        ),
        Want::Refused => {
            assert_eq!(status, 400, "{method} {path}: {text}");
            assert!(text.contains(UNSUPPORTED), "{method} {path}: {text}");
        }
        Want::Implemented => assert!(
            (200..300).contains(&status) || (status == 400 && !text.contains(UNSUPPORTED)),
            "{method} {path}: {status} {text}"
        ),
        Want::Fault(t) => {
            assert_eq!(status, 400, "{method} {path}: {text}");
            assert!(
                text.contains(t),
                "{method} {path}: expected `{t}` in {text}"
            );
        }
    }
}

#[test]
fn test_every_action_is_executed_or_explicitly_refused() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("api.sock");
    let vm = Squib::spawn(&[], Some(&socket));
    let disk = random_file("every-action.img", 1 << 20, 3);
    let vsock = tmp_path("v.sock");
    let pmem = random_file("every-action.pmem", 2 << 20, 5);
    let pmem_body = json!({"id": "p", "path_on_host": pmem}).to_string();
    let kernel = json!({"kernel_image_path": test_guest(), "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=counter squibtest.tick_shift=20"}).to_string();
    let drive = json!({"drive_id": "d", "path_on_host": disk, "is_root_device": false, "is_read_only": true}).to_string();
    let vsock_body = json!({"guest_cid": 3, "uds_path": vsock}).to_string();
    let pre: Vec<(&str, &str, Option<String>, Want)> = vec![
        (
            "PUT",
            "/logger",
            Some(r#"{"level":"Info"}"#.into()),
            Want::Done,
        ),
        (
            "PUT",
            "/metrics",
            Some(r#"{"metrics_path":"/tmp/squib-every-action.metrics"}"#.into()),
            Want::Done,
        ),
        (
            "PUT",
            "/cpu-config",
            Some(r#"{"kvm_capabilities":["!56"]}"#.into()),
            Want::Done,
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":64}"#.into()),
            Want::Done,
        ),
        (
            "PATCH",
            "/machine-config",
            Some(r#"{"mem_size_mib":96}"#.into()),
            Want::Done,
        ),
        ("PUT", "/boot-source", Some(kernel), Want::Done),
        ("PUT", "/drives/d", Some(drive), Want::Done),
        ("PUT", "/vsock", Some(vsock_body), Want::Done),
        ("PUT", "/entropy", Some("{}".into()), Want::Done),
        (
            "PUT",
            "/serial",
            Some(r#"{"serial_out_path":"/dev/null"}"#.into()),
            Want::Done,
        ),
        (
            "PUT",
            "/mmds",
            Some(r#"{"latest":{"meta-data":{"id":"x"}}}"#.into()),
            Want::Done,
        ),
        (
            "PATCH",
            "/mmds",
            Some(r#"{"latest":{"meta-data":{"id":"y"}}}"#.into()),
            Want::Done,
        ),
        (
            "PUT",
            "/balloon",
            Some(r#"{"amount_mib":0,"deflate_on_oom":false}"#.into()),
            Want::Implemented,
        ),
        ("PUT", "/pmem/p", Some(pmem_body), Want::Implemented),
        (
            "PUT",
            "/hotplug/memory",
            Some(r#"{"total_size_mib":1024}"#.into()),
            Want::Implemented,
        ),
        (
            "PUT",
            "/snapshot/create",
            Some(r#"{"snapshot_path":"/tmp/s","mem_file_path":"/tmp/m"}"#.into()),
            Want::Fault("not supported before starting"),
        ),
        (
            "PATCH",
            "/vm",
            Some(r#"{"state":"Paused"}"#.into()),
            Want::Fault("not supported before starting"),
        ),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"FlushMetrics"}"#.into()),
            Want::Fault("not supported before starting"),
        ),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#.into()),
            Want::Done,
        ),
    ];
    for (m, p, b, w) in &pre {
        check(&vm, m, p, b.as_deref(), *w);
    }
    let post: Vec<(&str, &str, Option<String>, Want)> = vec![
        (
            "PATCH",
            "/drives/d",
            Some(
                r#"{"drive_id":"d","rate_limiter":{"ops":{"size":100,"refill_time":100}}}"#.into(),
            ),
            Want::Done,
        ),
        ("DELETE", "/drives/d", None, Want::Refused),
        (
            "PATCH",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0"}"#.into()),
            Want::Fault("eth0"),
        ),
        ("DELETE", "/network-interfaces/eth0", None, Want::Refused),
        (
            "PATCH",
            "/pmem/p",
            Some(r#"{"id":"p","rate_limiter":{"bandwidth":{"size":1,"refill_time":1}}}"#.into()),
            Want::Implemented,
        ),
        ("DELETE", "/pmem/p", None, Want::Implemented),
        (
            "PATCH",
            "/balloon",
            Some(r#"{"amount_mib":1}"#.into()),
            Want::Implemented,
        ),
        (
            "PATCH",
            "/balloon/statistics",
            Some(r#"{"stats_polling_interval_s":2}"#.into()),
            Want::Implemented,
        ),
        (
            "PATCH",
            "/balloon/hinting/start",
            Some("{}".into()),
            Want::Implemented,
        ),
        ("PATCH", "/balloon/hinting/stop", None, Want::Implemented),
        (
            "PATCH",
            "/hotplug/memory",
            Some(r#"{"requested_size_mib":0}"#.into()),
            Want::Implemented,
        ),
        ("PUT", "/mmds", Some(r#"{"a":1}"#.into()), Want::Done),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"FlushMetrics"}"#.into()),
            Want::Done,
        ),
        (
            "PATCH",
            "/vm",
            Some(r#"{"state":"Paused"}"#.into()),
            Want::Done,
        ),
        (
            "PATCH",
            "/vm",
            Some(r#"{"state":"Resumed"}"#.into()),
            Want::Done,
        ),
        (
            "PUT",
            "/snapshot/load",
            Some(r#"{"snapshot_path":"/tmp/s","mem_file_path":"/tmp/m"}"#.into()),
            Want::Fault("not supported after starting"),
        ),
        (
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path":"/k"}"#.into()),
            Want::Fault("not supported after starting"),
        ),
    ];
    for (m, p, b, w) in &post {
        check(&vm, m, p, b.as_deref(), *w);
    }
    let _ = std::fs::remove_file(&vsock);
}
