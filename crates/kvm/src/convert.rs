//! Conversions between the neutral `squib-hv` x86 types and `kvm-bindings` structs.
//!
//! Pure functions, no ioctls.

use kvm_bindings::{
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2, kvm_dtable, kvm_lapic_state, kvm_regs,
    kvm_segment, kvm_sregs,
};
use squib_hv::{
    CpuidEntry, LapicDeliveryMode, X86DescriptorTable, X86Regs, X86Segment, X86SpecialRegs,
};

/// LAPIC register offset of LVT LINT0.
const APIC_LVT0: usize = 0x350;
/// LAPIC register offset of LVT LINT1.
const APIC_LVT1: usize = 0x360;

pub(crate) fn cpuid_from_kvm(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        significant_index: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

pub(crate) fn cpuid_to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: if e.significant_index {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        padding: [0; 3],
    }
}

pub(crate) fn regs_to_kvm(r: &X86Regs) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

pub(crate) fn regs_from_kvm(r: &kvm_regs) -> X86Regs {
    X86Regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn seg_to_kvm(s: &X86Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: u8::from(s.avl),
        unusable: u8::from(s.unusable),
        padding: 0,
    }
}

fn seg_from_kvm(s: &kvm_segment) -> X86Segment {
    X86Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

fn dt_to_kvm(d: &X86DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

fn dt_from_kvm(d: &kvm_dtable) -> X86DescriptorTable {
    X86DescriptorTable {
        base: d.base,
        limit: d.limit,
    }
}

/// Overlays the neutral special registers on `base` (which keeps its APIC base and interrupt
/// bitmap).
pub(crate) fn sregs_onto_kvm(s: &X86SpecialRegs, base: &mut kvm_sregs) {
    base.cs = seg_to_kvm(&s.cs);
    base.ds = seg_to_kvm(&s.ds);
    base.es = seg_to_kvm(&s.es);
    base.fs = seg_to_kvm(&s.fs);
    base.gs = seg_to_kvm(&s.gs);
    base.ss = seg_to_kvm(&s.ss);
    base.tr = seg_to_kvm(&s.tr);
    base.ldt = seg_to_kvm(&s.ldt);
    base.gdt = dt_to_kvm(&s.gdt);
    base.idt = dt_to_kvm(&s.idt);
    base.cr0 = s.cr0;
    base.cr2 = s.cr2;
    base.cr3 = s.cr3;
    base.cr4 = s.cr4;
    base.cr8 = s.cr8;
    base.efer = s.efer;
}

pub(crate) fn sregs_from_kvm(s: &kvm_sregs) -> X86SpecialRegs {
    X86SpecialRegs {
        cs: seg_from_kvm(&s.cs),
        ds: seg_from_kvm(&s.ds),
        es: seg_from_kvm(&s.es),
        fs: seg_from_kvm(&s.fs),
        gs: seg_from_kvm(&s.gs),
        ss: seg_from_kvm(&s.ss),
        tr: seg_from_kvm(&s.tr),
        ldt: seg_from_kvm(&s.ldt),
        gdt: dt_from_kvm(&s.gdt),
        idt: dt_from_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (dst, src) in bytes.iter_mut().zip(&lapic.regs[offset..offset + 4]) {
        *dst = src.to_ne_bytes()[0];
    }
    u32::from_le_bytes(bytes)
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = std::os::raw::c_char::from_ne_bytes([src]);
    }
}

fn with_delivery_mode(reg: u32, mode: LapicDeliveryMode) -> u32 {
    (reg & !0x700) | (mode.encoding() << 8)
}

/// Sets the LINT0/LINT1 delivery modes in a LAPIC register page.
pub(crate) fn set_lints(
    lapic: &mut kvm_lapic_state,
    lint0: LapicDeliveryMode,
    lint1: LapicDeliveryMode,
) {
    let v0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, with_delivery_mode(v0, lint0));
    let v1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, with_delivery_mode(v1, lint1));
}

/// Reads LINT0/LINT1 raw LVT values (tests, diagnostics).
pub(crate) fn lints(lapic: &kvm_lapic_state) -> (u32, u32) {
    (lapic_reg(lapic, APIC_LVT0), lapic_reg(lapic, APIC_LVT1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lints_roundtrip_sets_delivery_mode_bits() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0000);
        set_lints(
            &mut lapic,
            LapicDeliveryMode::ExtInt,
            LapicDeliveryMode::Nmi,
        );
        assert_eq!(lints(&lapic), (0x0001_0700, 0x400));
    }

    #[test]
    fn test_cpuid_conversion_keeps_significant_index() {
        let e = CpuidEntry {
            function: 0xb,
            index: 1,
            significant_index: true,
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        };
        assert_eq!(cpuid_from_kvm(&cpuid_to_kvm(&e)), e);
    }
}
