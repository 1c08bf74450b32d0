//! Real-KVM check of the VMM-side instruction emulation (`squib_vmm::emulation`): a long-mode
//! guest runs `popcnt`, `ldmxcsr`/`stmxcsr`, `fwait`, `stac`/`clac` right after port I/O (on a
//! nested `kvm_pvm` host these fall into KVM's emulation batch, which refuses them) and reports
//! the results on a port. The results must be what a CPU computes, whether the instructions ran
//! natively (VMX hosts), in KVM, or in the VMM; the test prints which ones the VMM emulated.
//! Prints `SKIPPED: no /dev/kvm` without KVM.

use std::path::Path;

use squib_arch::gdt::{write_gdt_idt, write_page_tables};
use squib_arch::{BootProtocol, BootStateConfig, CpuidConfig, x86_boot_state};
use squib_core::GuestMemoryMmap;
use squib_core::metrics::METRICS;
use squib_hv::{HypervisorX86, VcpuExit, VcpuIo, VcpuX86, Vm, VmConfig};
use squib_kvm::KvmHypervisor;
use vm_memory::{Bytes, GuestAddress};

#[derive(Default)]
struct Io {
    outs: Vec<u32>,
    reset: bool,
}

impl VcpuIo for Io {
    fn pio_read(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        if port == 0x64 && data == [0xfe] {
            self.reset = true;
        } else if port == 0x3f8 && data.len() == 4 {
            self.outs
                .push(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
        }
    }
    fn mmio_read(&mut self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&mut self, _addr: u64, _data: &[u8]) {}
}

/// Opens KVM, or prints the skip line and returns `None` when the host has no `/dev/kvm`.
fn hypervisor_or_skip() -> Option<KvmHypervisor> {
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED: no /dev/kvm");
        return None;
    }
    Some(KvmHypervisor::new().expect("open /dev/kvm"))
}

