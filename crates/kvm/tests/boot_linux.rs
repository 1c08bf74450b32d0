//! Boots the project's Linux test guest (`shared/guest`) on real KVM through squib-hv,
//! squib-kvm and squib-arch, with a minimal serial + i8042 reset catcher implemented here.
//!
//! Slow on nested `kvm_pvm` hosts (20–90 s per boot), so boots are serialised by a lock.
//! Set `SQUIB_SKIP_LINUX_BOOT=1` to skip, `SQUIB_BOOT_ECHO=1` to echo the console to stderr.

mod common;

use std::time::Duration;

use common::vmm::{BootSpec, boot, tail};
use common::{guest_dir, hypervisor_or_skip};

const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux \
    i8042.dumbkbd noxsave nofsgsbase clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid \
    percpu_alloc=page";
/// Per-boot timeout (`SQUIB_BOOT_TIMEOUT_SECS` overrides). bzImage decompression alone is
/// emulated for ~100 s on nested PVM hosts, hence the larger default.
fn timeout(kernel: &str) -> Duration {
    let default = if kernel == "bzImage" { 600 } else { 300 };
    let secs = std::env::var("SQUIB_BOOT_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

fn boot_and_check(kernel: &str, prefer_pvh: bool, vcpus: u8) {
    if std::env::var_os("SQUIB_SKIP_LINUX_BOOT").is_some() {
        println!("SKIPPED: SQUIB_SKIP_LINUX_BOOT set");
        return;
    }
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    if !guest_dir().join(kernel).exists() {
        println!("SKIPPED: no {kernel} in {}", guest_dir().display());
        return;
    }
    let kernel_path = guest_dir().join(kernel);
    let initrd_path = guest_dir().join("initramfs.cpio");
    let r = boot(
        &hv,
        &BootSpec {
            kernel: &kernel_path,
            initrd: Some(&initrd_path),
            cmdline: CMDLINE,
            mem_mib: 256,
            vcpus,
            prefer_pvh,
            timeout: timeout(kernel),
        },
    );
    println!(
        "boot {kernel} pvh={prefer_pvh} vcpus={vcpus}: {:.1?} total, Linux banner {:.1?}, READY {:.1?}, DONE {:.1?}, reset={}, last exit: {}",
        r.elapsed, r.t_linux, r.t_ready, r.t_done, r.reset, r.last_exit
    );
    let report = format!(
        "last exit: {}\n--- last console lines ---\n{}",
        r.last_exit,
        tail(&r.console, 25)
    );
    assert!(r.console.contains("SQUIB-GUEST-READY"), "{report}");
    assert!(r.console.contains("SQUIB-GUEST-DONE"), "{report}");
    assert!(r.reset, "{report}");
    let cpus = format!("cpus={vcpus} ");
    assert!(
        r.console.contains(&cpus),
        "guest saw another CPU count\n{report}"
    );
}

#[test]
fn test_boot_vmlinux_linux_64bit_entry() {
    boot_and_check("vmlinux", false, 1);
}

// PVH, bzImage and 2-vCPU Linux boots are proven through the real VMM path by
// `apps/squib-cli/tests/boot_linux.rs` (driven through the API / `--config-file`); this crate
// keeps one backend-level Linux smoke so a backend regression is caught below the VMM.
