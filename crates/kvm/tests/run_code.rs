//! Real-KVM tests with hand-assembled guest code, through the neutral `squib-hv` traits.
//! Each prints `SKIPPED: no /dev/kvm` and returns on hosts without KVM.

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{RecordingIo, hypervisor_or_skip, memory_with_code, real_mode};
use squib_arch::gdt::{write_gdt_idt, write_page_tables};
use squib_arch::{BootProtocol, BootStateConfig, CpuidConfig, x86_boot_state};
use squib_hv::{DataMatch, Hypervisor, IoEventAddress, VcpuExit, Vm, VmConfig};
use squib_kvm::{KvmHypervisor, KvmOptions};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const CODE: u64 = 0x1000;

/// Runs until `Halted` (or a bounded number of exits), returning the final exit.
fn run_to_halt(vcpu: &mut dyn squib_hv::Vcpu, io: &mut RecordingIo) -> VcpuExit {
    for _ in 0..1000 {
        match vcpu.run(io).unwrap() {
            VcpuExit::Handled | VcpuExit::Interrupted => {}
            other => return other,
        }
    }
    panic!("guest did not stop within 1000 exits");
}

#[test]
fn test_real_mode_pio_out_in_completed_through_callbacks() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'h',       // mov al, 'h'
        0xee,             // out dx, al
        0xb0, b'i',       // mov al, 'i'
        0xee,             // out dx, al
        0xec,             // in al, dx        (callback answers 0x5a)
        0x04, 0x01,       // add al, 1
        0xee,             // out dx, al       (0x5b proves IN completion)
        0xba, 0x00, 0x05, // mov dx, 0x500
        0xee,             // out dx, al       (ioeventfd: no callback)
        0xf4,             // hlt
    ];
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    let mem = memory_with_code(0x4000, CODE, &code);
    vm.map_memory(&mem).unwrap();
    let evt = EventFd::new(EFD_NONBLOCK).unwrap();
    vm.register_ioeventfd(&evt, IoEventAddress::Pio(0x500), DataMatch::Any)
        .unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    real_mode(vcpu.as_mut(), CODE, 0);
    let mut io = RecordingIo {
        pio_value: 0x5a,
        ..Default::default()
    };
    assert_eq!(run_to_halt(vcpu.as_mut(), &mut io), VcpuExit::Halted);
    let bytes: Vec<u8> = io.pio_writes.iter().map(|(_, d)| d[0]).collect();
    assert_eq!(bytes, b"hi\x5b");
    assert!(io.pio_writes.iter().all(|(p, _)| *p == 0x3f8));
    assert_eq!(io.pio_reads, vec![0x3f8]);
    assert_eq!(evt.read().unwrap(), 1);
    vm.unregister_ioeventfd(&evt, IoEventAddress::Pio(0x500), DataMatch::Any)
        .unwrap();
}

#[test]
fn test_real_mode_mmio_read_value_supplied_by_callback() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xbb, 0x00, 0x30, // mov bx, 0x3000   (not RAM: MMIO)
        0x8b, 0x07,       // mov ax, [bx]     (callback answers 0xbeef)
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xef,             // out dx, ax
        0x89, 0x47, 0x10, // mov [bx+0x10], ax (MMIO write)
        0xf4,             // hlt
    ];
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    let mem = memory_with_code(0x2000, CODE, &code);
    vm.map_memory(&mem).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    real_mode(vcpu.as_mut(), CODE, 0);
    let mut io = RecordingIo {
        mmio_value: 0xbeef,
        ..Default::default()
    };
    assert_eq!(run_to_halt(vcpu.as_mut(), &mut io), VcpuExit::Halted);
    assert_eq!(io.mmio_reads, vec![0x3000]);
    assert_eq!(io.pio_writes, vec![(0x3f8, vec![0xef, 0xbe])]);
    assert_eq!(io.mmio_writes, vec![(0x3010, vec![0xef, 0xbe])]);
}

