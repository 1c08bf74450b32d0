//! Reads never queue behind actions; actions that the VMM never answers time out with 504
//! without being cancelled; a vanished VMM is a 500.

mod support;

use std::{sync::Arc, time::Duration};

use squib_api::{ActionClass, ServeOptions, TimeoutTable};
use squib_core::CapabilityProfile;
use support::{Conn, controller, start, unique_socket_path};

#[tokio::test]
async fn test_should_serve_reads_while_vmm_is_wedged_and_channel_full() {
    // Capacity 1 and a VMM that never reads: one PUT fills the channel, a second blocks.
    let (c, rx) = controller(
        CapabilityProfile::x86_64_kvm(),
        TimeoutTable::from_spec(),
        1,
    );
    let socket = start(
        Arc::clone(&c),
        ServeOptions::new(unique_socket_path("wedged")),
    )
    .await;
    let _wedged = rx;
    let mut writers = Vec::new();
    for _ in 0..2 {
        let mut w = Conn::open(&socket).await;
        w.send_raw(
            support::request_bytes("PUT", "/boot-source", Some(r#"{"kernel_image_path":"/k"}"#))
                .as_bytes(),
        )
        .await;
        writers.push(w);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut reader = Conn::open(&socket).await;
    for path in ["/", "/version", "/vm/config", "/machine-config", "/mmds"] {
        for _ in 0..20 {
            let r = reader.request("GET", path, None).await;
            assert_eq!(r.status, 200, "GET {path} while wedged: {}", r.text());
        }
    }
}

#[tokio::test]
async fn test_should_time_out_with_504_and_keep_action_queued() {
    let timeouts = TimeoutTable::from_spec()
        .with(ActionClass::PreBootConfig, Duration::from_millis(200))
        .with(ActionClass::InstanceStart, Duration::from_millis(300));
    let (c, mut rx) = controller(CapabilityProfile::x86_64_kvm(), timeouts, 8);
    let socket = start(
        Arc::clone(&c),
        ServeOptions::new(unique_socket_path("timeout")),
    )
    .await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request("PUT", "/boot-source", Some(r#"{"kernel_image_path":"/k"}"#))
        .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.fault(), "VMM action timed out: pre-boot config");
    // Not cancelled: the action is still there for the VMM to execute.
    let (action, _reply) = rx.try_recv().expect("action still queued");
    assert!(format!("{action:?}").starts_with("PutBootSource"));
    let r = conn
        .request(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#),
        )
        .await;
    assert_eq!(
        (r.status, r.fault()),
        (504, "VMM action timed out: InstanceStart".to_owned())
    );
    assert_eq!(
        TimeoutTable::from_spec().get(ActionClass::SnapshotLoad),
        Duration::from_secs(300)
    );
    assert_eq!(
        TimeoutTable::from_spec().get(ActionClass::BalloonResize),
        Duration::from_secs(30)
    );
}

#[tokio::test]
async fn test_should_answer_500_when_the_vmm_is_gone() {
    let (c, rx) = controller(
        CapabilityProfile::x86_64_kvm(),
        TimeoutTable::from_spec(),
        8,
    );
    drop(rx);
    let socket = start(
        Arc::clone(&c),
        ServeOptions::new(unique_socket_path("gone")),
    )
    .await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request("PUT", "/boot-source", Some(r#"{"kernel_image_path":"/k"}"#))
        .await;
    assert_eq!(
        (r.status, r.fault()),
        (500, "VMM event loop is gone".to_owned())
    );
    assert_eq!(conn.request("GET", "/", None).await.status, 200);
}

#[tokio::test]
async fn test_should_relay_vmm_faults_verbatim() {
    let (c, mut rx) = controller(
        CapabilityProfile::x86_64_kvm(),
        TimeoutTable::from_spec(),
        8,
    );
    tokio::spawn(async move {
        while let Some((_a, reply)) = rx.recv().await {
            let _ = reply.send(squib_api::ApiResponse::bad_request(
                "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)",
            ));
        }
    });
    let socket = start(
        Arc::clone(&c),
        ServeOptions::new(unique_socket_path("fault")),
    )
    .await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request(
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path":"/nonexistent/vmlinux"}"#),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"fault_message":"Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"}"#
    );
    // A failed action leaves the mirror untouched.
    let cfg = conn.request("GET", "/vm/config", None).await.json();
    assert_eq!(cfg["boot-source"]["kernel_image_path"], "");
}
