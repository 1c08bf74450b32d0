//! The Linux guest (`../shared/guest`, `squib.mode=shell`) paused at its shell, snapshotted,
//! restored in a new process, runs a command typed on its console after the restore.
//!
//! One slow boot (1–3 minutes on nested-PVM hosts); skipped loudly without the guest assets.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Squib, kvm_or_skip, linux_guest_dir, pvm_args, tmp_path, wait_for};
use serde_json::json;

const BOOT_LIMIT: Duration = Duration::from_secs(420);

fn put(vm: &Squib, path: &str, body: &str) {
    let (s, b) = vm.api("PUT", path, Some(body));
    assert_eq!(s, 204, "PUT {path}: {b}\n{}", vm.output());
}

#[test]
fn test_linux_shell_survives_snapshot_and_restore_in_a_new_process() {
    if !kvm_or_skip() {
        return;
    }
    let Some(dir) = linux_guest_dir() else { return };
    let socket = tmp_path("linux-snap.sock");
    let (vm, mut stdin) = Squib::spawn_api_with_stdin(&[], &socket);
    put(
        &vm,
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":256}"#,
    );
    put(
        &vm,
        "/boot-source",
        &json!({
            "kernel_image_path": dir.join("vmlinux"),
            "initrd_path": dir.join("initramfs.cpio"),
            "boot_args": format!(
                "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd squib.mode=shell{}",
                pvm_args()
            ),
        })
        .to_string(),
    );
    put(&vm, "/actions", r#"{"action_type":"InstanceStart"}"#);
    // Wait for the shell, then prove it answers before the snapshot.
    assert!(
        wait_for(BOOT_LIMIT, || vm
            .output()
            .contains("SQUIB-GUEST-READY")
            .then_some(()))
        .is_some(),
        "no READY marker:\n{}",
        vm.output()
    );
    let probe = |stdin: &mut std::process::ChildStdin, vm: &Squib, tag: &str| {
        let want = format!("{tag}-{}", 6 * 7);
        let mut ok = None;
        for _ in 0..20 {
            let _ = writeln!(stdin, "echo {tag}-$((6*7))");
            ok = wait_for(Duration::from_secs(15), || {
                vm.output().contains(&want).then_some(())
            });
            if ok.is_some() {
                break;
            }
        }
        assert!(ok.is_some(), "no `{want}` on the console:\n{}", vm.output());
    };
    probe(&mut stdin, &vm, "BEFORE");
    assert_eq!(vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0, 204);
    let (state, mem) = (tmp_path("linux.state"), tmp_path("linux.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    put(&vm, "/snapshot/create", &body.to_string());
    drop(stdin);
    drop(vm);

    let socket2 = tmp_path("linux-snap2.sock");
    let (vm2, mut stdin2) = Squib::spawn_api_with_stdin(&[], &socket2);
    let load = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
    });
    put(&vm2, "/snapshot/load", &load.to_string());
    probe(&mut stdin2, &vm2, "AFTER");
    let out = vm2.output();
    assert!(
        !out.contains("SQUIB-GUEST-READY"),
        "the guest rebooted instead of continuing:\n{out}"
    );
    drop(stdin2);
    drop(vm2);
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&mem);
}
