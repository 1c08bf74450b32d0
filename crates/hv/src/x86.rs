//! x86_64 extension of the hypervisor contract: neutral register and boot-state types.
//!
//! `squib-arch` computes an [`X86BootState`] per vCPU (registers, segments, control registers,
//! the normalised CPUID table, boot MSRs, LAPIC LINT pins, FPU control words); a backend only
//! translates and applies it through [`VcpuX86::apply_boot_state`]. No values are invented in the
//! backend. Plain data, no threads.

use serde::{Deserialize, Serialize};

use crate::error::HvError;

/// General-purpose registers, instruction pointer and flags.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register in its cached (descriptor) form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86Segment {
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Selector.
    pub selector: u16,
    /// Descriptor type field (4 bits).
    pub type_: u8,
    /// Present bit.
    pub present: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size (D/B) bit.
    pub db: bool,
    /// Code/data (as opposed to system) descriptor bit.
    pub s: bool,
    /// 64-bit code segment bit.
    pub l: bool,
    /// Granularity bit.
    pub g: bool,
    /// Available-for-software bit.
    pub avl: bool,
    /// The register holds no usable segment.
    pub unusable: bool,
}

/// GDTR / IDTR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit (size - 1).
    pub limit: u16,
}

/// Segment, descriptor-table and control registers. The backend keeps its own APIC base and
/// pending-interrupt bitmap.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86SpecialRegs {
    pub cs: X86Segment,
    pub ds: X86Segment,
    pub es: X86Segment,
    pub fs: X86Segment,
    pub gs: X86Segment,
    pub ss: X86Segment,
    pub tr: X86Segment,
    pub ldt: X86Segment,
    pub gdt: X86DescriptorTable,
    pub idt: X86DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
}

/// The FPU/SSE control words a boot sets (the rest of the FPU state is reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86Fpu {
    /// x87 control word (0x37f at reset).
    pub fcw: u16,
    /// SSE control/status register (0x1f80 at reset).
    pub mxcsr: u32,
}

impl Default for X86Fpu {
    fn default() -> Self {
        Self {
            fcw: 0x37f,
            mxcsr: 0x1f80,
        }
    }
}

/// One CPUID leaf/subleaf as the guest will see it.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// The subleaf (`index`) is significant for this function.
    pub significant_index: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// One model-specific register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrEntry {
    /// MSR index.
    pub index: u32,
    /// Value.
    pub value: u64,
}

/// Local APIC LVT delivery modes used at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LapicDeliveryMode {
    /// Fixed vector.
    Fixed,
    /// System management interrupt.
    Smi,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// External interrupt (8259A virtual wire).
    ExtInt,
}

impl LapicDeliveryMode {
    /// The 3-bit LVT delivery-mode encoding.
    pub fn encoding(self) -> u32 {
        match self {
            Self::Fixed => 0b000,
            Self::Smi => 0b010,
            Self::Nmi => 0b100,
            Self::Init => 0b101,
            Self::ExtInt => 0b111,
        }
    }
}

/// Delivery modes of the local APIC's LINT0 and LINT1 pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicLints {
    /// LINT0 (Firecracker: ExtINT, the 8259 virtual wire).
    pub lint0: LapicDeliveryMode,
    /// LINT1 (Firecracker: NMI).
    pub lint1: LapicDeliveryMode,
}

/// Everything a vCPU needs at power-on, computed by `squib-arch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86BootState {
    /// The boot processor (`true`) or an application processor. With an in-kernel irqchip an AP
    /// stays in wait-for-SIPI whatever its registers say; a backend without one must emulate that.
    pub bsp: bool,
    /// General registers.
    pub regs: X86Regs,
    /// Segment and control registers.
    pub sregs: X86SpecialRegs,
    /// FPU control words.
    pub fpu: X86Fpu,
    /// The complete, normalised CPUID table.
    pub cpuid: Vec<CpuidEntry>,
    /// Boot MSR values.
    pub msrs: Vec<MsrEntry>,
    /// LAPIC LINT configuration; `None` when the VM has no local APIC.
    pub lapic: Option<LapicLints>,
}

/// x86_64 extension of [`crate::Hypervisor`].
pub trait HypervisorX86 {
    /// The CPUID leaves the hypervisor can expose (input to `squib-arch`'s normalisation).
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError>;

    /// The values MSRs `indices` have on a fresh vCPU whose CPUID is `cpuid` (the base values a
    /// CPU template's MSR filters apply to). Reading stops at the first MSR the hypervisor
    /// cannot read: the result holds the readable prefix, in order. Costs a scratch VM; call it
    /// only when a template has MSR modifiers.
    fn probe_msrs(&self, cpuid: &[CpuidEntry], indices: &[u32]) -> Result<Vec<MsrEntry>, HvError> {
        let _ = (cpuid, indices);
        Err(HvError::Unsupported("MSR probing"))
    }
}

/// x86_64 extension of [`crate::Vcpu`].
pub trait VcpuX86 {
    /// Applies a complete boot state (CPUID and MSRs first, then registers, FPU and LAPIC).
    fn apply_boot_state(&mut self, state: &X86BootState) -> Result<(), HvError>;
    /// Reads the general registers.
    fn regs(&self) -> Result<X86Regs, HvError>;
    /// Writes the general registers.
    fn set_regs(&mut self, regs: &X86Regs) -> Result<(), HvError>;
    /// Reads the segment and control registers.
    fn sregs(&self) -> Result<X86SpecialRegs, HvError>;
    /// Writes the segment and control registers (the backend keeps its APIC base).
    fn set_sregs(&mut self, sregs: &X86SpecialRegs) -> Result<(), HvError>;

    /// The FPU/SSE/AVX state in the XSAVE standard (non-compacted) format: 512-byte legacy
    /// region, 64-byte header (XSTATE_BV), components at their CPUID 0xD offsets.
    fn xsave_area(&self) -> Result<Vec<u8>, HvError> {
        Err(HvError::Unsupported("XSAVE state access"))
    }

    /// Replaces the FPU/SSE/AVX state with `area` ([`VcpuX86::xsave_area`]'s format and size).
    fn set_xsave_area(&mut self, area: &[u8]) -> Result<(), HvError> {
        let _ = area;
        Err(HvError::Unsupported("XSAVE state access"))
    }

    /// The guest's XCR0.
    fn xcr0(&self) -> Result<u64, HvError> {
        Err(HvError::Unsupported("XCR0 access"))
    }

    /// The CPUID table this vCPU was given.
    fn cpuid_table(&self) -> Result<Vec<CpuidEntry>, HvError> {
        Err(HvError::Unsupported("CPUID table read-back"))
    }

    /// Queues exception `vector` (with `error_code` for the vectors that push one) for delivery
    /// on the next entry, as if the instruction at RIP had raised it.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) -> Result<(), HvError> {
        let _ = (vector, error_code);
        Err(HvError::Unsupported("exception injection"))
    }
}
