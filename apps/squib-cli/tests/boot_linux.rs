//! End-to-end: `squib` boots the minimal Linux guest (`../shared/guest`, or `$SQUIB_GUEST_DIR`)
//! driven exactly as a Firecracker user would: vmlinux through the 64-bit entry (API), vmlinux
//! through PVH with 2 vCPUs and its root on virtio-blk (`--no-api --config-file`), and bzImage
//! (API).
//!
//! These are slow on nested-PVM hosts (20–90 s each) and run one at a time.

mod common;

use std::{sync::Mutex, time::Duration};

use common::linux::{Guest, cmdline};
use common::{Squib, kvm_or_skip, linux_guest_dir, tmp_path};

/// Linux boots are serialised: in parallel they would only slow each other down.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const BOOT_LIMIT: Duration = Duration::from_secs(420);

fn put(vm: &Squib, path: &str, body: &str) {
    let (s, b) = vm.api("PUT", path, Some(body));
    assert_eq!(s, 204, "PUT {path}: {b}");
}

fn check_markers(serial_text: &str, cpus: u8) {
    assert!(serial_text.contains("SQUIB-GUEST-READY"), "{serial_text}");
    assert!(
        serial_text.contains(&format!(" cpus={cpus} ")),
        "expected cpus={cpus}: {serial_text}"
    );
}

#[test]
fn test_should_boot_linux_vmlinux_64bit_entry_via_api() {
    if !kvm_or_skip() {
        return;
    }
    let Some(dir) = linux_guest_dir() else { return };
    let _serial_boots = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let socket = tmp_path("linux.sock");
    let serial = tmp_path("linux.serial");
    // Force the 64-bit Linux boot protocol for this ELF (it also carries a PVH note).
    let mut vm = Squib::spawn_env(
        &["--boot-timer"],
        Some(&socket),
        &[("SQUIB_BOOT_PROTOCOL", "linux")],
    );
    put(
        &vm,
        "/serial",
        &format!(r#"{{"serial_out_path":"{}"}}"#, serial.display()),
    );
    put(
        &vm,
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":256}"#,
    );
    put(
        &vm,
        "/boot-source",
        &serde_json::json!({
            "kernel_image_path": dir.join("vmlinux"),
            "initrd_path": dir.join("initramfs.cpio"),
            "boot_args": cmdline(""),
        })
        .to_string(),
    );
    put(&vm, "/actions", r#"{"action_type":"InstanceStart"}"#);
    assert!(vm.api("GET", "/", None).1.contains(r#""state":"Running""#));
    let code = vm.wait(BOOT_LIMIT);
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert_eq!(code, Some(0), "serial:\n{text}\nlog:\n{}", vm.output());
    check_markers(&text, 1);
    assert!(text.contains("SQUIB-GUEST-DONE"), "{text}");
    assert!(
        !vm.output().contains("PVH boot protocol"),
        "{}",
        vm.output()
    );
}

/// PVH entry, 2 vCPUs, `--no-api --config-file`, root on a copy of `rootfs.ext4` served by
/// squib's virtio-blk, a second read-only drive, an entropy device; the console's stdin is used
/// to ask Linux itself whether it sees the second drive read-only.
#[test]
fn test_should_boot_linux_pvh_smp_from_virtio_root_via_config_file() {
    if !kvm_or_skip() {
        return;
    }
    let Some(dir) = linux_guest_dir() else { return };
    let _serial_boots = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = tmp_path("rootfs.ext4");
    let data = tmp_path("data.ext4");
    for copy in [&root, &data] {
        std::fs::copy(dir.join("rootfs.ext4"), copy).expect("copy rootfs");
        std::fs::set_permissions(copy, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
    }
    let doc = serde_json::json!({
        "boot-source": {"kernel_image_path": dir.join("vmlinux"), "boot_args": cmdline(" squib.mode=shell")},
        "drives": [
            {"drive_id": "rootfs", "path_on_host": root, "is_root_device": true, "is_read_only": false},
            {"drive_id": "data", "path_on_host": data, "is_root_device": false, "is_read_only": true},
        ],
        "entropy": {},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
    });
    let mut g = Guest::spawn_config(&doc);
    g.wait_shell_marker(BOOT_LIMIT);
    g.run(
        "echo RO=$(cat /sys/block/vdb/ro) RW=$(cat /sys/block/vda/ro)",
        "RO=1 RW=0",
        Duration::from_secs(120),
    );
    let out = g.reboot(Duration::from_secs(120));
    assert!(
        out.contains("Kernel loaded using PVH boot protocol"),
        "{out}"
    );
    check_markers(&out, 2);
    assert!(out.contains("root=/dev/vda rw"), "{out}");
    assert!(
        out.contains("SQUIB-DISK root marker=SQUIB-ROOTFS-OK"),
        "{out}"
    );
    assert!(out.contains("SQUIB-RNG virtio_rng"), "{out}");
}

#[test]
fn test_should_boot_linux_bzimage_via_api() {
    // Note: Ctrl-Alt-Del is proven with the test guest (`cad` scenario); this Linux guest is
    // built without CONFIG_VT, so Linux never turns the scancodes into a reboot.
    if !kvm_or_skip() {
        return;
    }
    let Some(dir) = linux_guest_dir() else { return };
    let _serial_boots = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let socket = tmp_path("bz.sock");
    let serial = tmp_path("bz.serial");
    let mut vm = Squib::spawn(&[], Some(&socket));
    put(
        &vm,
        "/serial",
        &format!(r#"{{"serial_out_path":"{}"}}"#, serial.display()),
    );
    put(
        &vm,
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":256}"#,
    );
    let boot = serde_json::json!({
        "kernel_image_path": dir.join("bzImage"),
        "initrd_path": dir.join("initramfs.cpio"),
        "boot_args": cmdline(""),
    });
    put(&vm, "/boot-source", &boot.to_string());
    put(&vm, "/actions", r#"{"action_type":"InstanceStart"}"#);
    let code = vm.wait(Duration::from_secs(600));
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert_eq!(code, Some(0), "serial:\n{text}\nlog:\n{}", vm.output());
    check_markers(&text, 1);
    assert!(text.contains("SQUIB-GUEST-DONE"), "{text}");
}
