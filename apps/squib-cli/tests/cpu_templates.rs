//! End-to-end CPU templates through the `squib` binary: what the test guest's `cpuid` scenario
//! sees with a custom template (config file with a template path, and `PUT /cpu-config`), on
//! every vCPU, after a snapshot restore; static templates on this host's vendor (or their
//! exact refusal); and Firecracker's error texts for templates the host cannot honour.
//!
//! The custom template is built from what the guest sees without one, and only touches bits
//! KVM lets a guest see on every host, nested `kvm_pvm` included: there, guest CPUID is partly
//! the host's (`../shared/reference/guest-notes.md`: XSAVE, POPCNT, SMAP come back), and leaf
//! 0x7 and most of leaf 0x1 ECX do not follow KVM's table. Measured with Firecracker 1.17 on
//! such a host: leaf 0x1 ECX[13], leaf 0x6, leaf 0x80000001 ECX/EDX and leaf 0x80000008 EBX
//! do, and so does `IA32_PAT`.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::{Squib, kvm_or_skip, test_guest, tmp_path, wait_for};
use serde_json::{Value, json};

/// `IA32_PAT`: readable by every guest, accepted by KVM with any valid memory types.
const MSR_PAT: u32 = 0x277;
const TICK_SHIFT: u32 = 14;

type Leaves = BTreeMap<(u32, u32), [u32; 4]>;

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// `CPUID 0x1.0 eax=.. ebx=.. ecx=.. edx=..` lines.
fn leaves(out: &str) -> Leaves {
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("CPUID ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (leaf, sub) = parts.next().unwrap().split_once('.').unwrap();
        let leaf = u32::try_from(hex(leaf).unwrap()).unwrap();
        let sub = u32::from_str_radix(sub, 16).unwrap();
        let regs: Vec<u32> = parts
            .map(|kv| u32::try_from(hex(kv.split_once('=').unwrap().1).unwrap()).unwrap())
            .collect();
        map.insert((leaf, sub), regs.try_into().unwrap());
    }
    map
}

/// `MSR 0x277 value=..` lines.
fn msrs(out: &str) -> BTreeMap<u32, u64> {
    out.lines()
        .filter_map(|l| {
            let (idx, val) = l.strip_prefix("MSR ")?.split_once(" value=")?;
            Some((u32::try_from(hex(idx)?).ok()?, hex(val)?))
        })
        .collect()
}

/// `FINGERPRINT apic=N 0x..` lines: one per vCPU.
fn fingerprints(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            Some(
                l.strip_prefix("FINGERPRINT ")?
                    .split_once(' ')?
                    .1
                    .to_owned(),
            )
        })
        .collect()
}

fn boot_args(extra: &str) -> String {
    format!("console=ttyS0 reboot=k panic=1 squibtest=cpuid squibtest.msr={MSR_PAT:#x} {extra}")
}

/// Boots the `cpuid` scenario from a config document (`--no-api`); returns the serial output
/// (the log goes to its own file so that it cannot interleave with the guest's lines).
fn run_config(vcpus: u8, cpu_config: Option<Value>) -> String {
    let mut doc = json!({
        "boot-source": {"kernel_image_path": test_guest(), "boot_args": boot_args("")},
        "drives": [],
        "machine-config": {"vcpu_count": vcpus, "mem_size_mib": 128},
    });
    if let Some(c) = cpu_config {
        doc["cpu-config"] = c;
    }
    let path = tmp_path("cpuid.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let log = tmp_path("cpuid.log");
    let mut vm = Squib::spawn(
        &[
            "--no-api",
            "--config-file",
            path.to_str().unwrap(),
            "--log-path",
            log.to_str().unwrap(),
        ],
        None,
    );
    let code = vm.wait(Duration::from_secs(60));
    let out = vm.output();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(0), "{out}\n{logged}");
    assert!(out.contains("TEST ok cpuid"), "{out}");
    out
}

/// A started API process with boot source and machine config in place.
fn api_vm(vcpus: u8, extra_args: &str, serial: Option<&Path>) -> Squib {
    let vm = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    if let Some(serial) = serial {
        let body = json!({ "serial_out_path": serial }).to_string();
        assert_eq!(vm.api("PUT", "/serial", Some(&body)).0, 204);
    }
    let bs = json!({"kernel_image_path": test_guest(), "boot_args": boot_args(extra_args)});
    assert_eq!(vm.api("PUT", "/boot-source", Some(&bs.to_string())).0, 204);
    let mc = json!({"vcpu_count": vcpus, "mem_size_mib": 128}).to_string();
    assert_eq!(vm.api("PUT", "/machine-config", Some(&mc)).0, 204);
    vm
}

