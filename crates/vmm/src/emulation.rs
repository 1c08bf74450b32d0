//! VMM-side completion of instructions a nested `kvm_pvm` host's KVM could not emulate
//! (`KVM_EXIT_INTERNAL_ERROR`, emulation failure, reported with the instruction bytes).
//!
//! Owns the adapter between `squib-x86emu` (decoder + effects, no hypervisor types) and a vCPU
//! seen through `squib-hv`'s [`VcpuX86`] plus the guest RAM ([`GuestMemoryMmap`]). Used only
//! when the backend reports `emulated_guests` (the VMM builder gives the vCPU threads the guest
//! memory only then), so nothing changes on hosts with VMX/SVM. Runs on the vCPU's own thread,
//! while the vCPU is stopped. Every outcome is counted in the `pvm_emulation` metric group and
//! logged through a rate limiter (guest-triggerable).

use squib_core::GuestMemoryMmap;
use squib_core::metrics::{METRICS, PvmEmulationMetrics};
use squib_devices::log::RateLimitedLog;
use squib_hv::{CpuidEntry, InternalError, InternalErrorKind, Vcpu, VcpuX86, X86SpecialRegs};
use squib_x86emu::{CpuState, EmuError, Machine, Op, Outcome, emulate};
use vm_memory::{Bytes, GuestAddress};

static EMULATED_LOG: RateLimitedLog = RateLimitedLog::new(10, std::time::Duration::from_secs(5));

/// EFER.LMA.
const EFER_LMA: u64 = 1 << 10;

/// [`Machine`] over one vCPU and the guest RAM.
struct VcpuMachine<'a> {
    vcpu: &'a mut dyn VcpuX86,
    memory: &'a GuestMemoryMmap,
    cpuid: Option<Vec<CpuidEntry>>,
}

fn machine_err(e: impl std::fmt::Display) -> EmuError {
    EmuError::Machine(e.to_string())
}

impl Machine for VcpuMachine<'_> {
    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), EmuError> {
        self.memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|e| machine_err(format!("guest-physical {gpa:#x}: {e}")))
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), EmuError> {
        self.memory
            .write_slice(data, GuestAddress(gpa))
            .map_err(|e| machine_err(format!("guest-physical {gpa:#x}: {e}")))
    }

    fn xsave_area(&mut self) -> Result<Vec<u8>, EmuError> {
        self.vcpu.xsave_area().map_err(machine_err)
    }

    fn set_xsave_area(&mut self, area: &[u8]) -> Result<(), EmuError> {
        self.vcpu.set_xsave_area(area).map_err(machine_err)
    }

    fn xcr0(&mut self) -> Result<u64, EmuError> {
        self.vcpu.xcr0().map_err(machine_err)
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        if self.cpuid.is_none() {
            self.cpuid = self.vcpu.cpuid_table().ok();
        }
        self.cpuid
            .as_ref()?
            .iter()
            .find(|e| e.function == leaf && (!e.significant_index || e.index == subleaf))
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
    }
}

fn cpu_state(regs: &squib_hv::X86Regs, s: &X86SpecialRegs) -> CpuState {
    CpuState {
        gpr: [
            regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ],
        rip: regs.rip,
        rflags: regs.rflags,
        cr0: s.cr0,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
        cpl: s.cs.dpl & 3,
        long64: s.efer & EFER_LMA != 0 && s.cs.l,
        fs_base: s.fs.base,
        gs_base: s.gs.base,
    }
}

fn write_back(regs: &mut squib_hv::X86Regs, c: &CpuState) {
    let g = &c.gpr;
    (regs.rax, regs.rcx, regs.rdx, regs.rbx) = (g[0], g[1], g[2], g[3]);
    (regs.rsp, regs.rbp, regs.rsi, regs.rdi) = (g[4], g[5], g[6], g[7]);
    (regs.r8, regs.r9, regs.r10, regs.r11) = (g[8], g[9], g[10], g[11]);
    (regs.r12, regs.r13, regs.r14, regs.r15) = (g[12], g[13], g[14], g[15]);
    regs.rip = c.rip;
    regs.rflags = c.rflags;
}

