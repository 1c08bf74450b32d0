//! Real-KVM tests of what CPU templates need from the backend: capability requirements (at VM
//! creation and carried through the VM state blob) and MSR probing.

mod common;

use common::hypervisor_or_skip;
use squib_hv::{CapabilityModifier, HvError, Hypervisor, MsrEntry, VmConfig};

/// `IA32_PAT` and its architectural reset value.
const MSR_PAT: u32 = 0x277;
const PAT_RESET: u64 = 0x0007_0406_0007_0406;

#[test]
fn test_create_vm_checks_template_capabilities() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let cfg = |caps| VmConfig {
        vcpu_count: 1,
        capabilities: caps,
    };
    let err = hv
        .create_vm(&cfg(vec![CapabilityModifier::Add(9999)]))
        .unwrap_err();
    assert!(matches!(err, HvError::MissingCapability(9999)), "{err}");
    // Removing a capability nobody has, or a default one, is fine.
    hv.create_vm(&cfg(vec![
        CapabilityModifier::Remove(9999),
        CapabilityModifier::Remove(squib_kvm::DEFAULT_CAPABILITIES[11]),
    ]))
    .unwrap();
    // Adding one the host has (KVM_CAP_IRQCHIP = 0) is fine too.
    hv.create_vm(&cfg(vec![CapabilityModifier::Add(0)]))
        .unwrap();
}

#[test]
fn test_vm_state_carries_capabilities_and_restore_checks_them() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let vm1 = hv
        .create_vm(&VmConfig {
            vcpu_count: 1,
            capabilities: vec![CapabilityModifier::Remove(9999)],
        })
        .unwrap();
    vm1.setup_platform().unwrap();
    let saved = vm1.save_state().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&saved.data).unwrap();
    assert_eq!(v["capabilities"], serde_json::json!([{"Remove": 9999}]));

    let vm2 = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm2.setup_platform().unwrap();
    vm2.restore_state(&saved).unwrap();
    // The restored VM saves the same requirements again.
    let again: serde_json::Value = serde_json::from_slice(&vm2.save_state().unwrap().data).unwrap();
    assert_eq!(again["capabilities"], v["capabilities"]);

    // A snapshot that requires a capability this host lacks is refused.
    v["capabilities"] = serde_json::json!([{"Add": 9999}]);
    let mut bad = saved.clone();
    bad.data = serde_json::to_vec(&v).unwrap();
    let err = vm2.restore_state(&bad).unwrap_err();
    assert!(matches!(err, HvError::MissingCapability(9999)), "{err}");
    // Blobs written before capabilities were saved still restore.
    v.as_object_mut().unwrap().remove("capabilities");
    bad.data = serde_json::to_vec(&v).unwrap();
    vm2.restore_state(&bad).unwrap();
}

#[test]
fn test_probe_msrs_reads_a_fresh_vcpu_and_stops_at_the_first_unreadable() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let x86 = hv.as_x86().unwrap();
    let cpuid = x86.supported_cpuid().unwrap();
    let got = x86.probe_msrs(&cpuid, &[MSR_PAT]).unwrap();
    assert_eq!(
        got,
        vec![MsrEntry {
            index: MSR_PAT,
            value: PAT_RESET
        }]
    );
    // 0x12345 is no MSR: reading stops there (Firecracker then reports it).
    let got = x86
        .probe_msrs(&cpuid, &[MSR_PAT, 0x12345, MSR_PAT])
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(x86.probe_msrs(&cpuid, &[]).unwrap().is_empty());
}