fn start(vm: &Squib) -> (u16, String) {
    vm.api(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    )
}

/// One register change: bits to clear and bits to set.
struct Change {
    leaf: u32,
    reg: usize,
    clear: u32,
    set: u32,
}

const CHANGES: [Change; 6] = [
    // CMPXCHG16B off.
    Change {
        leaf: 0x1,
        reg: 2,
        clear: 1 << 13,
        set: 0,
    },
    // Power management: ARAT off, digital thermal sensor on; hardware coordination feedback on.
    Change {
        leaf: 0x6,
        reg: 0,
        clear: 1 << 2,
        set: 1,
    },
    Change {
        leaf: 0x6,
        reg: 2,
        clear: 0,
        set: 1,
    },
    // LAHF/SAHF and PREFETCHW off; NX off.
    Change {
        leaf: 0x8000_0001,
        reg: 2,
        clear: (1 << 8) | 1,
        set: 0,
    },
    Change {
        leaf: 0x8000_0001,
        reg: 3,
        clear: 1 << 20,
        set: 0,
    },
    // WBNOINVD on.
    Change {
        leaf: 0x8000_0008,
        reg: 1,
        clear: 0,
        set: 1 << 9,
    },
];

const REG_NAMES: [&str; 4] = ["eax", "ebx", "ecx", "edx"];

/// PAT entry 7 (bits 63:56) → WP (5).
const PAT_FILTER: u64 = 0xff00_0000_0000_0000;
const PAT_VALUE: u64 = 0x0500_0000_0000_0000;

fn bitmap(clear: u32, set: u32) -> String {
    (0..32)
        .rev()
        .map(|b| match (clear >> b & 1, set >> b & 1) {
            (_, 1) => '1',
            (1, _) => '0',
            _ => 'x',
        })
        .collect::<String>()
}

/// The custom template (JSON) for the leaves `baseline` has, and the leaves the guest should
/// then see (Firecracker's semantics: `(v & !filter) | value` per register).
fn template_for(baseline: &Leaves) -> (Value, Leaves) {
    let mut expected = baseline.clone();
    let mut by_leaf: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    for c in CHANGES
        .iter()
        .filter(|c| baseline.contains_key(&(c.leaf, 0)))
    {
        let regs = expected.get_mut(&(c.leaf, 0)).unwrap();
        regs[c.reg] = (regs[c.reg] & !c.clear) | c.set;
        by_leaf.entry(c.leaf).or_default().push(json!({
            "register": REG_NAMES[c.reg],
            "bitmap": format!("0b{}", bitmap(c.clear, c.set)),
        }));
    }
    let cpuid: Vec<Value> = by_leaf
        .into_iter()
        .map(|(leaf, modifiers)| {
            json!({"leaf": format!("{leaf:#x}"), "subleaf": "0x0", "flags": 0, "modifiers": modifiers})
        })
        .collect();
    let pat = format!("0b{}{}", "00000101", "x".repeat(56));
    let template = json!({
        "kvm_capabilities": ["!56"],
        "cpuid_modifiers": cpuid,
        "msr_modifiers": [{"addr": format!("{MSR_PAT:#x}"), "bitmap": pat}],
    });
    (template, expected)
}

fn assert_sees(out: &str, expected: &Leaves, pat: u64) {
    let seen = leaves(out);
    for (key, want) in expected {
        assert_eq!(
            seen.get(key),
            Some(want),
            "leaf {:#x}.{:x}: the guest sees {:x?}, the template asks for {want:x?}\n{out}",
            key.0,
            key.1,
            seen.get(key)
        );
    }
    assert_eq!(msrs(out).get(&MSR_PAT), Some(&pat), "{out}");
}

