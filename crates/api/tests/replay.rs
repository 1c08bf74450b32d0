//! `--config-file` replay goes through the same validation and dispatch path as HTTP.

mod support;

use std::sync::Arc;

use squib_api::{
    ApiAction, ControllerSnapshot, ReplayError, RuntimeApiController, TimeoutTable,
    parse_config_file, replay::parse_config_bytes, replay_config,
};
use squib_core::CapabilityProfile;

fn setup() -> (
    Arc<RuntimeApiController>,
    tokio::sync::mpsc::UnboundedReceiver<ApiAction>,
) {
    let snap = ControllerSnapshot::new("cfg", "1.17.0-dev", "1.17.0-dev (squib test)")
        .with_profile(CapabilityProfile::x86_64_kvm());
    let (c, rx) = RuntimeApiController::new(snap, TimeoutTable::from_spec(), 8);
    let c = Arc::new(c);
    let seen = support::stub_vmm(Arc::clone(&c), rx);
    (c, seen)
}

fn variant(a: &ApiAction) -> String {
    format!("{a:?}")
        .split('(')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn test_should_replay_in_firecracker_order_then_start() {
    let (c, mut seen) = setup();
    // Members deliberately listed out of order; unknown top-level keys are ignored.
    let doc = r#"{
        "drives": [{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":false}],
        "network-interfaces": [{"iface_id":"eth0","host_dev_name":"tap0"}],
        "mmds-config": {"network_interfaces":["eth0"],"version":"V2"},
        "boot-source": {"kernel_image_path":"/k","boot_args":"console=ttyS0 reboot=k panic=1"},
        "machine-config": {"vcpu_count":2,"mem_size_mib":256},
        "logger": {"level":"Info"},
        "entropy": {},
        "some-future-key": {"whatever": true}
    }"#;
    let cfg = parse_config_bytes(doc.as_bytes()).expect("parse");
    replay_config(&c, cfg, true).await.expect("replay");
    let mut order = Vec::new();
    while let Ok(a) = seen.try_recv() {
        order.push(variant(&a));
    }
    assert_eq!(
        order,
        [
            "PutLogger",
            "PutMachineConfig",
            "PutBootSource",
            "PutDrive",
            "PutNetworkInterface",
            "PutMmdsConfig",
            "PutEntropy",
            "Instance"
        ]
    );
    let snap = c.snapshot();
    let vm = serde_json::to_value(&snap.vm_config).expect("json");
    assert_eq!(vm["machine-config"]["vcpu_count"], 2);
    assert_eq!(vm["drives"][0]["drive_id"], "rootfs");
    assert_eq!(snap.instance_info.state, squib_api::VmState::Running);
}

#[tokio::test]
async fn test_should_name_the_failing_member() {
    let (c, _seen) = setup();
    let doc = r#"{"boot-source":{"kernel_image_path":"/k"},"drives":[],"machine-config":{"vcpu_count":0,"mem_size_mib":128}}"#;
    let err = replay_config(
        &c,
        parse_config_bytes(doc.as_bytes()).expect("parse"),
        false,
    )
    .await
    .expect_err("vcpu_count 0");
    let text = err.to_string();
    assert!(text.contains("machine-config"), "{text}");
    assert!(
        text.contains("The number of vCPUs must be greater than 0"),
        "{text}"
    );

    let err = parse_config_bytes(br#"{"boot-source":{"kernel_image_path":"/k"}}"#)
        .expect_err("no drives");
    assert!(err.to_string().contains("missing field `drives`"), "{err}");

    let doc = r#"{"boot-source":{"kernel_image_path":"/k"},"drives":[{"drive_id":"a","path_on_host":"/a","is_root_device":true},{"drive_id":"b","path_on_host":"/b","is_root_device":true}]}"#;
    let err = replay_config(
        &c,
        parse_config_bytes(doc.as_bytes()).expect("parse"),
        false,
    )
    .await
    .expect_err("two roots");
    assert!(
        err.to_string()
            .contains("A root block device already exists!"),
        "{err}"
    );
}

#[tokio::test]
async fn test_should_report_unreadable_files() {
    let err =
        parse_config_file(std::path::Path::new("/nonexistent/cfg.json")).expect_err("missing");
    assert!(matches!(err, ReplayError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("failed to read --config-file /nonexistent/cfg.json")
    );
}

#[tokio::test]
async fn test_should_match_the_http_path_for_the_same_input() {
    // Same member via HTTP and via replay: same error text.
    let (_c, socket, _seen) = support::kvm_server().await;
    let mut conn = support::Conn::open(&socket).await;
    let body = r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#;
    let http = conn
        .request("PUT", "/machine-config", Some(body))
        .await
        .fault();
    let (c, _seen2) = setup();
    let doc = format!(
        r#"{{"boot-source":{{"kernel_image_path":"/k"}},"drives":[],"machine-config":{body}}}"#
    );
    let err = replay_config(
        &c,
        parse_config_bytes(doc.as_bytes()).expect("parse"),
        false,
    )
    .await
    .expect_err("odd smt");
    assert!(err.to_string().ends_with(&http), "{err} vs {http}");
}
