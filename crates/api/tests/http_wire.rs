//! Wire-level behaviour over a real Unix socket: Firecracker's exact texts (from recorded
//! transcripts), keep-alive, pipelining, connection limits, payload limit, socket handling.

mod support;

use std::{os::unix::fs::PermissionsExt, sync::Arc};

use squib_api::{ServeOptions, TimeoutTable, bind_listener};
use squib_core::CapabilityProfile;
use support::{Conn, controller, kvm_server, start, stub_vmm, unique_socket_path};

const DESER: &str = "An error occurred when deserializing the json body of a request: ";

#[tokio::test]
async fn test_should_answer_firecracker_transcript_texts() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":0,"mem_size_mib":128}"#),
            400,
            "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":33,"mem_size_mib":128}"#),
            400,
            "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":0}"#),
            400,
            "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#),
            400,
            "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1}"#),
            400,
            "An error occurred when deserializing the json body of a request: missing field `mem_size_mib` at line 1 column 16.",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":"two","mem_size_mib":128}"#),
            400,
            "An error occurred when deserializing the json body of a request: invalid type: string \"two\", expected u8 at line 1 column 19.",
        ),
        (
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"#),
            400,
            "An error occurred when deserializing the json body of a request: EOF while parsing a value at line 1 column 16.",
        ),
        ("PUT", "/machine-config", None, 400, "Empty PUT request."),
        (
            "PATCH",
            "/machine-config",
            Some("{}"),
            400,
            "Empty PATCH request.",
        ),
        (
            "GET",
            "/nonexistent",
            None,
            400,
            "Invalid request method and/or path: GET /nonexistent.",
        ),
        (
            "PUT",
            "/nonexistent",
            Some(r#"{"a":1}"#),
            400,
            "Invalid request method and/or path: PUT /nonexistent.",
        ),
        (
            "GET",
            "/machine-config",
            Some(r#"{"a":1}"#),
            400,
            "GET request cannot have a body.",
        ),
        (
            "DELETE",
            "/machine-config",
            None,
            400,
            "Invalid request method and/or path: DELETE /machine-config.",
        ),
        (
            "POST",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#),
            400,
            "Invalid request method and/or path: POST /actions.",
        ),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"Bogus"}"#),
            400,
            "An error occurred when deserializing the json body of a request: unknown variant `Bogus`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel` at line 1 column 22.",
        ),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"FlushMetrics"}"#),
            400,
            "The requested operation is not supported before starting the microVM.",
        ),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#),
            400,
            "The requested operation is not supported before starting the microVM.",
        ),
        (
            "PATCH",
            "/vm",
            Some(r#"{"state":"Paused"}"#),
            400,
            "The requested operation is not supported before starting the microVM.",
        ),
        (
            "GET",
            "/balloon",
            None,
            400,
            "Balloon config error: No balloon device found.",
        ),
        (
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart","extra":1}"#),
            400,
            "An error occurred when deserializing the json body of a request: unknown field `extra`, expected `action_type` at line 1 column 38.",
        ),
        (
            "DELETE",
            "/drives/x",
            Some("{}"),
            400,
            "Empty Delete request.",
        ),
        ("PUT", "/drives", Some("{}"), 400, "The ID cannot be empty."),
        (
            "PUT",
            "/drives/a-b",
            Some("{}"),
            400,
            "API Resource IDs can only contain alphanumeric characters and underscores.",
        ),
        (
            "PUT",
            "/drives/a",
            Some(r#"{"drive_id":"b","path_on_host":"/x","is_root_device":false}"#),
            400,
            "The id from the path does not match the id from the body!",
        ),
        (
            "PUT",
            "/network-interfaces/a",
            Some(r#"{"iface_id":"b","host_dev_name":"tap0"}"#),
            400,
            "The id from the path [a] does not match the id from the body [b]!",
        ),
        (
            "PUT",
            "/snapshot",
            Some("{}"),
            400,
            "Missing snapshot operation type.",
        ),
        (
            "PUT",
            "/snapshot/foo",
            Some("{}"),
            400,
            "Invalid request method and/or path: PUT /snapshot/foo.",
        ),
        (
            "GET",
            "/balloon/foo",
            None,
            400,
            "Unrecognized GET request path `foo`.",
        ),
        (
            "PUT",
            "/mmds/foo",
            Some("{}"),
            400,
            "Unrecognized PUT request path `foo`.",
        ),
        (
            "PUT",
            "/logger",
            Some(r#"{"level":"none"}"#),
            400,
            "An error occurred when deserializing the json body of a request: Invalid LevelFilter at line 1 column 16.",
        ),
    ];
    for (method, path, body, status, text) in cases {
        let r = conn.request(method, path, *body).await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
        assert_eq!(r.header("server"), Some("Firecracker API"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(&r.fault(), text, "{method} {path}");
    }
    // Accepted values from the transcript (vcpu_count 32, 1 MiB, smt with 2 vCPUs on x86).
    for body in [
        r#"{"vcpu_count":32,"mem_size_mib":128}"#,
        r#"{"vcpu_count":1,"mem_size_mib":1}"#,
        r#"{"vcpu_count":2,"mem_size_mib":128,"smt":true}"#,
    ] {
        let r = conn.request("PUT", "/machine-config", Some(body)).await;
        assert_eq!(r.status, 204, "{body}: {}", r.text());
        assert_eq!(r.header("content-type"), None);
        assert_eq!(r.header("content-length"), None);
    }
    let _ = DESER;
}

#[tokio::test]
async fn test_should_report_initial_state_like_firecracker() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let r = conn.request("GET", "/", None).await;
    assert_eq!(
        r.text(),
        r#"{"id":"anonymous-instance","state":"Not started","vmm_version":"1.17.0-dev (squib test)","app_name":"Firecracker"}"#
    );
    assert_eq!(
        conn.request("GET", "/version", None).await.text(),
        r#"{"firecracker_version":"1.17.0-dev"}"#
    );
    assert_eq!(
        conn.request("GET", "/machine-config", None).await.text(),
        r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
    );
    assert_eq!(
        conn.request("GET", "/vm/config", None).await.text(),
        r#"{"balloon":null,"drives":[],"boot-source":{"kernel_image_path":"","initrd_path":null,"boot_args":null},"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"pmem":[],"memory-hotplug":null}"#
    );
    let r = conn
        .request(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":2,"mem_size_mib":256}"#),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = conn
        .request("PATCH", "/machine-config", Some(r#"{"mem_size_mib":512}"#))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        conn.request("GET", "/machine-config", None).await.text(),
        r#"{"vcpu_count":2,"mem_size_mib":512,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
    );
}

#[tokio::test]
async fn test_should_flag_deprecated_inputs() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2"}"#),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("deprecation"), Some("true"));
    let r = conn
        .request(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128}"#),
        )
        .await;
    assert_eq!(r.header("deprecation"), None);
}

#[tokio::test]
async fn test_should_keep_alive_and_answer_pipelined_requests_in_order() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let mut burst = String::new();
    burst.push_str(&support::request_bytes("GET", "/version", None));
    burst.push_str(&support::request_bytes(
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count":2,"mem_size_mib":64}"#),
    ));
    burst.push_str(&support::request_bytes("GET", "/machine-config", None));
    burst.push_str(&support::request_bytes("GET", "/nope", None));
    burst.push_str(&support::request_bytes("GET", "/", None));
    conn.send_raw(burst.as_bytes()).await;
    let rs = conn.read_n(5).await;
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 204, 200, 400, 200]);
    assert_eq!(rs[2].json()["mem_size_mib"], 64);
    assert_eq!(rs[0].header("connection"), Some("keep-alive"));
    // Still open for more.
    assert_eq!(conn.request("GET", "/version", None).await.status, 200);
}

