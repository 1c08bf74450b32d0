//! Boots squib's freestanding test guest (`guest/`, built with `guest/build.sh`) through the
//! test VMM: fast end-to-end checks of squib-arch's boot data (zero page, PVH start info, MP
//! table) and squib-kvm's exits (reset, triple fault) in milliseconds instead of minutes.
//!
//! Prints `SKIPPED: ...` when there is no `/dev/kvm` or the guest cannot be built.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::hypervisor_or_skip;
use common::vmm::{BootReport, BootSpec, boot, tail};

const TIMEOUT: Duration = Duration::from_secs(60);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the guest once per test process into the target directory; falls back to an
/// existing `target/guest` build. `None` when neither works.
fn guest_artifacts() -> Option<&'static (PathBuf, PathBuf)> {
    static ARTIFACTS: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    ARTIFACTS
        .get_or_init(|| {
            let root = workspace_root();
            let pair = |dir: &Path| {
                let elf = dir.join("squib-test-guest.elf");
                let pvh = dir.join("squib-test-guest-pvh.elf");
                (elf.exists() && pvh.exists()).then_some((elf, pvh))
            };
            let out = root.join("target/squib-kvm-test-guest");
            let script = root.join("guest/build.sh");
            if script.exists() {
                let built = Command::new("bash")
                    .arg(&script)
                    .arg(&out)
                    .output()
                    .is_ok_and(|o| o.status.success());
                if built && let Some(p) = pair(&out) {
                    return Some(p);
                }
            }
            pair(&root.join("target/guest"))
        })
        .as_ref()
}

fn run(scenario: &str, vcpus: u8, pvh: bool) -> Option<BootReport> {
    let hv = hypervisor_or_skip()?;
    let Some((elf, pvh_elf)) = guest_artifacts() else {
        println!("SKIPPED: test guest not built (needs gcc + binutils and guest/build.sh)");
        return None;
    };
    let cmdline = format!("squibtest={scenario} console=ttyS0");
    let r = boot(
        &hv,
        &BootSpec {
            kernel: if pvh { pvh_elf } else { elf },
            initrd: None,
            cmdline: &cmdline,
            mem_mib: 64,
            vcpus,
            prefer_pvh: pvh,
            timeout: TIMEOUT,
        },
    );
    println!(
        "test guest {scenario} vcpus={vcpus} pvh={pvh}: {:.1?}, reset={}, exits: {}",
        r.elapsed, r.reset, r.last_exit
    );
    Some(r)
}

fn report(r: &BootReport) -> String {
    format!(
        "exits: {}\n--- console ---\n{}",
        r.last_exit,
        tail(&r.console, 30)
    )
}

#[test]
fn test_guest_hello_linux64_boot() {
    let Some(r) = run("hello", 1, false) else {
        return;
    };
    assert!(
        r.console.contains("boot=linux64 boot_info=0x7000 valid=1"),
        "{}",
        report(&r)
    );
    assert!(r.console.contains("TEST ok hello"), "{}", report(&r));
    assert!(r.console.contains("SQUIBTEST END hello"), "{}", report(&r));
    assert!(r.reset, "{}", report(&r));
}

#[test]
fn test_guest_hello_pvh_boot() {
    let Some(r) = run("hello", 1, true) else {
        return;
    };
    assert!(
        r.console.contains("boot=pvh boot_info=0x6000 valid=1"),
        "{}",
        report(&r)
    );
    assert!(r.console.contains("TEST ok hello"), "{}", report(&r));
    assert!(r.reset, "{}", report(&r));
}

#[test]
fn test_guest_smp_four_vcpus_found_via_mp_table() {
    let Some(r) = run("smp", 4, false) else {
        return;
    };
    assert!(r.console.contains("mptable_cpus=4"), "{}", report(&r));
    assert!(r.console.contains("mptable_addr=0x9fc00"), "{}", report(&r));
    assert!(r.console.contains("ap_apic_ids=1,2,3"), "{}", report(&r));
    assert!(r.console.contains("TEST ok smp cpus=4"), "{}", report(&r));
    assert!(r.reset, "{}", report(&r));
}

#[test]
fn test_guest_triple_fault_is_a_shutdown_exit() {
    let Some(r) = run("fault", 1, false) else {
        return;
    };
    assert!(
        r.console.contains("fault=triple-fault-next"),
        "{}",
        report(&r)
    );
    assert!(!r.reset, "{}", report(&r));
    assert!(r.last_exit.contains("exit Shutdown"), "{}", report(&r));
}