/// Runs `code` at 1 MiB in long mode (CR4 |= `cr4_extra`) until it resets; every emulation
/// failure goes through `squib_vmm::emulation::complete`. Returns the 32-bit port writes.
fn run_guest(hv: &KvmHypervisor, code: &[u8], cr4_extra: u64, hide_cx16: bool) -> Vec<u32> {
    let entry = 0x10_0000u64;
    let vm = hv.create_kvm_vm(&VmConfig::new(1)).unwrap();
    vm.setup_platform().unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    mem.write_slice(code, GuestAddress(entry)).unwrap();
    write_gdt_idt(&mem, BootProtocol::LinuxBoot).unwrap();
    write_page_tables(&mem).unwrap();
    vm.map_memory(&mem).unwrap();
    let supported = hv.supported_cpuid().unwrap();
    let state = x86_boot_state(&BootStateConfig {
        protocol: BootProtocol::LinuxBoot,
        entry: GuestAddress(entry),
        cpuid: CpuidConfig {
            vcpu_index: 0,
            vcpu_count: 1,
            smt: false,
            hide_cx16,
        },
        supported_cpuid: &supported,
        template_msrs: &[],
        lapic: true,
    })
    .unwrap();
    let mut vcpu = vm.create_kvm_vcpu(0).unwrap();
    vcpu.apply_boot_state(&state).unwrap();
    // OSFXSR so that ldmxcsr/stmxcsr are legal (Linux sets it early).
    let mut sregs = vcpu.sregs().unwrap();
    sregs.cr4 |= (1 << 9) | cr4_extra;
    vcpu.set_sregs(&sregs).unwrap();

    let vcpu: &mut dyn squib_hv::Vcpu = &mut vcpu;
    let mut io = Io::default();
    let mut emulated = 0;
    for _ in 0..1000 {
        if io.reset {
            break;
        }
        match vcpu.run(&mut io).unwrap() {
            VcpuExit::Handled | VcpuExit::Interrupted => {}
            VcpuExit::InternalError(e) => {
                println!("KVM refused {:02x?} at {:x?}; emulating", e.insn, e.rip);
                squib_vmm::emulation::complete(0, vcpu, &mem, &e)
                    .unwrap_or_else(|err| panic!("not emulated: {err} ({e:?})"));
                emulated += 1;
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    assert!(io.reset, "guest reached its reset");
    println!("VMM-emulated {emulated} instructions");
    io.outs
}

/// `popcnt`, `ldmxcsr`/`stmxcsr`, `fwait`, `stac`/`clac`, each after port I/O.
#[rustfmt::skip]
const BASIC: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03,                         // mov dx, 0x3f8
    0xbb, 0xf0, 0xf0, 0x00, 0x00,                   // mov ebx, 0xf0f0
    0xee,                                           // out dx, al
    0xf3, 0x48, 0x0f, 0xb8, 0xc3,                   // popcnt rax, rbx
    0xef,                                           // out dx, eax        (8)
    0xc7, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0xc0, 0x9f, 0x00, 0x00, // mov dword [0x200000], 0x9fc0
    0xee,                                           // out dx, al
    0x0f, 0xae, 0x14, 0x25, 0x00, 0x00, 0x20, 0x00, // ldmxcsr [0x200000]
    0x0f, 0xae, 0x1c, 0x25, 0x04, 0x00, 0x20, 0x00, // stmxcsr [0x200004]
    0x8b, 0x04, 0x25, 0x04, 0x00, 0x20, 0x00,       // mov eax, [0x200004]
    0xef,                                           // out dx, eax        (0x9fc0)
    0x9b,                                           // fwait
    0x0f, 0x01, 0xcb,                               // stac
    0x9c, 0x58,                                     // pushfq; pop rax
    0xc1, 0xe8, 0x12,                               // shr eax, 18
    0x83, 0xe0, 0x01,                               // and eax, 1
    0xef,                                           // out dx, eax        (1: AC set)
    0x0f, 0x01, 0xca,                               // clac
    0x9c, 0x58, 0xc1, 0xe8, 0x12, 0x83, 0xe0, 0x01, // AC again
    0xef,                                           // out dx, eax        (0)
    0x66, 0xba, 0x64, 0x00, 0xb0, 0xfe, 0xee,       // reset
    0xf4, 0xeb, 0xfd,                               // hlt; jmp hlt
];

#[test]
fn test_emulated_instructions_compute_what_a_cpu_computes() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let outs = run_guest(&hv, BASIC, 0, false);
    assert_eq!(
        outs,
        vec![8, 0x9fc0, 1, 0],
        "popcnt, MXCSR, AC set, AC clear"
    );
    let m = &METRICS.pvm_emulation;
    println!(
        "emulated so far: popcnt={} ldmxcsr={} stmxcsr={} fwait={} stac={} clac={} (pvm host: {})",
        m.popcnt.count(),
        m.ldmxcsr.count(),
        m.stmxcsr.count(),
        m.fwait.count(),
        m.stac.count(),
        m.clac.count(),
        hv.is_pvm()
    );
    assert_eq!(m.refused.count(), 0);
    if hv.is_pvm() {
        // Measured on this kind of host: KVM refuses each of them after port I/O.
        for (name, c) in [
            ("popcnt", &m.popcnt),
            ("ldmxcsr", &m.ldmxcsr),
            ("fwait", &m.fwait),
        ] {
            assert!(c.count() >= 1, "{name} emulated by the VMM on kvm_pvm");
        }
    }
}

/// `xsave`/`xrstor` (standard format, XCR0 = x87|SSE): MXCSR and XMM0 travel through memory.
#[rustfmt::skip]
const XSAVE: &[u8] = &[
    0x31, 0xc9,                                     // xor ecx, ecx
    0x31, 0xd2,                                     // xor edx, edx
    0xb8, 0x03, 0x00, 0x00, 0x00,                   // mov eax, 3
    0x0f, 0x01, 0xd1,                               // xsetbv (XCR0 = x87|SSE)
    0x66, 0xba, 0xf8, 0x03,                         // mov dx, 0x3f8
    0xee,                                           // out dx, al
    0x0f, 0xae, 0x24, 0x25, 0x00, 0x10, 0x20, 0x00, // xsave [0x201000]
    0x8b, 0x04, 0x25, 0x18, 0x10, 0x20, 0x00,       // mov eax, [0x201018] (MXCSR)
    0xef,                                           // out                  (0x1f80)
    0xc7, 0x04, 0x25, 0x18, 0x10, 0x20, 0x00, 0xc0, 0x9f, 0x00, 0x00, // MXCSR image = 0x9fc0
    0xc7, 0x04, 0x25, 0xa0, 0x10, 0x20, 0x00, 0x78, 0x56, 0x34, 0x12, // XMM0 image = 0x12345678
    0xc7, 0x04, 0x25, 0x00, 0x12, 0x20, 0x00, 0x03, 0x00, 0x00, 0x00, // XSTATE_BV = 3
    0xb8, 0x03, 0x00, 0x00, 0x00,                   // mov eax, 3
    0xee,                                           // out dx, al
    0x0f, 0xae, 0x2c, 0x25, 0x00, 0x10, 0x20, 0x00, // xrstor [0x201000]
    0x0f, 0xae, 0x1c, 0x25, 0x00, 0x00, 0x20, 0x00, // stmxcsr [0x200000]
    0x8b, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00,       // mov eax, [0x200000]
    0xef,                                           // out                  (0x9fc0)
    0xb8, 0x03, 0x00, 0x00, 0x00,                   // mov eax, 3
    0x0f, 0xae, 0x24, 0x25, 0x00, 0x20, 0x20, 0x00, // xsave [0x202000]
    0x8b, 0x04, 0x25, 0xa0, 0x20, 0x20, 0x00,       // mov eax, [0x2020a0] (XMM0)
    0xef,                                           // out                  (0x12345678)
    0x8b, 0x04, 0x25, 0x00, 0x22, 0x20, 0x00,       // mov eax, [0x202200] (XSTATE_BV)
    0x83, 0xe0, 0x02,                               // and eax, 2
    0xef,                                           // out                  (2: SSE in use)
    0x66, 0xba, 0x64, 0x00, 0xb0, 0xfe, 0xee,       // reset
    0xf4, 0xeb, 0xfd,                               // hlt; jmp hlt
];

#[test]
fn test_emulated_xsave_xrstor_round_trip() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    // CR4.OSXSAVE.
    let outs = run_guest(&hv, XSAVE, 1 << 18, false);
    assert_eq!(outs, vec![0x1f80, 0x9fc0, 0x1234_5678, 2]);
    let m = &METRICS.pvm_emulation;
    println!(
        "emulated so far: xsave={} xrstor={} (pvm host: {})",
        m.xsave.count(),
        m.xrstor.count(),
        hv.is_pvm()
    );
    assert_eq!(m.refused.count(), 0);
}

