//! End-to-end: the `squib` binary boots the project's test guest through the Firecracker API and
//! through `--no-api --config-file`, as a Firecracker user would.

mod common;

use std::time::Duration;

use common::{Squib, kvm_or_skip, test_guest, tmp_path, wait_for};

fn boot_args(scenario: &str) -> String {
    format!("console=ttyS0 reboot=k panic=1 squibtest={scenario}")
}

fn config_file(scenario: &str, vcpus: u8) -> std::path::PathBuf {
    let path = tmp_path("config.json");
    let doc = serde_json::json!({
        "boot-source": {"kernel_image_path": test_guest(), "boot_args": boot_args(scenario)},
        "drives": [],
        "machine-config": {"vcpu_count": vcpus, "mem_size_mib": 128},
    });
    std::fs::write(&path, doc.to_string()).expect("write config");
    path
}

#[test]
fn test_should_boot_test_guest_via_no_api_config_file() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = config_file("hello", 1);
    let mut vm = Squib::spawn(
        &[
            "--no-api",
            "--boot-timer",
            "--config-file",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    let code = vm.wait(Duration::from_secs(60));
    let out = vm.output();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SQUIBTEST BEGIN hello"), "{out}");
    assert!(out.contains("TEST ok hello"), "{out}");
    assert!(out.contains("Guest-boot-time = "), "{out}");
    assert!(
        out.contains("Firecracker exiting successfully. exit_code=0"),
        "{out}"
    );
}

#[test]
fn test_should_boot_smp_guest_with_every_vcpu() {
    if !kvm_or_skip() {
        return;
    }
    for vcpus in [1u8, 2] {
        let cfg = config_file("smp", vcpus);
        let mut vm = Squib::spawn(&["--no-api", "--config-file", cfg.to_str().unwrap()], None);
        let code = vm.wait(Duration::from_secs(60));
        let out = vm.output();
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains(&format!("TEST ok smp cpus={vcpus}")),
            "{vcpus} vCPUs: {out}"
        );
    }
}

#[test]
fn test_should_boot_via_api_pause_and_resume_counter() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("api.sock");
    let serial = tmp_path("serial.log");
    let vm = Squib::spawn(&["--boot-timer"], Some(&socket));
    let (s, body) = vm.api("GET", "/", None);
    assert_eq!(
        (s, body.contains(r#""state":"Not started""#)),
        (200, true),
        "{body}"
    );
    let serial_body = format!(r#"{{"serial_out_path":"{}"}}"#, serial.display());
    assert_eq!(vm.api("PUT", "/serial", Some(&serial_body)).0, 204);
    assert_eq!(
        vm.api(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128}"#)
        )
        .0,
        204
    );
    let bs = serde_json::json!({
        "kernel_image_path": test_guest(),
        "boot_args": format!("{} squibtest.tick_shift=14", boot_args("counter")),
    });
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    let (s, body) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 204, "{body}\n{}", vm.output());
    let (_, info) = vm.api("GET", "/", None);
    assert!(info.contains(r#""state":"Running""#), "{info}");

    let ticks = || -> u64 {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("TICK ")?.trim().parse().ok())
            .max()
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(30), || (ticks() >= 3).then_some(())).is_some(),
        "no ticks"
    );

    assert_eq!(vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0, 204);
    assert!(vm.api("GET", "/", None).1.contains(r#""state":"Paused""#));
    let paused_at = ticks();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ticks(), paused_at, "the counter advanced while paused");

    assert_eq!(
        vm.api("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#)).0,
        204
    );
    assert!(
        wait_for(Duration::from_secs(30), || (ticks() > paused_at + 2)
            .then_some(()))
        .is_some(),
        "the counter did not advance after resume"
    );
    assert!(vm.api("GET", "/", None).1.contains(r#""state":"Running""#));
    assert!(
        vm.output().contains("Guest-boot-time = "),
        "{}",
        vm.output()
    );
}

#[test]
fn test_should_reset_guest_on_send_ctrl_alt_del_and_exit_0() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("api.sock");
    let serial = tmp_path("serial.log");
    let mut vm = Squib::spawn(&[], Some(&socket));
    // Before boot, Firecracker's text.
    let (s, body) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"SendCtrlAltDel"}"#),
    );
    assert_eq!(
        (s, body.as_str()),
        (
            400,
            r#"{"fault_message":"The requested operation is not supported before starting the microVM."}"#
        )
    );
    let serial_body = format!(r#"{{"serial_out_path":"{}"}}"#, serial.display());
    assert_eq!(vm.api("PUT", "/serial", Some(&serial_body)).0, 204);
    let bs = serde_json::json!({"kernel_image_path": test_guest(), "boot_args": boot_args("cad")});
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    assert_eq!(
        vm.api(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        )
        .0,
        204
    );
    let waiting = || {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains("TEST info cad waiting")
    };
    assert!(
        wait_for(Duration::from_secs(30), || waiting().then_some(())).is_some(),
        "{}",
        vm.output()
    );
    let (s, body) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"SendCtrlAltDel"}"#),
    );
    assert_eq!(s, 204, "{body}");
    let code = vm.wait(Duration::from_secs(30));
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert_eq!(code, Some(0), "{text}\n{}", vm.output());
    assert!(text.contains("TEST ok cad scancodes=4"), "{text}");
    assert!(
        vm.output()
            .contains("Firecracker exiting successfully. exit_code=0")
    );
}

#[test]
fn test_should_reject_bad_kernel_path_like_firecracker() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("api.sock");
    let vm = Squib::spawn(&[], Some(&socket));
    let (s, body) = vm.api(
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path":"/nonexistent/vmlinux"}"#),
    );
    assert_eq!(s, 400);
    assert_eq!(
        body,
        r#"{"fault_message":"Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"}"#
    );
    let (s, body) = vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(s, 400);
    assert_eq!(
        body,
        r#"{"fault_message":"Start microvm error: Cannot start microvm without kernel configuration."}"#
    );
    assert!(vm.api("GET", "/", None).1.contains("Not started"));
}

#[test]
fn test_should_exit_with_error_on_guest_triple_fault() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = config_file("fault", 1);
    let mut vm = Squib::spawn(&["--no-api", "--config-file", cfg.to_str().unwrap()], None);
    let code = vm.wait(Duration::from_secs(60));
    let out = vm.output();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Firecracker exiting with error. exit_code=1"),
        "{out}"
    );
}

#[test]
fn test_should_print_firecracker_version_and_reject_bad_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squib"))
        .arg("--version")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Firecracker v1.17.0-dev\n"), "{text}");
    assert_eq!(out.status.code(), Some(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squib"))
        .arg("--bogus")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(153));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Found argument 'bogus' which wasn't expected"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squib"))
        .arg("--no-api")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(153));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squib"))
        .args(["--level", "loud", "--api-sock", "/tmp/x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(152));
}
