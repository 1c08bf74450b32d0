//! Real-KVM tests of VM-level snapshot state (PIC, IOAPIC, PIT, kvmclock) and the dirty log.

mod common;

use common::{RecordingIo, hypervisor_or_skip, memory_with_code, real_mode};
use squib_hv::{Hypervisor, VcpuExit, VmConfig, VmStateBlob};

const CODE: u64 = 0x1000;

/// The interrupt-controller part of a blob (the PIT's channel load times and the clock are
/// host timestamps that move on by themselves).
fn without_clock(blob: &VmStateBlob) -> String {
    let mut v: serde_json::Value = serde_json::from_slice(&blob.data).unwrap();
    let o = v.as_object_mut().unwrap();
    assert!(o.remove("clock").is_some() && o.remove("pit").is_some());
    v.to_string()
}

#[test]
fn test_vm_state_round_trip_in_a_new_vm() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let vm1 = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm1.setup_platform().unwrap();
    // Leave a visible trace in the IOAPIC (a raised level-triggered line).
    vm1.set_irq_line(10, true).unwrap();
    let saved = vm1.save_state().unwrap();
    assert_eq!((saved.backend.as_str(), saved.version), ("kvm", 1));

    let vm2 = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm2.setup_platform().unwrap();
    let fresh = vm2.save_state().unwrap();
    assert!(
        without_clock(&fresh) != without_clock(&saved),
        "the trace is visible"
    );
    vm2.restore_state(&saved).unwrap();
    let again = vm2.save_state().unwrap();
    assert!(
        without_clock(&again) == without_clock(&saved),
        "restored state differs"
    );

    // Garbage, foreign and truncated blobs are errors, not panics.
    let mut bad = saved.clone();
    bad.data.truncate(bad.data.len() / 2);
    assert!(vm2.restore_state(&bad).is_err());
    let mut bad = saved.clone();
    bad.backend = "hvf".into();
    assert!(vm2.restore_state(&bad).is_err());
    let mut bad = saved;
    bad.data = b"{}".to_vec();
    assert!(vm2.restore_state(&bad).is_err());
}

#[test]
fn test_dirty_log_sees_guest_writes_and_clears() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xb0, 0x5a,             // mov al, 0x5a
        0xa2, 0x00, 0x30,       // mov [0x3000], al
        0xe6, 0x80,             // out 0x80, al
        0xa2, 0x00, 0x50,       // mov [0x5000], al
        0xe6, 0x80,             // out 0x80, al
        0xeb, 0xfe,             // jmp $
    ];
    let mem = memory_with_code(0x8000, CODE, &code);
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm.setup_platform().unwrap();
    assert!(vm.dirty_log().is_err(), "not enabled yet");
    vm.map_memory(&mem).unwrap();
    vm.enable_dirty_log().unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    real_mode(vcpu.as_mut(), CODE, 0);
    let mut io = RecordingIo::default();
    assert_eq!(vcpu.run(&mut io).unwrap(), VcpuExit::Handled);
    let log = vm.dirty_log().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].len(), 1, "8 pages fit one word");
    assert_ne!(log[0][0] & (1 << 3), 0, "page 3 written: {:#b}", log[0][0]);
    assert_eq!(log[0][0] & (1 << 5), 0);
    assert_eq!(vcpu.run(&mut io).unwrap(), VcpuExit::Handled);
    let log = vm.dirty_log().unwrap();
    assert_ne!(log[0][0] & (1 << 5), 0, "page 5 written: {:#b}", log[0][0]);
    assert_eq!(log[0][0] & (1 << 3), 0, "the first read cleared page 3");
}
