//! End-to-end: Linux finds the machine through squib's ACPI tables alone.
//!
//! The guest kernel is the shared minimal Linux rebuilt with `ACPI=y` and
//! `VIRTIO_MMIO_CMDLINE_DEVICES=n` (`scripts/make-acpi-guest.sh`, run by `scripts/test.sh`): it
//! ignores the `virtio_mmio.device=` arguments squib still appends (as Firecracker does), so every
//! virtio device it binds was found as an `LNRO0005` node of the DSDT, and it takes its CPUs from
//! the MADT. One boot (2 vCPUs, a drive, entropy, vsock and a balloon) checks all of that from
//! the guest's own view, then reboots through the i8042 (exit 0).

mod common;

use std::{path::PathBuf, time::Duration};

use common::linux::{Guest, cmdline};
use common::{kvm_or_skip, tmp_path};

const BOOT_LIMIT: Duration = Duration::from_secs(420);

/// `$SQUIB_ACPI_GUEST_DIR`, else the cache `scripts/make-acpi-guest.sh` fills.
fn acpi_guest_dir() -> Option<PathBuf> {
    let dir = match std::env::var("SQUIB_ACPI_GUEST_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(std::env::var("HOME").ok()?).join(".cache/squib-guest-acpi/out"),
    };
    if dir.join("vmlinux").exists() && dir.join("initramfs.cpio").exists() {
        return Some(dir);
    }
    println!(
        "SKIPPED: no ACPI Linux guest in {} (run scripts/make-acpi-guest.sh)",
        dir.display()
    );
    None
}

#[test]
fn test_linux_finds_cpus_and_virtio_devices_through_acpi() {
    if !kvm_or_skip() {
        return;
    }
    let Some(dir) = acpi_guest_dir() else { return };
    let config = std::fs::read_to_string(dir.join("kernel.config")).unwrap_or_default();
    assert!(config.contains("\nCONFIG_ACPI=y"), "not an ACPI kernel");
    assert!(
        !config.contains("\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y"),
        "the kernel would also take devices from the command line"
    );
    let data = tmp_path("acpi-data.ext4");
    std::fs::copy(dir.join("rootfs.ext4"), &data).expect("copy rootfs");
    let vsock = tmp_path("acpi-vsock");
    let boot_args = cmdline(" squib.mode=shell");
    let doc = serde_json::json!({
        "boot-source": {
            "kernel_image_path": dir.join("vmlinux"),
            "initrd_path": dir.join("initramfs.cpio"),
            "boot_args": boot_args,
        },
        "drives": [
            {"drive_id": "data", "path_on_host": data, "is_root_device": false, "is_read_only": true},
        ],
        "entropy": {},
        "vsock": {"guest_cid": 3, "uds_path": vsock},
        "balloon": {"amount_mib": 0, "deflate_on_oom": false},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
    });
    let mut g = Guest::spawn_config(&doc);
    g.wait_shell_marker(BOOT_LIMIT);
    // The four devices as the ACPI bus enumerated them, and the platform devices bound to
    // virtio_mmio (named after their ACPI node, `LNRO0005:NN`).
    g.run(
        "echo ACPI-NODES=$(ls /sys/bus/acpi/devices | grep -c '^LNRO0005:') \
         BOUND=$(ls /sys/bus/platform/drivers/virtio-mmio | grep -c '^LNRO0005:') \
         MADT=$(ls /sys/firmware/acpi/tables | grep -c '^APIC$')",
        "ACPI-NODES=",
        Duration::from_secs(120),
    );
    let out = g.reboot(Duration::from_secs(120));
    assert!(
        out.contains("ACPI-NODES=4 BOUND=4 MADT=1"),
        "the guest did not find the 4 virtio-mmio devices through ACPI:\n{out}"
    );
    assert!(
        out.contains("ACPI: Using ACPI (MADT) for SMP configuration information"),
        "{out}"
    );
    assert!(out.contains(" cpus=2 "), "{out}");
    assert!(
        out.contains("SQUIB-DISK vda marker=SQUIB-ROOTFS-OK"),
        "{out}"
    );
    for driver in [
        "virtio_blk",
        "virtio_rng",
        "vmw_vsock_virtio_transport",
        "virtio_balloon",
    ] {
        assert!(
            out.contains(&format!("driver={driver}")),
            "{driver} not bound:\n{out}"
        );
    }
}