#[test]
fn test_long_mode_with_arch_boot_state_and_irqchip() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let entry = 0x10_0000u64;
    #[rustfmt::skip]
    let code = [
        0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
        0x31, 0xc9,                   // xor ecx, ecx
        0x0f, 0xa2,                   // cpuid
        0x89, 0xd8,                   // mov eax, ebx
        0x66, 0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xef,                         // out dx, eax     (leaf 1 EBX)
        0x89, 0xf0,                   // mov eax, esi
        0xef,                         // out dx, eax     (rsi = zero page)
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, imm64
        0x48, 0xc1, 0xe8, 0x20,       // shr rax, 32     (only meaningful in 64-bit mode)
        0xef,                         // out dx, eax
        0x66, 0xba, 0x64, 0x00,       // mov dx, 0x64
        0xb0, 0xfe,                   // mov al, 0xfe
        0xee,                         // out dx, al      (reset)
        0xf4,                         // hlt
        0xeb, 0xfd,                   // jmp hlt
    ];
    let vm = hv.create_kvm_vm(&VmConfig::new(1)).unwrap();
    vm.setup_platform().unwrap();
    let mem = memory_with_code(4 << 20, entry, &code);
    write_gdt_idt(&mem, BootProtocol::LinuxBoot).unwrap();
    write_page_tables(&mem).unwrap();
    vm.map_memory(&mem).unwrap();
    let supported = hv.as_x86().unwrap().supported_cpuid().unwrap();
    let state = x86_boot_state(&BootStateConfig {
        protocol: BootProtocol::LinuxBoot,
        entry: GuestAddress(entry),
        cpuid: CpuidConfig {
            vcpu_index: 0,
            vcpu_count: 1,
            smt: false,
            hide_cx16: false,
        },
        supported_cpuid: &supported,
        template_msrs: &[],
        lapic: true,
    })
    .unwrap();
    let mut vcpu = vm.create_kvm_vcpu(0).unwrap();
    squib_hv::VcpuX86::apply_boot_state(&mut vcpu, &state).unwrap();
    let (lint0, lint1) = vcpu.lapic_lints().unwrap();
    assert_eq!(((lint0 >> 8) & 7, (lint1 >> 8) & 7), (0b111, 0b100));
    assert_eq!(vcpu.msr(0x1a0).unwrap() & 1, 1);

    let mut io = RecordingIo::default();
    let vcpu: &mut dyn squib_hv::Vcpu = &mut vcpu;
    for _ in 0..1000 {
        if io.reset {
            break;
        }
        match vcpu.run(&mut io).unwrap() {
            VcpuExit::Handled | VcpuExit::Interrupted => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
    assert!(io.reset);
    let outs: Vec<u32> = io
        .pio_writes
        .iter()
        .filter(|(p, _)| *p == 0x3f8)
        .map(|(_, d)| u32::from_le_bytes(d.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(outs.len(), 3);
    assert_eq!(outs[0] >> 24, 0, "APIC id of vCPU 0");
    assert_eq!((outs[0] >> 16) & 0xff, 1, "logical CPU count");
    assert_eq!(outs[1], 0x7000);
    assert_eq!(outs[2], 0x1122_3344);
    let regs = vcpu.as_x86().unwrap().regs().unwrap();
    assert!(regs.rip > entry && regs.rip < entry + code.len() as u64);
    let sregs = vcpu.as_x86().unwrap().sregs().unwrap();
    assert!(sregs.cs.l);
}

#[test]
fn test_kick_interrupts_spinning_vcpu() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    let mem = memory_with_code(0x2000, CODE, &[0xeb, 0xfe]); // jmp $
    vm.map_memory(&mem).unwrap();
    let (kicker_tx, kicker_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let vm2 = Arc::clone(&vm);
    let handle = thread::spawn(move || {
        // Created, configured and run on its own thread, as the contract requires.
        let mut vcpu = vm2.create_vcpu(0).unwrap();
        real_mode(vcpu.as_mut(), CODE, 0);
        kicker_tx.send(vcpu.kicker()).unwrap();
        let mut io = RecordingIo::default();
        for _round in 0..2 {
            go_rx.recv().unwrap();
            let exit = loop {
                match vcpu.run(&mut io).unwrap() {
                    VcpuExit::Handled => {}
                    other => break other,
                }
            };
            exit_tx.send(exit).unwrap();
        }
    });
    let kicker = kicker_rx.recv().unwrap();
    for round in 0..2 {
        go_tx.send(()).unwrap();
        // Let the guest spin for a moment (round 1), then kick until the vCPU reports back.
        if round == 1 {
            thread::sleep(Duration::from_millis(50));
        }
        let mut exit = None;
        for _attempt in 0..100 {
            kicker.kick();
            if let Ok(e) = exit_rx.recv_timeout(Duration::from_millis(100)) {
                exit = Some(e);
                break;
            }
        }
        assert_eq!(exit, Some(VcpuExit::Interrupted), "round {round}");
    }
    handle.join().unwrap();
}

#[test]
fn test_two_vcpus_on_their_own_threads() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee,             // out dx, al   (al = vCPU index, set by the test)
        0xf4,             // hlt
    ];
    let vm = hv.create_vm(&VmConfig::new(2)).unwrap();
    let mem = memory_with_code(0x2000, CODE, &code);
    vm.map_memory(&mem).unwrap();
    let handles: Vec<_> = (0..2u32)
        .map(|index| {
            let vm = Arc::clone(&vm);
            thread::spawn(move || {
                let mut vcpu = vm.create_vcpu(index).unwrap();
                assert_eq!(vcpu.index(), index);
                real_mode(vcpu.as_mut(), CODE, u64::from(index) + 0x40);
                let mut io = RecordingIo::default();
                let exit = run_to_halt(vcpu.as_mut(), &mut io);
                (exit, io.pio_writes)
            })
        })
        .collect();
    for (index, h) in (0u8..).zip(handles) {
        let (exit, writes) = h.join().unwrap();
        assert_eq!(exit, VcpuExit::Halted);
        assert_eq!(writes, vec![(0x3f8, vec![0x40 + index])]);
    }
}

#[test]
fn test_capabilities_and_irq_plumbing() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let caps = hv.capabilities();
    assert_eq!(caps.backend, "kvm");
    assert!(caps.irqfd && caps.ioeventfd && caps.immediate_exit);
    assert!(caps.max_vcpus >= 1);
    assert_eq!(caps.emulated_guests, squib_kvm::is_pvm());
    assert!(hv.profile().max_vcpus >= 1);
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm.setup_platform().unwrap();
    let evt = EventFd::new(EFD_NONBLOCK).unwrap();
    vm.register_irqfd(&evt, 4).unwrap();
    vm.unregister_irqfd(&evt, 4).unwrap();
    vm.set_irq_line(4, true).unwrap();
    vm.set_irq_line(4, false).unwrap();
}