fn count(m: &PvmEmulationMetrics, op: Op) {
    match op {
        Op::Fwait => m.fwait.inc(),
        Op::Clac => m.clac.inc(),
        Op::Stac => m.stac.inc(),
        Op::Popcnt { .. } => m.popcnt.inc(),
        Op::Ldmxcsr(_) => m.ldmxcsr.inc(),
        Op::Stmxcsr(_) => m.stmxcsr.inc(),
        Op::Xsave { .. } => m.xsave.inc(),
        Op::Xrstor { .. } => m.xrstor.inc(),
    }
}

/// Tries to complete the instruction behind `err` on `vcpu`. `Ok(())`: the vCPU may run again
/// (the instruction retired, or its architectural exception was queued). `Err`: not emulated;
/// the caller reports `err` as before. Counted and logged either way.
pub fn complete(
    index: u32,
    vcpu: &mut dyn Vcpu,
    memory: &GuestMemoryMmap,
    err: &InternalError,
) -> Result<(), EmuError> {
    let metrics = &METRICS.pvm_emulation;
    let result = try_complete(vcpu, memory, err);
    match &result {
        Ok(Outcome::Retired(op)) => {
            count(metrics, *op);
            squib_devices::rl_info!(
                EMULATED_LOG,
                "vCPU {index}: emulated {} at {:#x} (KVM emulation failure)",
                op.name(),
                err.rip.unwrap_or(0)
            );
        }
        Ok(Outcome::Fault(op, e)) => {
            metrics.exceptions.inc();
            squib_devices::rl_info!(
                EMULATED_LOG,
                "vCPU {index}: emulated {} at {:#x} raised vector {} (error code {:?})",
                op.name(),
                err.rip.unwrap_or(0),
                e.vector,
                e.error_code
            );
        }
        Err(e) => {
            metrics.refused.inc();
            squib_devices::rl_warn!(
                EMULATED_LOG,
                "vCPU {index}: cannot emulate {:02x?} at {:#x}: {e}",
                err.insn,
                err.rip.unwrap_or(0)
            );
        }
    }
    result.map(|_| ())
}

fn try_complete(
    vcpu: &mut dyn Vcpu,
    memory: &GuestMemoryMmap,
    err: &InternalError,
) -> Result<Outcome, EmuError> {
    if err.kind != InternalErrorKind::Emulation || err.insn.is_empty() {
        return Err(EmuError::Unsupported("no instruction bytes reported"));
    }
    let x86 = vcpu
        .as_x86()
        .ok_or(EmuError::Unsupported("not an x86 vCPU"))?;
    let mut regs = x86.regs().map_err(machine_err)?;
    let mut sregs = x86.sregs().map_err(machine_err)?;
    if err.rip.is_some_and(|rip| rip != regs.rip) {
        return Err(EmuError::Unsupported("RIP moved since the failure"));
    }
    let mut cpu = cpu_state(&regs, &sregs);
    let mut machine = VcpuMachine {
        vcpu: &mut *x86,
        memory,
        cpuid: None,
    };
    let outcome = emulate(&mut cpu, &mut machine, &err.insn)?;
    match outcome {
        Outcome::Retired(_) => {
            write_back(&mut regs, &cpu);
            x86.set_regs(&regs).map_err(machine_err)?;
        }
        Outcome::Fault(_, e) => {
            if let Some(cr2) = e.cr2 {
                sregs.cr2 = cr2;
                x86.set_sregs(&sregs).map_err(machine_err)?;
            }
            x86.inject_exception(e.vector, e.error_code)
                .map_err(machine_err)?;
        }
    }
    Ok(outcome)
}
