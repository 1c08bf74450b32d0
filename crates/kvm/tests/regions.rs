//! Real-KVM tests of `Vm::add_region` / `Vm::remove_region` (pmem windows, virtio-mem slots):
//! a read-only region serves reads and turns writes into MMIO exits; a writable one is plain
//! memory; a removed one is gone. Prints `SKIPPED: no /dev/kvm` without KVM.

mod common;

use std::sync::Arc;

use common::{RecordingIo, hypervisor_or_skip, memory_with_code, real_mode};
use squib_core::GuestRegionMmap;
use squib_hv::{Hypervisor, RegionSlot, VcpuExit, VmConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryRegion};

const CODE: u64 = 0x1000;
const CODE2: u64 = 0x1100;
const RO: u64 = 0x3000;
const RW: u64 = 0x4000;

fn run_to_halt(vcpu: &mut dyn squib_hv::Vcpu, io: &mut RecordingIo) -> VcpuExit {
    for _ in 0..1000 {
        match vcpu.run(io).unwrap() {
            VcpuExit::Handled | VcpuExit::Interrupted => {}
            other => return other,
        }
    }
    panic!("guest did not stop within 1000 exits");
}

fn region(addr: u64) -> Arc<GuestRegionMmap> {
    Arc::new(GuestRegionMmap::from_range(GuestAddress(addr), 0x1000, None).unwrap())
}

#[test]
fn test_read_only_and_writable_regions_then_removal() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03,             // mov dx, 0x3f8
        0xa1, 0x00, 0x30,             // mov ax, [0x3000]     (read-only region: memory)
        0xef,                         // out dx, ax
        0xc7, 0x06, 0x00, 0x30, 0x78, 0x56, // mov word [0x3000], 0x5678 (MMIO exit)
        0xa1, 0x00, 0x30,             // mov ax, [0x3000]     (unchanged)
        0xef,                         // out dx, ax
        0xc7, 0x06, 0x00, 0x40, 0xcd, 0xab, // mov word [0x4000], 0xabcd (writable region)
        0xf4,                         // hlt
    ];
    #[rustfmt::skip]
    let code2 = [
        0xa1, 0x00, 0x40,             // mov ax, [0x4000]     (removed: MMIO read)
        0xba, 0xf8, 0x03,             // mov dx, 0x3f8
        0xef,                         // out dx, ax
        0xf4,                         // hlt
    ];
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    let mem = memory_with_code(0x2000, CODE, &code);
    mem.write_slice(&code2, GuestAddress(CODE2)).unwrap();
    vm.map_memory(&mem).unwrap();
    let ro = region(RO);
    ro.write_obj(0x1234u16, ro.to_region_addr(GuestAddress(RO)).unwrap())
        .unwrap();
    let rw = region(RW);
    let ro_slot = vm.add_region(Arc::clone(&ro), 0, 0x1000, true).unwrap();
    let rw_slot = vm.add_region(Arc::clone(&rw), 0, 0x1000, false).unwrap();
    assert_ne!(ro_slot, rw_slot);

    let mut vcpu = vm.create_vcpu(0).unwrap();
    real_mode(vcpu.as_mut(), CODE, 0);
    let mut io = RecordingIo {
        mmio_value: 0x9999,
        ..Default::default()
    };
    assert_eq!(run_to_halt(vcpu.as_mut(), &mut io), VcpuExit::Halted);
    assert_eq!(
        io.pio_writes,
        vec![(0x3f8, vec![0x34, 0x12]), (0x3f8, vec![0x34, 0x12])]
    );
    assert_eq!(io.mmio_writes, vec![(RO, vec![0x78, 0x56])]);
    let ro_val: u16 = ro
        .read_obj(ro.to_region_addr(GuestAddress(RO)).unwrap())
        .unwrap();
    assert_eq!(
        ro_val, 0x1234,
        "a guest write never reaches a read-only region"
    );
    let rw_val: u16 = rw
        .read_obj(rw.to_region_addr(GuestAddress(RW)).unwrap())
        .unwrap();
    assert_eq!(rw_val, 0xabcd);

    vm.remove_region(rw_slot).unwrap();
    assert!(vm.remove_region(rw_slot).is_err(), "already removed");
    assert!(vm.remove_region(RegionSlot(999)).is_err());
    real_mode(vcpu.as_mut(), CODE2, 0);
    let mut io = RecordingIo {
        mmio_value: 0x4242,
        ..Default::default()
    };
    assert_eq!(run_to_halt(vcpu.as_mut(), &mut io), VcpuExit::Halted);
    assert_eq!(io.mmio_reads, vec![RW]);
    assert_eq!(io.pio_writes, vec![(0x3f8, vec![0x42, 0x42])]);
    // The slot number is reused.
    assert_eq!(
        vm.add_region(region(RW), 0, 0x1000, false).unwrap(),
        rw_slot
    );
    assert!(
        vm.add_region(region(RW), 0x1000, 0x1000, false).is_err(),
        "outside"
    );
    assert!(
        vm.add_region(region(RW), 0, 0x800, false).is_err(),
        "unaligned"
    );
    assert_eq!(rw.len(), 0x1000);
}
