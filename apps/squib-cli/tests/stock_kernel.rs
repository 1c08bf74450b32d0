//! Opt-in E2E (`SQUIB_STOCK_KERNEL=1`): Debian bookworm's stock `linux-image-*-cloud-amd64`
//! kernel boots to user space under squib. `scripts/stock-kernel.sh` downloads the kernel and
//! busybox-static with `apt-get download` and builds a busybox initramfs whose `/init` prints
//! `STOCK-USERSPACE-OK`, loads virtio/virtio_ring/virtio_mmio/virtio_blk from the kernel package
//! (virtio-mmio found through the ACPI `LNRO0005` nodes: the stock kernel has no
//! `virtio_mmio.device=` support), lists the devices and reboots.
//!
//! On a nested `kvm_pvm` host this needs squib's PVM profile (command-line additions) and the
//! VMM-side instruction emulation (`pvm_emulation` metrics); the test prints what was emulated
//! and how long the boot took. Boots take many minutes there (whole-guest emulation): the limit
//! is 45 min. The second test boots the project's freestanding test guest with the same binary
//! and proves the profile leaves a normal boot alone: same scenario result, no emulation, and
//! the command line grows by the profile's tokens only on kvm_pvm hosts.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{Squib, kvm_or_skip, repo_root, test_guest, tmp_path};

const GATE: &str = "SQUIB_STOCK_KERNEL";
const BOOT_LIMIT: Duration = Duration::from_secs(45 * 60);
/// The tokens squib_arch::pvm::PVM_CMDLINE_ADDITIONS appends on kvm_pvm hosts.
const PVM_TOKENS: &[&str] = &[
    "noxsave",
    "nofsgsbase",
    "clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid,pni,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni",
    "percpu_alloc=page",
    "cryptomgr.notests",
];

fn is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

fn gate() -> bool {
    if std::env::var(GATE).as_deref() != Ok("1") {
        println!("SKIPPED: set {GATE}=1 to download and boot Debian's stock cloud kernel (slow)");
        return false;
    }
    kvm_or_skip()
}

fn assets() -> PathBuf {
    let out = repo_root().join("target/stock-kernel");
    let started = Instant::now();
    let status = Command::new("sh")
        .arg(repo_root().join("scripts/stock-kernel.sh"))
        .arg(&out)
        .status()
        .expect("run scripts/stock-kernel.sh");
    assert!(status.success(), "scripts/stock-kernel.sh failed");
    println!("stock kernel assets ready in {:?}", started.elapsed());
    out
}

fn metrics_groups(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn test_debian_cloud_kernel_reaches_user_space() {
    if !gate() {
        return;
    }
    let dir = assets();
    let disk = tmp_path("stock.img");
    std::fs::write(&disk, vec![0u8; 8 << 20]).expect("disk");
    let metrics = tmp_path("stock.metrics");
    let config = tmp_path("stock.json");
    let doc = serde_json::json!({
        "boot-source": {
            "kernel_image_path": dir.join("vmlinux"),
            "initrd_path": dir.join("initramfs.cpio"),
            "boot_args": "console=ttyS0 reboot=k panic=1 nowatchdog"
        },
        "drives": [{"drive_id": "data", "path_on_host": disk, "is_root_device": false,
                    "is_read_only": false}],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 512},
        "metrics": {"metrics_path": metrics}
    });
    std::fs::write(&config, doc.to_string()).expect("config");
    let started = Instant::now();
    let mut squib = Squib::spawn(
        &["--no-api", "--config-file", config.to_str().expect("utf-8")],
        None,
    );
    let code = squib.wait(BOOT_LIMIT);
    let elapsed = started.elapsed();
    let out = squib.output();
    let last = out.lines().rev().take(15).collect::<Vec<_>>();
    println!("boot took {elapsed:?}, exit code {code:?}; last lines (newest first):");
    for l in &last {
        println!("  {l}");
    }
    for line in out.lines().filter(|l| l.contains("emulated ")) {
        println!("  {line}");
    }
    let _ = squib.child.kill();
    let _ = std::fs::remove_file(&disk);
    assert!(
        out.contains("STOCK-USERSPACE-OK"),
        "the stock kernel did not reach /init within {BOOT_LIMIT:?}"
    );
    assert!(
        out.contains("STOCK-MODULE virtio_mmio"),
        "virtio_mmio loaded"
    );
    assert!(
        out.contains("STOCK-DISK vda sectors=16384"),
        "virtio-blk found via ACPI"
    );
    let cmdline = out
        .lines()
        .find_map(|l| l.split_once("STOCK-CMDLINE ").map(|(_, c)| c.to_owned()))
        .expect("STOCK-CMDLINE line");
    for token in PVM_TOKENS {
        assert_eq!(
            cmdline.split_whitespace().any(|t| t == *token),
            is_pvm(),
            "profile token {token} present only on kvm_pvm hosts: {cmdline}"
        );
    }
    assert!(out.contains("STOCK-DONE"));
    assert_eq!(code, Some(0), "reboot → exit 0");
    let emulated: Vec<_> = metrics_groups(&metrics)
        .into_iter()
        .filter_map(|m| m.get("pvm_emulation").cloned())
        .collect();
    println!("pvm_emulation metric lines: {emulated:?}");
    let _ = std::fs::remove_file(&metrics);
}

#[test]
fn test_pvm_profile_leaves_a_normal_boot_alone() {
    if !gate() {
        return;
    }
    let metrics = tmp_path("hello.metrics");
    let base = "console=ttyS0 squibtest=hello";
    let mut squib = Squib::spawn(
        &[
            "--no-api",
            "--config-file",
            write_hello_config(base, &metrics).to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(squib.wait(Duration::from_secs(120)), Some(0));
    let out = squib.output();
    assert!(out.contains("SQUIBTEST END hello"), "{out}");
    assert!(!out.contains("TEST fail"), "{out}");
    // The guest sees `base pci=off` plus the profile's tokens on kvm_pvm hosts only.
    let mut expected = format!("{base} pci=off").len();
    if is_pvm() {
        expected += PVM_TOKENS.iter().map(|t| t.len() + 1).sum::<usize>();
    }
    assert!(
        out.contains(&format!("TEST info cmdline_len={expected}")),
        "{out}"
    );
    for m in metrics_groups(&metrics) {
        assert!(m.get("pvm_emulation").is_none(), "nothing emulated: {m}");
    }
    let _ = std::fs::remove_file(&metrics);
}

fn write_hello_config(boot_args: &str, metrics: &Path) -> PathBuf {
    let config = tmp_path("hello.json");
    let doc = serde_json::json!({
        "boot-source": {"kernel_image_path": test_guest(), "boot_args": boot_args},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "metrics": {"metrics_path": metrics}
    });
    std::fs::write(&config, doc.to_string()).expect("config");
    config
}