#[test]
fn test_save_restore_state_continues_in_a_new_vm() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'a',       // mov al, 'a'
        0xee,             // out dx, al
        0xb0, b'b',       // mov al, 'b'
        0xee,             // out dx, al
        0xba, 0x64, 0x00, // mov dx, 0x64
        0xb0, 0xfe,       // mov al, 0xfe
        0xee,             // out dx, al   (reset)
        0xeb, 0xfe,       // jmp $
    ];
    let mem = memory_with_code(0x4000, CODE, &code);
    let vm1 = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm1.setup_platform().unwrap();
    vm1.map_memory(&mem).unwrap();
    let mut vcpu1 = vm1.create_vcpu(0).unwrap();
    real_mode(vcpu1.as_mut(), CODE, 0);
    let mut io = RecordingIo::default();
    assert_eq!(vcpu1.run(&mut io).unwrap(), VcpuExit::Handled);
    assert_eq!(io.pio_writes, vec![(0x3f8, vec![b'a'])]);
    // Stop the vCPU so the pending OUT completes, then snapshot it.
    vcpu1.kicker().kick();
    assert_eq!(vcpu1.run(&mut io).unwrap(), VcpuExit::Interrupted);
    let blob = vcpu1.save_state().unwrap();
    assert_eq!((blob.backend.as_str(), blob.version), ("kvm", 1));

    let vm2 = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm2.setup_platform().unwrap();
    vm2.map_memory(&mem).unwrap();
    let mut vcpu2 = vm2.create_vcpu(0).unwrap();
    vcpu2.restore_state(&blob).unwrap();
    let mut io2 = RecordingIo::default();
    for _ in 0..100 {
        if io2.reset {
            break;
        }
        assert_eq!(vcpu2.run(&mut io2).unwrap(), VcpuExit::Handled);
    }
    assert_eq!(
        io2.pio_writes,
        vec![(0x3f8, vec![b'b']), (0x64, vec![0xfe])],
        "resumed after the first OUT, exactly once"
    );

    let mut foreign = blob.clone();
    foreign.backend = "hvf".to_owned();
    assert!(matches!(
        vcpu2.restore_state(&foreign),
        Err(squib_hv::HvError::IncompatibleState { .. })
    ));
}

/// `int3` vectors through the real-mode IVT. Native KVM executes it; nested PVM's emulator
/// refuses it and the backend's `#BP` injection workaround must produce the same result.
#[test]
fn test_int3_reaches_guest_breakpoint_handler() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let (exit, out) = run_int3_guest(&hv);
    assert_eq!(exit, VcpuExit::Halted);
    assert_eq!(out, b"BR");
}

fn run_int3_guest(hv: &KvmHypervisor) -> (VcpuExit, Vec<u8>) {
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xcc,             // int3
        0xb0, b'R',       // mov al, 'R'   (after iret)
        0xee,             // out dx, al
        0xf4,             // hlt
    ];
    #[rustfmt::skip]
    let handler = [
        0xb0, b'B',       // mov al, 'B'
        0xee,             // out dx, al
        0xcf,             // iret
    ];
    let mem = memory_with_code(0x4000, CODE, &code);
    mem.write_slice(&handler, GuestAddress(0x1100)).unwrap();
    // IVT[3] = 0000:1100
    mem.write_slice(&[0x00, 0x11, 0x00, 0x00], GuestAddress(3 * 4))
        .unwrap();
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    vm.map_memory(&mem).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    real_mode(vcpu.as_mut(), CODE, 0);
    {
        // A stack for the interrupt frame.
        let x86 = vcpu.as_x86().unwrap();
        let mut regs = x86.regs().unwrap();
        regs.rsp = 0x3000;
        x86.set_regs(&regs).unwrap();
        let mut sregs = x86.sregs().unwrap();
        sregs.ss.base = 0;
        sregs.ss.selector = 0;
        x86.set_sregs(&sregs).unwrap();
    }
    let mut io = RecordingIo::default();
    let exit = run_to_halt(vcpu.as_mut(), &mut io);
    (exit, io.pio_writes.iter().map(|(_, d)| d[0]).collect())
}