/// CPUID leaf 0x1 ECX and leaf 0x7.0 EBX, read twice (the second time right after port I/O).
#[rustfmt::skip]
const CPUID_PROBE: &[u8] = &[
    0xb8, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc9,       // mov eax, 1; xor ecx, ecx
    0x0f, 0xa2, 0x89, 0xc8,                         // cpuid; mov eax, ecx
    0x66, 0xba, 0xf8, 0x03, 0xef,                   // mov dx, 0x3f8; out dx, eax
    0xb8, 0x07, 0x00, 0x00, 0x00, 0x31, 0xc9,       // mov eax, 7; xor ecx, ecx
    0x0f, 0xa2, 0x89, 0xd8,                         // cpuid; mov eax, ebx
    0x66, 0xba, 0xf8, 0x03, 0xef,                   // out
    0xb8, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc9,       // leaf 1 again, after I/O
    0x0f, 0xa2, 0x89, 0xc8,
    0x66, 0xba, 0xf8, 0x03, 0xef,
    0xb8, 0x07, 0x00, 0x00, 0x00, 0x31, 0xc9,       // leaf 7 again
    0x0f, 0xa2, 0x89, 0xd8,
    0x66, 0xba, 0xf8, 0x03, 0xef,
    0x66, 0xba, 0x64, 0x00, 0xb0, 0xfe, 0xee,       // reset
    0xf4, 0xeb, 0xfd,
];

/// Why some CPUID masks "do not take" on kvm_pvm (measured, printed): the guest sees bits that
/// `KVM_GET_SUPPORTED_CPUID` does not even report (XSAVE, POPCNT, SMAP, ... come from the host
/// CPU), while bits in KVM's table follow `KVM_SET_CPUID2` (CX16 cleared by the profile is
/// cleared in the guest). Asserted: CX16 follows the table, on every host.
#[test]
fn test_guest_cpuid_cx16_follows_the_table() {
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    let sup = hv.supported_cpuid().unwrap();
    let l1 = sup.iter().find(|e| e.function == 1).unwrap();
    let l7 = sup
        .iter()
        .find(|e| e.function == 7 && e.index == 0)
        .unwrap();
    let plain = run_guest(&hv, CPUID_PROBE, 0, false);
    let hidden = run_guest(&hv, CPUID_PROBE, 0, true);
    println!(
        "KVM_GET_SUPPORTED_CPUID: leaf1 ECX {:#010x} leaf7 EBX {:#010x}; guest sees {plain:#010x?}; \
         with CX16 hidden {hidden:#010x?}; guest bits absent from the table: leaf1 ECX {:#010x} \
         leaf7 EBX {:#010x} (pvm host: {})",
        l1.ecx,
        l7.ebx,
        plain[0] & !l1.ecx,
        plain[1] & !l7.ebx,
        hv.is_pvm()
    );
    assert_eq!(plain[0] & (1 << 13), l1.ecx & (1 << 13));
    assert_eq!(hidden[0] & (1 << 13), 0, "CX16 hidden");
    assert_eq!(
        plain[0], plain[2],
        "same answer inside and outside an emulation batch"
    );
}
