//! VMM-side emulation of the few x86_64 instructions a nested `kvm_pvm` host's in-kernel
//! emulator refuses (`KVM_EXIT_INTERNAL_ERROR`, emulation failure): `fwait`, `clac`, `stac`,
//! `popcnt`, `ldmxcsr`, `stmxcsr`, `xsave`, `xrstor` (standard format).
//!
//! Owns the decoder ([`decode`]), the data-access MMU ([`mmu`]) and the effects ([`emulate`]).
//! It names no hypervisor type: the caller (the VMM, through `squib-hv`'s vCPU traits) supplies
//! the vCPU's state as a [`CpuState`] and everything else through [`Machine`] (guest-physical
//! memory, the XSAVE-format FPU state, XCR0, CPUID). An instruction either retires (the
//! caller writes back [`CpuState`], whose RIP has advanced), raises an architectural exception
//! ([`Outcome::Fault`], nothing else changed), or is refused ([`EmuError`]: the caller reports
//! the original failure). Single-threaded, pure over its inputs; guest bytes never panic it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decode;
mod exec;
pub mod mmu;
mod xsave;

pub use decode::{DecodeError, Insn, MemOperand, Op, Operand, Seg, decode};
pub use exec::emulate;
use thiserror::Error;

/// The vCPU state the emulated subset reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (encoding order).
    pub gpr: [u64; 16],
    /// Instruction pointer (of the failing instruction on entry; advanced on retirement).
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// Current privilege level (CS.DPL / SS.DPL).
    pub cpl: u8,
    /// 64-bit mode (EFER.LMA and CS.L). Only 64-bit code is emulated.
    pub long64: bool,
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
}

/// An architectural exception to deliver instead of retiring the instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// Vector (6 = `#UD`, 7 = `#NM`, 13 = `#GP`, 14 = `#PF`, 16 = `#MF`).
    pub vector: u8,
    /// Error code, for vectors that push one.
    pub error_code: Option<u32>,
    /// Faulting linear address (`#PF`): goes to CR2.
    pub cr2: Option<u64>,
}

impl Exception {
    /// `#UD`.
    pub fn ud() -> Self {
        Self::plain(6)
    }
    /// `#NM`.
    pub fn nm() -> Self {
        Self::plain(7)
    }
    /// `#MF`.
    pub fn mf() -> Self {
        Self::plain(16)
    }
    /// `#GP(0)`.
    pub fn gp0() -> Self {
        Self {
            vector: 13,
            error_code: Some(0),
            cr2: None,
        }
    }
    /// `#PF(code)` at `addr`.
    pub fn page_fault(code: u32, addr: u64) -> Self {
        Self {
            vector: 14,
            error_code: Some(code),
            cr2: Some(addr),
        }
    }
    fn plain(vector: u8) -> Self {
        Self {
            vector,
            error_code: None,
            cr2: None,
        }
    }
}

/// What happened to the instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Retired: write back the [`CpuState`] (RIP advanced); memory/FPU effects are done.
    Retired(Op),
    /// Not retired: deliver this exception (RIP unchanged, no other effect).
    Fault(Op, Exception),
}

/// Why an instruction was not emulated (the caller keeps reporting the original exit).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmuError {
    /// Bytes outside the emulated subset, or malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A case of an emulated instruction that is not implemented (with the reason).
    #[error("not emulated: {0}")]
    Unsupported(&'static str),
    /// The machine (vCPU state, guest memory) refused an access.
    #[error("machine access failed: {0}")]
    Machine(String),
}

/// Everything outside [`CpuState`] the emulator touches. Implemented by the VMM over the
/// hypervisor traits and guest memory, and by a fake in the tests.
pub trait Machine {
    /// Reads guest-physical memory (RAM only; MMIO is refused with [`EmuError::Machine`]).
    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), EmuError>;
    /// Writes guest-physical memory (RAM only).
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), EmuError>;
    /// The vCPU's FPU/SSE/AVX/... state in XSAVE standard (non-compacted) format: legacy
    /// region, 64-byte header (XSTATE_BV = the components in use), components at their CPUID
    /// 0xD offsets. At least 576 bytes.
    fn xsave_area(&mut self) -> Result<Vec<u8>, EmuError>;
    /// Replaces the vCPU's state with `area` (same format as [`Machine::xsave_area`]).
    fn set_xsave_area(&mut self, area: &[u8]) -> Result<(), EmuError>;
    /// XCR0.
    fn xcr0(&mut self) -> Result<u64, EmuError>;
    /// CPUID `(leaf, subleaf)` as EAX, EBX, ECX, EDX, if the vCPU's table has it.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Option<[u32; 4]>;
}

#[cfg(test)]
mod tests;