/// On nested PVM, `popcnt` in an emulated context fails; the exit carries the instruction bytes.
/// On native KVM the instruction simply runs.
#[test]
fn test_emulation_failure_reports_instruction_bytes() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0x66, 0xf3, 0x0f, 0xb8, 0xc3, // popcnt eax, ebx
        0xf4,                         // hlt
    ];
    let vm = hv.create_vm(&VmConfig::new(1)).unwrap();
    let mem = memory_with_code(0x4000, CODE, &code);
    vm.map_memory(&mem).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    real_mode(vcpu.as_mut(), CODE, 0);
    let mut io = RecordingIo::default();
    match run_to_halt(vcpu.as_mut(), &mut io) {
        VcpuExit::Halted => {}
        VcpuExit::InternalError(e) => {
            println!("emulation failure: {e:?}");
            assert_eq!(e.kind, squib_hv::InternalErrorKind::Emulation);
            assert_eq!(e.rip, Some(CODE));
            assert!(e.insn.starts_with(&code[..5]) || e.insn.is_empty(), "{e:?}");
        }
        other => panic!("unexpected exit {other:?}"),
    }
}

/// Long-mode `int3` through a 64-bit IDT gate. On nested PVM this is the case the emulator
/// refuses inside Linux; with or without the workaround the observable result must match
/// native KVM.
#[test]
fn test_long_mode_int3_through_idt() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    for workaround in [true, false] {
        let hv2 = KvmHypervisor::with_options(KvmOptions {
            int3_workaround: workaround,
        })
        .unwrap();
        let entry = 0x10_0000u64;
        #[rustfmt::skip]
        let code = [
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xcc,                   // int3
            0xb0, b'R',             // mov al, 'R'
            0xee,                   // out dx, al
            0xf4,                   // hlt
        ];
        #[rustfmt::skip]
        let handler = [
            0xb0, b'B',             // mov al, 'B'
            0xee,                   // out dx, al
            0x48, 0xcf,             // iretq
        ];
        let idt = 0x3000u64;
        #[rustfmt::skip]
        let gate = [
            0x00, 0x01, 0x08, 0x00, 0x00, 0x8e, 0x10, 0x00, // offset 0x100100, CS 0x08, int gate
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let mem = memory_with_code(4 << 20, entry, &code);
        mem.write_slice(&handler, GuestAddress(entry + 0x100))
            .unwrap();
        mem.write_slice(&gate, GuestAddress(idt + 3 * 16)).unwrap();
        write_gdt_idt(&mem, BootProtocol::LinuxBoot).unwrap();
        write_page_tables(&mem).unwrap();
        let vm = hv2.create_vm(&VmConfig::new(1)).unwrap();
        vm.map_memory(&mem).unwrap();
        let supported = hv.as_x86().unwrap().supported_cpuid().unwrap();
        let mut state = x86_boot_state(&BootStateConfig {
            protocol: BootProtocol::LinuxBoot,
            entry: GuestAddress(entry),
            cpuid: CpuidConfig {
                vcpu_index: 0,
                vcpu_count: 1,
                smt: false,
                hide_cx16: false,
            },
            supported_cpuid: &supported,
            template_msrs: &[],
            lapic: false,
        })
        .unwrap();
        state.sregs.idt.base = idt;
        state.sregs.idt.limit = 4 * 16 - 1;
        let mut vcpu = vm.create_vcpu(0).unwrap();
        vcpu.as_x86().unwrap().apply_boot_state(&state).unwrap();
        let mut io = RecordingIo::default();
        let exit = run_to_halt(vcpu.as_mut(), &mut io);
        let out: Vec<u8> = io.pio_writes.iter().map(|(_, d)| d[0]).collect();
        println!("long-mode int3, workaround={workaround}: {exit:?} {out:?}");
        if workaround || !squib_kvm::is_pvm() {
            assert_eq!((exit, out.as_slice()), (VcpuExit::Halted, b"BR".as_slice()));
        } else {
            let VcpuExit::InternalError(e) = exit else {
                panic!("PVM without workaround: expected an emulation failure, got {exit:?}");
            };
            assert_eq!(e.kind, squib_hv::InternalErrorKind::Emulation);
            assert_eq!(e.rip, Some(entry + 4));
            assert_eq!(e.insn.first(), Some(&0xcc));
        }
    }
}