#[test]
fn test_custom_template_is_what_every_vcpu_sees() {
    if !kvm_or_skip() {
        return;
    }
    let baseline_out = run_config(2, None);
    let baseline = leaves(&baseline_out);
    assert!(baseline.contains_key(&(0x1, 0)), "{baseline_out}");
    let base_pat = msrs(&baseline_out)[&MSR_PAT];
    let base_fp = fingerprints(&baseline_out);
    assert_eq!(base_fp.len(), 2, "{baseline_out}");
    let (template, expected) = template_for(&baseline);
    let want_pat = (base_pat & !PAT_FILTER) | PAT_VALUE;
    assert_ne!(
        expected, baseline,
        "the template must change something visible"
    );

    // Config file, template given as a file path (Firecracker resolves it from the cwd).
    let tpl_path = tmp_path("template.json");
    std::fs::write(&tpl_path, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    let out = run_config(2, Some(json!(tpl_path)));
    assert_sees(&out, &expected, want_pat);
    let fp = fingerprints(&out);
    assert_eq!(fp.len(), 2, "{out}");
    assert_eq!(fp[0], fp[1], "every vCPU sees the templated CPUID: {out}");
    assert_ne!(fp[0], base_fp[0], "{out}");

    // Inline in the config file.
    let out = run_config(2, Some(template.clone()));
    assert_sees(&out, &expected, want_pat);
    assert_eq!(fingerprints(&out), fp);

    // Through the API.
    let serial = tmp_path("serial.log");
    let mut vm = api_vm(2, "", Some(&serial));
    let (s, b) = vm.api("PUT", "/cpu-config", Some(&template.to_string()));
    assert_eq!(s, 204, "{b}");
    let (s, b) = start(&vm);
    assert_eq!(s, 204, "{b}");
    assert_eq!(vm.wait(Duration::from_secs(60)), Some(0), "{}", vm.output());
    let out = std::fs::read_to_string(&serial).unwrap();
    assert_sees(&out, &expected, want_pat);
    assert_eq!(fingerprints(&out), fp);
}

#[test]
fn test_snapshot_restore_keeps_the_templated_cpu() {
    if !kvm_or_skip() {
        return;
    }
    let baseline_out = run_config(1, None);
    let baseline = leaves(&baseline_out);
    let base_fp = fingerprints(&baseline_out);
    let (template, _) = template_for(&baseline);
    let serial1 = tmp_path("serial1.log");
    let extra = format!("squibtest.cpuid_watch=1 squibtest.tick_shift={TICK_SHIFT}");
    let mut vm1 = api_vm(1, &extra, Some(&serial1));
    assert_eq!(
        vm1.api("PUT", "/cpu-config", Some(&template.to_string())).0,
        204
    );
    let (s, b) = start(&vm1);
    assert_eq!(s, 204, "{b}");
    // Complete `WATCH <n> fp=.. msr0x277=..` lines, without their counter.
    let watch = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter_map(|l| {
                let l = l.strip_suffix('\n')?;
                Some(l.strip_prefix("WATCH ")?.split_once(' ')?.1.to_owned())
            })
            .collect()
    };
    let first = wait_for(Duration::from_secs(60), || watch(&serial1).first().cloned())
        .expect("the guest never printed a WATCH line");
    let fp = fingerprints(&std::fs::read_to_string(&serial1).unwrap());
    assert!(
        first.contains(&format!("fp={}", fp.first().map_or("?", String::as_str))),
        "{first}"
    );
    assert!(first.contains("msr0x277=0x0507"), "{first}");
    assert!(!first.contains(&format!("fp={} ", base_fp[0])), "{first}");
    assert_eq!(
        vm1.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)).0,
        204
    );
    let (state, mem) = (tmp_path("tpl.state"), tmp_path("tpl.mem"));
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let (s, b) = vm1.api("PUT", "/snapshot/create", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}");
    let _ = vm1.child.kill();
    let _ = vm1.wait(Duration::from_secs(5));

    // A fresh process restores without any template configured: the vCPU state carries it.
    let serial2 = tmp_path("serial2.log");
    let vm2 = Squib::spawn(&[], Some(&tmp_path("api.sock")));
    let body = json!({ "serial_out_path": serial2 }).to_string();
    assert_eq!(vm2.api("PUT", "/serial", Some(&body)).0, 204);
    let body = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
    });
    let (s, b) = vm2.api("PUT", "/snapshot/load", Some(&body.to_string()));
    assert_eq!(s, 204, "{b}\n{}", vm2.output());
    let after = wait_for(Duration::from_secs(60), || watch(&serial2).first().cloned())
        .expect("the restored guest never printed a WATCH line");
    assert_eq!(
        after, first,
        "the restored vCPU sees the templated CPUID and MSR"
    );
}

/// The host CPU as the guest reports it without a template (leaf 0 vendor, leaf 1 signature).
fn host_vendor_and_signature(baseline: &Leaves) -> (String, u32) {
    let l0 = baseline[&(0, 0)];
    let vendor: Vec<u8> = [l0[1], l0[3], l0[2]]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    (
        String::from_utf8_lossy(&vendor).into_owned(),
        baseline[&(1, 0)][0] & 0x0fff_0fff,
    )
}

