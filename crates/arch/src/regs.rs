//! Per-vCPU boot state ([`X86BootState`]) for the Linux 64-bit and PVH entry protocols.
//!
//! Linux boot (BSP): long mode, paging with the boot identity tables, `rip` = entry,
//! `rsp = rbp = 0x8ff0`, `rsi` = zero page. PVH: 32-bit protected mode, paging off,
//! `rbx` = `hvm_start_info`. APs get the same state with `bsp = false`; with an in-kernel irqchip
//! KVM keeps them in wait-for-SIPI (`KVM_MP_STATE_UNINITIALIZED`) until the BSP's INIT/SIPI
//! resets them, exactly as Firecracker relies on.

use squib_hv::{
    CpuidEntry, LapicDeliveryMode, LapicLints, MsrEntry, X86BootState, X86Fpu, X86Regs,
    X86SpecialRegs,
};
use vm_memory::GuestAddress;

use crate::cpuid::{CpuidConfig, normalize_cpuid};
use crate::error::ArchError;
use crate::gdt::{
    CODE_INDEX, DATA_INDEX, TSS_INDEX, gdt_register, gdt_table, idt_register, segment_from_gdt,
};
use crate::layout::{BOOT_STACK_POINTER, PML4_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::loader::BootProtocol;
use crate::template::with_template_msrs;

/// CR0.PE.
pub const CR0_PE: u64 = 1;
/// CR0.ET.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// `MSR_IA32_MISC_ENABLE_FAST_STRING`.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// Firecracker's boot MSRs (`create_boot_msr_entries`).
pub fn boot_msrs() -> Vec<MsrEntry> {
    let m = |index, value| MsrEntry { index, value };
    vec![
        m(MSR_IA32_SYSENTER_CS, 0),
        m(MSR_IA32_SYSENTER_ESP, 0),
        m(MSR_IA32_SYSENTER_EIP, 0),
        m(MSR_STAR, 0),
        m(MSR_CSTAR, 0),
        m(MSR_KERNEL_GS_BASE, 0),
        m(MSR_SYSCALL_MASK, 0),
        m(MSR_LSTAR, 0),
        m(MSR_IA32_TSC, 0),
        m(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        m(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

/// Inputs to [`x86_boot_state`].
#[derive(Debug, Clone, Copy)]
pub struct BootStateConfig<'a> {
    /// Entry protocol.
    pub protocol: BootProtocol,
    /// Entry address.
    pub entry: GuestAddress,
    /// CPUID inputs (index, count, SMT).
    pub cpuid: CpuidConfig,
    /// The hypervisor's supported CPUID table, with the CPU template already applied
    /// ([`crate::template::apply_cpuid_template`]).
    pub supported_cpuid: &'a [CpuidEntry],
    /// The CPU template's MSR values ([`crate::template::apply_msr_template`]); boot MSRs win.
    pub template_msrs: &'a [MsrEntry],
    /// The VM has a local APIC to program (in-kernel irqchip).
    pub lapic: bool,
}

/// Special registers for `protocol` (segments from the boot GDT).
pub fn boot_sregs(protocol: BootProtocol) -> X86SpecialRegs {
    let gdt = gdt_table(protocol);
    let code = segment_from_gdt(gdt[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = segment_from_gdt(gdt[usize::from(DATA_INDEX)], DATA_INDEX);
    let tss = segment_from_gdt(gdt[usize::from(TSS_INDEX)], TSS_INDEX);
    let mut s = X86SpecialRegs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss,
        gdt: gdt_register(),
        idt: idt_register(),
        ..Default::default()
    };
    s.ldt.unusable = true;
    match protocol {
        BootProtocol::LinuxBoot => {
            s.cr0 = CR0_PE | CR0_ET | CR0_PG;
            s.cr3 = PML4_START;
            s.cr4 = CR4_PAE;
            s.efer = EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            s.cr0 = CR0_PE | CR0_ET;
        }
    }
    s
}

/// General registers for `protocol` entering at `entry`.
pub fn boot_regs(protocol: BootProtocol, entry: GuestAddress) -> X86Regs {
    let mut r = X86Regs {
        rflags: 0x2,
        rip: entry.0,
        ..Default::default()
    };
    match protocol {
        BootProtocol::LinuxBoot => {
            r.rsp = BOOT_STACK_POINTER;
            r.rbp = BOOT_STACK_POINTER;
            r.rsi = ZERO_PAGE_START;
        }
        BootProtocol::Pvh => r.rbx = PVH_INFO_START,
    }
    r
}

/// The complete boot state of one vCPU.
pub fn x86_boot_state(cfg: &BootStateConfig<'_>) -> Result<X86BootState, ArchError> {
    Ok(X86BootState {
        bsp: cfg.cpuid.vcpu_index == 0,
        regs: boot_regs(cfg.protocol, cfg.entry),
        sregs: boot_sregs(cfg.protocol),
        fpu: X86Fpu::default(),
        cpuid: normalize_cpuid(cfg.supported_cpuid, &cfg.cpuid)?,
        msrs: with_template_msrs(boot_msrs(), cfg.template_msrs),
        lapic: cfg.lapic.then_some(LapicLints {
            lint0: LapicDeliveryMode::ExtInt,
            lint1: LapicDeliveryMode::Nmi,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(protocol: BootProtocol, index: u8) -> BootStateConfig<'static> {
        BootStateConfig {
            protocol,
            entry: GuestAddress(0x100_0000),
            cpuid: CpuidConfig {
                vcpu_index: index,
                vcpu_count: 2,
                smt: false,
                hide_cx16: false,
            },
            supported_cpuid: &[],
            template_msrs: &[],
            lapic: true,
        }
    }

    #[test]
    fn test_linux_boot_state_long_mode_registers() {
        let s = x86_boot_state(&cfg(BootProtocol::LinuxBoot, 0)).unwrap();
        assert!(s.bsp);
        assert_eq!(
            (s.regs.rip, s.regs.rsp, s.regs.rbp, s.regs.rsi),
            (0x100_0000, 0x8ff0, 0x8ff0, 0x7000)
        );
        assert_eq!(s.sregs.cr3, 0x9000);
        assert_eq!(s.sregs.efer, EFER_LME | EFER_LMA);
        assert_ne!(s.sregs.cr0 & CR0_PG, 0);
        assert!(s.sregs.cs.l);
        assert_eq!((s.sregs.gdt.base, s.sregs.idt.base), (0x500, 0x520));
        assert_eq!((s.fpu.fcw, s.fpu.mxcsr), (0x37f, 0x1f80));
        assert_eq!(s.lapic.unwrap().lint0, LapicDeliveryMode::ExtInt);
    }

    #[test]
    fn test_pvh_boot_state_protected_mode_no_paging() {
        let s = x86_boot_state(&cfg(BootProtocol::Pvh, 1)).unwrap();
        assert!(!s.bsp);
        assert_eq!(s.regs.rbx, 0x6000);
        assert_eq!(s.sregs.cr0 & CR0_PG, 0);
        assert_eq!(s.sregs.efer, 0);
        assert!(s.sregs.cs.db && !s.sregs.cs.l);
    }

    #[test]
    fn test_template_msrs_follow_boot_msrs_which_win() {
        let template = [
            MsrEntry {
                index: 0x1a0,
                value: 0,
            },
            MsrEntry {
                index: 0x277,
                value: 0x0507_0406_0007_0406,
            },
        ];
        let mut c = cfg(BootProtocol::LinuxBoot, 0);
        c.template_msrs = &template;
        let s = x86_boot_state(&c).unwrap();
        assert_eq!(s.msrs.len(), boot_msrs().len() + 1);
        assert!(s.msrs.contains(&MsrEntry {
            index: 0x1a0,
            value: 1
        }));
        assert_eq!(s.msrs.last(), Some(&template[1]));
    }

    #[test]
    fn test_boot_msrs_enable_fast_strings() {
        assert!(boot_msrs().contains(&MsrEntry {
            index: 0x1a0,
            value: 1
        }));
    }
}
