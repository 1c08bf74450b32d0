//! Property tests: arbitrary request bodies, header blocks and config files never panic, and
//! every error the server produces is exactly `{"fault_message": "..."}`.

mod support;

use std::sync::Arc;

use proptest::prelude::*;
use squib_api::{ControllerSnapshot, RuntimeApiController, TimeoutTable, replay};
use support::{Conn, kvm_server, parse_responses};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &[(&str, &str)] = &[
    ("PUT", "/machine-config"),
    ("PATCH", "/machine-config"),
    ("PUT", "/cpu-config"),
    ("PUT", "/boot-source"),
    ("PUT", "/drives/d0"),
    ("PATCH", "/drives/d0"),
    ("PUT", "/pmem/p0"),
    ("PATCH", "/pmem/p0"),
    ("PUT", "/network-interfaces/n0"),
    ("PATCH", "/network-interfaces/n0"),
    ("PUT", "/vsock"),
    ("PUT", "/balloon"),
    ("PATCH", "/balloon"),
    ("PATCH", "/balloon/statistics"),
    ("PATCH", "/balloon/hinting/start"),
    ("PUT", "/logger"),
    ("PUT", "/metrics"),
    ("PUT", "/serial"),
    ("PUT", "/entropy"),
    ("PUT", "/mmds"),
    ("PATCH", "/mmds"),
    ("PUT", "/mmds/config"),
    ("PUT", "/hotplug/memory"),
    ("PATCH", "/hotplug/memory"),
    ("PUT", "/actions"),
    ("PATCH", "/vm"),
    ("PUT", "/snapshot/create"),
    ("PUT", "/snapshot/load"),
    ("GET", "/"),
];

fn assert_wire_shape(r: &support::Resp) {
    assert_eq!(r.header("server"), Some("Firecracker API"));
    match r.status {
        200 => {
            let _ = r.json();
        }
        204 => assert!(r.body.is_empty()),
        400 | 413 | 500 | 503 | 504 => {
            let _ = r.fault();
        }
        other => panic!("unexpected status {other}: {}", r.text()),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bodies (raw bytes and JSON-ish text) to every mutating route.
    #[test]
    fn prop_bodies_never_panic_and_errors_are_json(
        route in 0..ROUTES.len(),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..512),
            "[{}\\[\\]\":,a-z0-9_ -]{1,200}".prop_map(String::into_bytes),
        ],
    ) {
        runtime().block_on(async {
            let (_c, socket, _seen) = kvm_server().await;
            let (method, path) = ROUTES[route];
            let mut conn = Conn::open(&socket).await;
            let mut raw = format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            raw.extend_from_slice(&body);
            conn.send_raw(&raw).await;
            let r = conn.read_n(1).await.remove(0);
            assert_wire_shape(&r);
            // The connection survives a bad body.
            assert_eq!(conn.request("GET", "/version", None).await.status, 200);
        });
    }

    /// Random header blocks: any response is a JSON fault (or a success), never a panic.
    #[test]
    fn prop_header_blocks_never_panic_and_errors_are_json(
        head in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        runtime().block_on(async {
            let (_c, socket, _seen) = kvm_server().await;
            let mut s = tokio::net::UnixStream::connect(&socket).await.expect("connect");
            let mut raw = head.clone();
            raw.extend_from_slice(b"\r\n\r\n");
            s.write_all(&raw).await.expect("write");
            s.shutdown().await.expect("shutdown");
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            for r in parse_responses(&buf) {
                assert_wire_shape(&r);
            }
        });
    }

    /// Random config documents never panic the parser or the replay.
    #[test]
    fn prop_config_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = replay::parse_config_bytes(&bytes);
    }
}

#[test]
fn test_should_replay_fuzzed_valid_json_documents_without_panic() {
    // Structured near-valid documents through the full replay path.
    let docs = [
        r#"{"boot-source":{"kernel_image_path":"/k"},"drives":[]}"#,
        r#"{"boot-source":{"kernel_image_path":"/k"},"drives":[{"drive_id":"a","is_root_device":true}]}"#,
        r#"{"boot-source":{"kernel_image_path":""},"drives":[],"machine-config":{"vcpu_count":0,"mem_size_mib":1}}"#,
        r#"{"boot-source":{},"drives":[]}"#,
        r#"{"drives":[]}"#,
        "[]",
    ];
    runtime().block_on(async {
        for doc in docs {
            let snap = ControllerSnapshot::new("f", "1.17.0-dev", "x");
            let (c, rx) = RuntimeApiController::new(snap, TimeoutTable::from_spec(), 8);
            let c = Arc::new(c);
            let _seen = support::stub_vmm(Arc::clone(&c), rx);
            if let Ok(cfg) = replay::parse_config_bytes(doc.as_bytes()) {
                let _ = replay::replay_config(&c, cfg, true).await;
            }
        }
    });
}