const VENDOR_TEXT: &str = "Start microvm error: Failed to get CPU template: CPU vendor mismatched between actual CPU and CPU template.";
const MODEL_TEXT: &str = "Start microvm error: Failed to get CPU template: The current CPU model is not permitted to apply the CPU template.";

#[test]
fn test_static_templates_on_this_hosts_vendor() {
    if !kvm_or_skip() {
        return;
    }
    let baseline = leaves(&run_config(1, None));
    let (vendor, signature) = host_vendor_and_signature(&baseline);
    // Firecracker's tables: Skylake, Cascade Lake, Ice Lake (Intel); Milan (AMD).
    let (matching, other, models): (&[&str], &str, &[u32]) = match vendor.as_str() {
        "GenuineIntel" => (
            &["T2", "C3"],
            "T2A",
            &[0x0005_0654, 0x0005_0657, 0x0006_06a6],
        ),
        "AuthenticAMD" => (&["T2A"], "T2", &[0x00a0_0f11]),
        v => {
            println!("SKIPPED: static templates need an Intel or AMD host, not {v}");
            return;
        }
    };
    // The other vendor's template is refused with Firecracker's text.
    let vm = api_vm(1, "", None);
    let body = json!({"cpu_template": other}).to_string();
    assert_eq!(vm.api("PATCH", "/machine-config", Some(&body)).0, 204);
    let (s, b) = start(&vm);
    assert_eq!(
        (s, b),
        (400, format!(r#"{{"fault_message":"{VENDOR_TEXT}"}}"#))
    );
    drop(vm);

    for name in matching {
        let serial = tmp_path("static.log");
        let mut vm = api_vm(1, "", Some(&serial));
        let body = json!({"cpu_template": name}).to_string();
        assert_eq!(vm.api("PATCH", "/machine-config", Some(&body)).0, 204);
        let (s, b) = start(&vm);
        if !models.contains(&signature) {
            assert_eq!(
                (s, b),
                (400, format!(r#"{{"fault_message":"{MODEL_TEXT}"}}"#))
            );
            println!(
                "SKIPPED: booting static template {name}: this {vendor} CPU (signature {signature:#x}) is not a model Firecracker allows it on; its refusal was checked"
            );
            continue;
        }
        assert_eq!(s, 204, "{b}");
        assert_eq!(vm.wait(Duration::from_secs(60)), Some(0), "{}", vm.output());
        let seen = leaves(&std::fs::read_to_string(&serial).unwrap());
        // T2/C3/T2A all rewrite leaf 1 EAX (family/model/stepping) outright.
        assert_ne!(seen[&(1, 0)][0], baseline[&(1, 0)][0], "{name}");
    }
}

#[test]
fn test_templates_the_host_cannot_honour_fail_with_firecracker_texts() {
    if !kvm_or_skip() {
        return;
    }
    let cases = [
        (
            json!({"kvm_capabilities": ["9999"]}),
            "Start microvm error: Kvm error: Missing KVM capabilities: 0x270f",
        ),
        (
            json!({"cpuid_modifiers": [{"leaf": "0x99", "subleaf": "0x0", "flags": 0, "modifiers": []}]}),
            "Start microvm error: System configuration error: Failed to create guest config: Template changes a CPUID entry not supported by KVM: Leaf: 99, Subleaf: 0",
        ),
        (
            json!({"msr_modifiers": [{"addr": "0x12345", "bitmap": "0b1"}]}),
            "Start microvm error: System configuration error: Failed to create guest config: KVM vcpu ioctl failed: Failed to get KVM vcpu msr: 0x12345",
        ),
    ];
    for (template, text) in cases {
        let vm = api_vm(1, "", None);
        assert_eq!(
            vm.api("PUT", "/cpu-config", Some(&template.to_string())).0,
            204
        );
        let (s, b) = start(&vm);
        assert_eq!(
            (s, b),
            (400, format!(r#"{{"fault_message":"{text}"}}"#)),
            "{template}"
        );
        // A failed start is not fatal: without the template the same process boots.
        let (s, b) = vm.api(
            "PATCH",
            "/machine-config",
            Some(r#"{"cpu_template":"None"}"#),
        );
        assert_eq!(s, 204, "{b}");
        let (s, b) = start(&vm);
        assert_eq!(s, 204, "{b}\n{}", vm.output());
    }
}