#[tokio::test]
async fn test_should_close_on_request_and_for_http10() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    conn.send_raw(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    let r = conn.read_n(1).await.remove(0);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(conn.closed_by_server().await);

    let mut conn = Conn::open(&socket).await;
    conn.send_raw(b"GET /version HTTP/1.0\r\n\r\n").await;
    assert_eq!(conn.read_n(1).await[0].status, 200);
    assert!(conn.closed_by_server().await);
}

#[tokio::test]
async fn test_should_reject_oversized_payload_with_json_and_close() {
    let (c, rx) = controller(
        CapabilityProfile::x86_64_kvm(),
        TimeoutTable::from_spec(),
        8,
    );
    let _seen = stub_vmm(Arc::clone(&c), rx);
    let opts = ServeOptions::new(unique_socket_path("limit"))
        .with_max_payload(1024)
        .expect("range");
    let socket = start(c, opts).await;
    let mut conn = Conn::open(&socket).await;
    let body = format!(r#"{{"a":"{}"}}"#, "x".repeat(2000));
    conn.send_raw(support::request_bytes("PUT", "/mmds", Some(&body)).as_bytes())
        .await;
    let r = conn.read_n(1).await.remove(0);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.fault(),
        format!(
            "Request payload with size {} is larger than the limit of 1024 allowed by server.",
            body.len()
        )
    );
    assert!(conn.closed_by_server().await);
    assert!(ServeOptions::new("/x").with_max_payload(1023).is_err());
    assert!(ServeOptions::new("/x").with_max_payload(1_048_577).is_err());
}

