//! Table-driven routing test derived from Firecracker's swagger file.
//!
//! Every (method, path) pair of `tests/data/firecracker-swagger.yaml` (plus the three DELETE
//! hot-unplug routes) must appear in `ROWS`; each row is exercised in the pre-boot and the
//! post-boot phase with a valid and an invalid body, and must answer Firecracker's status: 204/200
//! where admitted, 400 with the exact phase text where not, 400 with a `fault_message` for an
//! invalid body. Methods a path does not define answer 400 naming the method and the path.

mod support;

use std::collections::BTreeSet;

use squib_api::action::{NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START};
use support::{Conn, kvm_server};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Pre,
    Post,
    Any,
    Get,
}

struct Row {
    method: &'static str,
    template: &'static str,
    path: &'static str,
    valid: Option<&'static str>,
    invalid: Option<&'static str>,
    rule: Rule,
}

const fn row(
    method: &'static str,
    template: &'static str,
    path: &'static str,
    valid: Option<&'static str>,
    invalid: Option<&'static str>,
    rule: Rule,
) -> Row {
    Row {
        method,
        template,
        path,
        valid,
        invalid,
        rule,
    }
}

use Rule::{Any, Get, Post, Pre};

/// Ordered so that each row's prerequisites come first (net before mmds/config, ...).
const ROWS: &[Row] = &[
    row("GET", "/", "/", None, None, Get),
    row("GET", "/version", "/version", None, None, Get),
    row(
        "PUT",
        "/machine-config",
        "/machine-config",
        Some(r#"{"vcpu_count":2,"mem_size_mib":256}"#),
        Some(r#"{"vcpu_count":0,"mem_size_mib":128}"#),
        Pre,
    ),
    row(
        "PATCH",
        "/machine-config",
        "/machine-config",
        Some(r#"{"mem_size_mib":512}"#),
        Some("{}"),
        Pre,
    ),
    row("GET", "/machine-config", "/machine-config", None, None, Get),
    row(
        "PUT",
        "/cpu-config",
        "/cpu-config",
        Some(r#"{"kvm_capabilities":["!56"]}"#),
        Some(r#"{"bogus":[]}"#),
        Pre,
    ),
    row(
        "PUT",
        "/boot-source",
        "/boot-source",
        Some(r#"{"kernel_image_path":"/k","boot_args":"console=ttyS0"}"#),
        Some(r#"{"boot_args":"x"}"#),
        Pre,
    ),
    row(
        "PUT",
        "/drives/{drive_id}",
        "/drives/rootfs",
        Some(
            r#"{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":false}"#,
        ),
        Some(r#"{"drive_id":"rootfs"}"#),
        Any,
    ),
    row(
        "PATCH",
        "/drives/{drive_id}",
        "/drives/rootfs",
        Some(r#"{"drive_id":"rootfs","path_on_host":"/r2"}"#),
        Some(r#"{"path_on_host":"/x"}"#),
        Post,
    ),
    row(
        "PUT",
        "/pmem/{id}",
        "/pmem/pm0",
        Some(r#"{"id":"pm0","path_on_host":"/p"}"#),
        Some(r#"{"id":"pm0"}"#),
        Any,
    ),
    row(
        "PATCH",
        "/pmem/{id}",
        "/pmem/pm0",
        Some(r#"{"id":"pm0","rate_limiter":{"bandwidth":{"size":1,"refill_time":1}}}"#),
        Some(r#"{"id":"pm0","bogus":1}"#),
        Post,
    ),
    row(
        "PUT",
        "/network-interfaces/{iface_id}",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#),
        Some(r#"{"iface_id":"eth0"}"#),
        Any,
    ),
    row(
        "PATCH",
        "/network-interfaces/{iface_id}",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id":"eth0","rx_rate_limiter":{"ops":{"size":10,"refill_time":100}}}"#),
        Some(r#"{"host_dev_name":"x"}"#),
        Post,
    ),
    row(
        "PUT",
        "/vsock",
        "/vsock",
        Some(r#"{"guest_cid":3,"uds_path":"/tmp/v.sock"}"#),
        Some(r#"{"guest_cid":"three","uds_path":"/v"}"#),
        Pre,
    ),
    row(
        "PUT",
        "/balloon",
        "/balloon",
        Some(
            r#"{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1,"free_page_hinting":true}"#,
        ),
        Some(r#"{"amount_mib":"x"}"#),
        Pre,
    ),
    row(
        "PATCH",
        "/balloon",
        "/balloon",
        Some(r#"{"amount_mib":1}"#),
        Some("{}"),
        Post,
    ),
    row("GET", "/balloon", "/balloon", None, None, Get),
    row(
        "PATCH",
        "/balloon/statistics",
        "/balloon/statistics",
        Some(r#"{"stats_polling_interval_s":2}"#),
        Some(r#"{"stats_polling_interval_s":300}"#),
        Post,
    ),
    row(
        "GET",
        "/balloon/statistics",
        "/balloon/statistics",
        None,
        None,
        Get,
    ),
    row(
        "PATCH",
        "/balloon/hinting/start",
        "/balloon/hinting/start",
        Some(r#"{"acknowledge_on_stop":true}"#),
        Some(r#"{"bogus":1}"#),
        Post,
    ),
    row(
        "GET",
        "/balloon/hinting/status",
        "/balloon/hinting/status",
        None,
        None,
        Get,
    ),
    row(
        "PATCH",
        "/balloon/hinting/stop",
        "/balloon/hinting/stop",
        None,
        None,
        Post,
    ),
    row(
        "PUT",
        "/logger",
        "/logger",
        Some(r#"{"level":"Warning","show_level":true}"#),
        Some(r#"{"level":"bogus"}"#),
        Pre,
    ),
    row(
        "PUT",
        "/metrics",
        "/metrics",
        Some(r#"{"metrics_path":"/tmp/m"}"#),
        Some("{}"),
        Pre,
    ),
    row(
        "PUT",
        "/serial",
        "/serial",
        Some(r#"{"serial_out_path":"/tmp/s"}"#),
        Some(r#"{"bogus":1}"#),
        Pre,
    ),
    row(
        "PUT",
        "/entropy",
        "/entropy",
        Some("{}"),
        Some(r#"{"rate_limiter":5}"#),
        Pre,
    ),
    row(
        "PUT",
        "/mmds",
        "/mmds",
        Some(r#"{"a":"b"}"#),
        Some(r#"{"a":"#),
        Any,
    ),
    row(
        "PATCH",
        "/mmds",
        "/mmds",
        Some(r#"{"c":1}"#),
        Some("["),
        Any,
    ),
    row("GET", "/mmds", "/mmds", None, None, Get),
    row(
        "PUT",
        "/mmds/config",
        "/mmds/config",
        Some(r#"{"network_interfaces":["eth0"],"version":"V2"}"#),
        Some(r#"{"network_interfaces":["eth0"],"version":"V3"}"#),
        Pre,
    ),
    row(
        "PUT",
        "/hotplug/memory",
        "/hotplug/memory",
        Some(r#"{"total_size_mib":1024}"#),
        Some(r#"{"total_size_mib":100}"#),
        Pre,
    ),
    row(
        "PATCH",
        "/hotplug/memory",
        "/hotplug/memory",
        Some(r#"{"requested_size_mib":256}"#),
        Some(r#"{"requested_size_mib":-1}"#),
        Post,
    ),
    row("GET", "/hotplug/memory", "/hotplug/memory", None, None, Get),
    row(
        "PATCH",
        "/vm",
        "/vm",
        Some(r#"{"state":"Paused"}"#),
        Some(r#"{"state":"Frozen"}"#),
        Post,
    ),
    row("GET", "/vm/config", "/vm/config", None, None, Get),
    row(
        "PUT",
        "/snapshot/create",
        "/snapshot/create",
        Some(r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#),
        Some(r#"{"snapshot_path":"/s"}"#),
        Post,
    ),
    row(
        "PUT",
        "/snapshot/load",
        "/snapshot/load",
        Some(r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"}}"#),
        Some(r#"{"snapshot_path":"/s"}"#),
        Pre,
    ),
    row(
        "PUT",
        "/actions",
        "/actions",
        Some(r#"{"action_type":"FlushMetrics"}"#),
        Some(r#"{"action_type":"Bogus"}"#),
        Post,
    ),
    row(
        "PUT",
        "/actions",
        "/actions",
        Some(r#"{"action_type":"SendCtrlAltDel"}"#),
        None,
        Post,
    ),
    row(
        "DELETE",
        "/drives/{drive_id}",
        "/drives/rootfs",
        None,
        Some("{}"),
        Post,
    ),
    row("DELETE", "/pmem/{id}", "/pmem/pm0", None, Some("{}"), Post),
    row(
        "DELETE",
        "/network-interfaces/{iface_id}",
        "/network-interfaces/eth0",
        None,
        Some("{}"),
        Post,
    ),
];

/// (METHOD, path) pairs declared in the swagger file.
fn swagger_pairs() -> BTreeSet<(String, String)> {
    let text = include_str!("data/firecracker-swagger.yaml");
    let mut pairs = BTreeSet::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if in_paths && !line.starts_with(' ') && !line.is_empty() {
            break;
        }
        if let Some(p) = line.strip_prefix("  /") {
            current = Some(format!("/{}", p.trim_end_matches(':')));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && ["get", "put", "patch", "delete"].contains(&m)
        {
            pairs.insert((
                m.to_uppercase(),
                current.clone().expect("method before path"),
            ));
        }
    }
    pairs
}

#[test]
fn test_should_cover_every_swagger_pair() {
    let pairs = swagger_pairs();
    assert_eq!(
        pairs.len(),
        38,
        "swagger has 38 method/path pairs: {pairs:?}"
    );
    let ours: BTreeSet<(String, String)> = ROWS
        .iter()
        .map(|r| (r.method.to_owned(), r.template.to_owned()))
        .collect();
    let missing: Vec<_> = pairs.difference(&ours).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the table: {missing:?}"
    );
}

async fn check_invalid(conn: &mut Conn, row: &Row) {
    if let Some(bad) = row.invalid {
        let r = conn.request(row.method, row.path, Some(bad)).await;
        assert_eq!(
            r.status,
            400,
            "{} {} invalid body {bad}: {}",
            row.method,
            row.path,
            r.text()
        );
        assert!(!r.fault().is_empty());
    }
}

#[tokio::test]
async fn test_should_route_every_pair_with_firecracker_status_in_each_phase() {
    let (ctrl, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;

    // Pre-boot phase.
    for row in ROWS {
        let r = conn.request(row.method, row.path, row.valid).await;
        let ctx = format!("pre-boot {} {}: {}", row.method, row.path, r.text());
        assert_eq!(r.header("server"), Some("Firecracker API"), "{ctx}");
        match row.rule {
            Pre | Any => assert_eq!(r.status, 204, "{ctx}"),
            Post => {
                assert_eq!(r.status, 400, "{ctx}");
                assert_eq!(r.fault(), NOT_SUPPORTED_BEFORE_START, "{ctx}");
            }
            Get => {}
        }
        check_invalid(&mut conn, row).await;
    }
    let r = conn
        .request(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        conn.request("GET", "/", None).await.json()["state"],
        "Running"
    );

    // What a running VMM publishes for its runtime GETs.
    ctrl.publish(|s| {
        s.balloon_stats = Some(
            serde_json::from_value(serde_json::json!({
                "target_pages": 0, "actual_pages": 0, "target_mib": 0, "actual_mib": 0
            }))
            .expect("stats"),
        );
        s.balloon_hinting =
            Some(serde_json::from_value(serde_json::json!({"host_cmd": 0})).expect("hinting"));
    });

    // Post-boot phase.
    for row in ROWS {
        let r = conn.request(row.method, row.path, row.valid).await;
        let ctx = format!("post-boot {} {}: {}", row.method, row.path, r.text());
        match row.rule {
            Pre => {
                assert_eq!(r.status, 400, "{ctx}");
                assert_eq!(r.fault(), NOT_SUPPORTED_AFTER_START, "{ctx}");
            }
            Post | Any => assert_eq!(r.status, 204, "{ctx}"),
            Get => {
                assert_eq!(r.status, 200, "{ctx}");
                let _ = r.json();
            }
        }
        check_invalid(&mut conn, row).await;
    }
}

#[tokio::test]
async fn test_should_refuse_undefined_methods_naming_method_and_path() {
    let (_ctrl, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let pairs = swagger_pairs();
    let paths: BTreeSet<String> = pairs.iter().map(|(_, p)| p.clone()).collect();
    for template in paths {
        let path = template
            .replace("{drive_id}", "d")
            .replace("{iface_id}", "i")
            .replace("{id}", "p");
        for method in ["GET", "PUT", "PATCH", "DELETE", "POST", "OPTIONS"] {
            let defined = pairs.contains(&(method.to_owned(), template.clone()))
                || (method == "DELETE" && template.contains('{'));
            if defined {
                continue;
            }
            let body = matches!(method, "PUT" | "PATCH" | "POST").then_some("{}");
            let r = conn.request(method, &path, body).await;
            assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
            let fault = r.fault();
            if template.starts_with("/balloon/hinting") || template == "/balloon/statistics" {
                continue; // sub-path specific texts
            }
            assert_eq!(
                fault,
                format!("Invalid request method and/or path: {method} {path}.")
            );
        }
    }
}