#[tokio::test]
async fn test_should_send_100_continue() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let body = r#"{"vcpu_count":1,"mem_size_mib":128}"#;
    conn.send_raw(
        format!(
            "PUT /machine-config HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let interim = conn.read_n(1).await.remove(0);
    assert_eq!(interim.status, 100);
    conn.send_raw(body.as_bytes()).await;
    assert_eq!(conn.read_n(1).await[0].status, 204);
}

#[tokio::test]
async fn test_should_answer_malformed_heads_with_json_fault() {
    let (_c, socket, _seen) = kvm_server().await;
    for raw in [
        &b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"[..],
        b"PUT /machine-config HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET relative HTTP/1.1\r\n\r\n",
    ] {
        let mut conn = Conn::open(&socket).await;
        conn.send_raw(raw).await;
        let r = conn.read_n(1).await.remove(0);
        assert_eq!(r.status, 400, "{raw:?}");
        assert!(r.fault().starts_with("Invalid request"), "{}", r.text());
        assert!(conn.closed_by_server().await);
    }
}

#[tokio::test]
async fn test_should_refuse_connections_over_the_limit_with_503() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut c = Conn::open(&socket).await;
        assert_eq!(c.request("GET", "/version", None).await.status, 200);
        held.push(c);
    }
    let mut extra = Conn::open(&socket).await;
    let r = extra.read_n(1).await.remove(0);
    assert_eq!(r.status, 503);
    assert_eq!(r.fault(), "Too many open connections");
    assert!(extra.closed_by_server().await);
    // Existing connections are still served; closing one frees a slot.
    assert_eq!(held[0].request("GET", "/", None).await.status, 200);
    drop(held.pop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut again = Conn::open(&socket).await;
    assert_eq!(again.request("GET", "/", None).await.status, 200);
}

#[tokio::test]
async fn test_should_bind_socket_0600_and_replace_only_stale_sockets() {
    let path = unique_socket_path("bind");
    // A stale socket file (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
    assert!(path.exists());
    let listener = bind_listener(&path).await.expect("bind over stale socket");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A live socket is refused with Firecracker's text.
    let err = bind_listener(&path)
        .await
        .expect_err("live socket must not be stolen");
    assert!(
        err.to_string().contains("Failed to open the API socket at"),
        "{err}"
    );
    drop(listener);
    // A regular file is never removed.
    let file = unique_socket_path("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(bind_listener(&file).await.is_err());
    assert!(file.exists());
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn test_should_use_profile_rules_for_smt_and_ctrl_alt_del() {
    // Apple Silicon profile (the seeds' reference): smt and SendCtrlAltDel refused in any phase.
    let (c, rx) = controller(
        CapabilityProfile::apple_silicon(),
        TimeoutTable::from_spec(),
        8,
    );
    let _seen = stub_vmm(Arc::clone(&c), rx);
    let socket = start(c, ServeOptions::new(unique_socket_path("apple"))).await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":2,"mem_size_mib":128,"smt":true}"#),
        )
        .await;
    assert_eq!(
        r.fault(),
        "Invalid arch field for SMT: SMT not supported on Apple Silicon"
    );
    let r = conn
        .request("PATCH", "/machine-config", Some(r#"{"smt":true}"#))
        .await;
    assert_eq!(
        r.fault(),
        "Invalid arch field for SMT: SMT not supported on Apple Silicon"
    );
    let r = conn
        .request(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#),
        )
        .await;
    assert_eq!(
        r.fault(),
        "Invalid action: SendCtrlAltDel is x86-only and not supported on aarch64"
    );

    // x86_64 KVM profile: allowed after boot.
    let (_c, socket, mut seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request("PUT", "/boot-source", Some(r#"{"kernel_image_path":"/k"}"#))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        conn.request(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        )
        .await
        .status,
        204
    );
    assert_eq!(
        conn.request(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        )
        .await
        .status,
        204
    );
    let mut kinds = Vec::new();
    while let Ok(a) = seen.try_recv() {
        kinds.push(
            format!("{a:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(kinds, ["PutBootSource", "Instance", "Instance"]);
}

#[tokio::test]
async fn test_should_answer_413_when_mmds_exceeds_limit() {
    let (c, rx) = controller(
        CapabilityProfile::x86_64_kvm(),
        TimeoutTable::from_spec(),
        8,
    );
    c.publish(|s| s.mmds_size_limit = 64);
    let _seen = stub_vmm(Arc::clone(&c), rx);
    let socket = start(c, ServeOptions::new(unique_socket_path("mmds"))).await;
    let mut conn = Conn::open(&socket).await;
    let r = conn.request("PATCH", "/mmds", Some(r#"{"a":1}"#)).await;
    assert_eq!(
        r.fault(),
        "MMDS error: The MMDS data store is not initialized."
    );
    assert_eq!(
        conn.request("PUT", "/mmds", Some(r#"{"a":"b"}"#))
            .await
            .status,
        204
    );
    let big = format!(r#"{{"k":"{}"}}"#, "v".repeat(100));
    let r = conn.request("PATCH", "/mmds", Some(&big)).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.fault(),
        "MMDS limit exceeded error: The MMDS patch request doesn't fit."
    );
    assert_eq!(
        conn.request("GET", "/mmds", None).await.text(),
        r#"{"a":"b"}"#
    );
    assert_eq!(
        conn.request("PATCH", "/mmds", Some(r#"{"a":null,"c":{"d":1}}"#))
            .await
            .status,
        204
    );
    assert_eq!(
        conn.request("GET", "/mmds", None).await.text(),
        r#"{"c":{"d":1}}"#
    );
}
