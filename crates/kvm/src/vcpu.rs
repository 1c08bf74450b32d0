//! A KVM vCPU: the run loop, exit translation, boot-state application.
//!
//! Threading: `Send`, used by one thread at a time (`&mut self`). The kick path is in
//! [`crate::kick`]; the only cross-thread object is the [`KvmKicker`].

use std::sync::Arc;

use kvm_bindings::{
    CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
    KVM_SYSTEM_EVENT_WAKEUP, Msrs, kvm_fpu, kvm_msr_entry, kvm_run, kvm_xsave,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};
use squib_hv::{
    CpuidEntry, HvError, InternalError, InternalErrorKind, MsrEntry, SystemEventKind, Vcpu,
    VcpuExit, VcpuIo, VcpuKicker, VcpuStateBlob, VcpuX86, X86BootState, X86Regs, X86SpecialRegs,
};

use crate::convert::{
    cpuid_from_kvm, cpuid_to_kvm, lints, regs_from_kvm, regs_to_kvm, set_lints, sregs_from_kvm,
    sregs_onto_kvm,
};
use crate::hypervisor::KvmOptions;
use crate::kick::{KickState, KvmKicker, RunGuard};
use crate::state;

/// `KVM_INTERNAL_ERROR_EMULATION`.
const SUBERROR_EMULATION: u32 = 1;
/// `KVM_INTERNAL_ERROR_SIMUL_EX`.
const SUBERROR_SIMUL_EX: u32 = 2;
/// `KVM_INTERNAL_ERROR_DELIVERY_EV`.
const SUBERROR_DELIVERY_EV: u32 = 3;
/// `KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON`.
const SUBERROR_UNEXPECTED_EXIT: u32 = 4;
/// `KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES`.
const EMULATION_FLAG_INSN_BYTES: u64 = 1;
/// x86 `#BP` vector.
const BP_VECTOR: u8 = 3;
/// The `int3` opcode.
const INT3: u8 = 0xcc;

/// A KVM vCPU.
#[derive(Debug)]
pub struct KvmVcpu {
    fd: VcpuFd,
    index: u32,
    options: KvmOptions,
    kick: Arc<KickState>,
    /// MSRs saved in snapshots (`KVM_GET_MSR_INDEX_LIST`).
    msr_indices: Arc<Vec<u32>>,
    /// MSRs set at boot (CPU template) or restored that the index list lacks: saved too, as
    /// Firecracker adds a template's MSRs to `msrs_to_save`.
    extra_msrs: Vec<u32>,
}

fn os(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HvError {
    move |e| HvError::errno(op, e.errno())
}

impl KvmVcpu {
    pub(crate) fn new(
        fd: VcpuFd,
        index: u32,
        options: KvmOptions,
        msr_indices: Arc<Vec<u32>>,
    ) -> Self {
        Self {
            fd,
            index,
            options,
            kick: Arc::new(KickState::default()),
            msr_indices,
            extra_msrs: Vec::new(),
        }
    }

    /// Sets the vCPU's CPUID table (`KVM_SET_CPUID2`).
    pub fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), HvError> {
        let entries: Vec<_> = entries.iter().map(cpuid_to_kvm).collect();
        let cpuid = CpuId::from_entries(&entries)
            .map_err(|_| HvError::InvalidArgument(format!("{} CPUID entries", entries.len())))?;
        self.fd.set_cpuid2(&cpuid).map_err(os("KVM_SET_CPUID2"))
    }

    /// Reads `indices` in order, stopping at the first MSR KVM cannot read (the readable
    /// prefix is returned).
    pub fn read_msr_prefix(&self, indices: &[u32]) -> Result<Vec<MsrEntry>, HvError> {
        let mut out = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(kvm_bindings::KVM_MAX_MSR_ENTRIES) {
            let entries: Vec<kvm_msr_entry> = chunk
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs = Msrs::from_entries(&entries)
                .map_err(|_| HvError::InvalidArgument("MSR list".to_owned()))?;
            let n = self.fd.get_msrs(&mut msrs).map_err(os("KVM_GET_MSRS"))?;
            out.extend(msrs.as_slice()[..n].iter().map(|m| MsrEntry {
                index: m.index,
                value: m.data,
            }));
            if n < chunk.len() {
                break;
            }
        }
        Ok(out)
    }

    fn remember_msrs(&mut self, indices: impl IntoIterator<Item = u32>) {
        for index in indices {
            if !self.msr_indices.contains(&index) && !self.extra_msrs.contains(&index) {
                self.extra_msrs.push(index);
            }
        }
    }

    /// Raw LVT LINT0 / LINT1 register values (diagnostics and tests).
    pub fn lapic_lints(&self) -> Result<(u32, u32), HvError> {
        let lapic = self.fd.get_lapic().map_err(os("KVM_GET_LAPIC"))?;
        Ok(lints(&lapic))
    }

    /// Reads an MSR (diagnostics and tests).
    pub fn msr(&self, index: u32) -> Result<u64, HvError> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|_| HvError::InvalidArgument("MSR list".to_owned()))?;
        let n = self.fd.get_msrs(&mut msrs).map_err(os("KVM_GET_MSRS"))?;
        if n != 1 {
            return Err(HvError::InvalidArgument(format!(
                "MSR {index:#x} not readable"
            )));
        }
        Ok(msrs.as_slice()[0].data)
    }

    /// Reads `KVM_EXIT_INTERNAL_ERROR` details from `kvm_run`.
    fn internal_error(&mut self) -> InternalError {
        let run = self.fd.get_kvm_run();
        // SAFETY: called right after `KVM_RUN` returned `KVM_EXIT_INTERNAL_ERROR`, for which the
        // kernel fills the `internal` member of the exit union; all its bit patterns are valid.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let ndata = usize::try_from(internal.ndata)
            .unwrap_or(usize::MAX)
            .min(internal.data.len());
        let words = &internal.data[..ndata];
        let mut insn = Vec::new();
        if internal.suberror == SUBERROR_EMULATION
            && words.len() >= 2
            && words[0] & EMULATION_FLAG_INSN_BYTES != 0
        {
            // Layout: flags (u64), insn_size (u8), insn_bytes[15].
            let bytes: Vec<u8> = words[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
            let size = usize::from(bytes[0]).min(15).min(bytes.len() - 1);
            insn.extend_from_slice(&bytes[1..=size]);
        }
        let kind = match internal.suberror {
            SUBERROR_EMULATION => InternalErrorKind::Emulation,
            SUBERROR_SIMUL_EX => InternalErrorKind::SimultaneousException,
            SUBERROR_DELIVERY_EV => InternalErrorKind::DeliveryEvent,
            SUBERROR_UNEXPECTED_EXIT => InternalErrorKind::UnexpectedExitReason,
            other => InternalErrorKind::Other(other),
        };
        InternalError {
            kind,
            suberror: internal.suberror,
            rip: self.fd.get_regs().ok().map(|r| r.rip),
            insn,
            data: words.to_vec(),
        }
    }

    /// PVM workaround: complete an `int3` the emulator refused by injecting `#BP` after it.
    fn inject_breakpoint(&mut self) -> Result<(), HvError> {
        let mut regs = self.fd.get_regs().map_err(os("KVM_GET_REGS"))?;
        regs.rip = regs.rip.wrapping_add(1);
        self.fd.set_regs(&regs).map_err(os("KVM_SET_REGS"))?;
        let mut events = self
            .fd
            .get_vcpu_events()
            .map_err(os("KVM_GET_VCPU_EVENTS"))?;
        events.exception.injected = 1;
        events.exception.nr = BP_VECTOR;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        self.fd
            .set_vcpu_events(&events)
            .map_err(os("KVM_SET_VCPU_EVENTS"))
    }

    fn handle_internal_error(&mut self) -> Result<VcpuExit, HvError> {
        let err = self.internal_error();
        if self.options.int3_workaround
            && err.kind == InternalErrorKind::Emulation
            && err.insn.first() == Some(&INT3)
        {
            self.inject_breakpoint()?;
            return Ok(VcpuExit::Handled);
        }
        Ok(VcpuExit::InternalError(err))
    }
}

fn system_event(kind: u32) -> SystemEventKind {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => SystemEventKind::Shutdown,
        KVM_SYSTEM_EVENT_RESET => SystemEventKind::Reset,
        KVM_SYSTEM_EVENT_CRASH => SystemEventKind::Crash,
        KVM_SYSTEM_EVENT_WAKEUP => SystemEventKind::Wakeup,
        other => SystemEventKind::Other(other),
    }
}

/// Width of one port access of the pending `KVM_EXIT_IO`, for splitting `rep ins/outs`.
fn io_access_size(run: *const kvm_run, total: usize) -> usize {
    // SAFETY: `run` points at this vCPU's `kvm_run` mapping, alive as long as the `VcpuFd`; the
    // current exit is `KVM_EXIT_IO`, so the kernel filled the `io` union member. We copy one
    // byte that does not overlap the I/O data area handed out by `VcpuFd::run`.
    let size = unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io.size).read_volatile() };
    match usize::from(size) {
        s @ (1 | 2 | 4) if total.is_multiple_of(s) => s,
        _ => total.max(1),
    }
}

impl Vcpu for KvmVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn run(&mut self, io: &mut dyn VcpuIo) -> Result<VcpuExit, HvError> {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        let kick = Arc::clone(&self.kick);
        let _guard = RunGuard::enter(&kick, run_ptr);
        if kick.take_pending() {
            // Enter anyway with immediate_exit: KVM completes a pending I/O or MMIO exit and then
            // returns EINTR, so after `Interrupted` the vCPU state is consistent (snapshots).
            self.fd.set_kvm_immediate_exit(1);
        }
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                kick.take_pending();
                return Ok(VcpuExit::Interrupted);
            }
            Err(e) => return Err(HvError::errno("KVM_RUN", e.errno())),
        };
        let translated = match exit {
            KvmExit::IoIn(port, data) => {
                let size = io_access_size(run_ptr, data.len());
                for chunk in data.chunks_mut(size) {
                    io.pio_read(port, chunk);
                }
                VcpuExit::Handled
            }
            KvmExit::IoOut(port, data) => {
                let size = io_access_size(run_ptr, data.len());
                for chunk in data.chunks(size) {
                    io.pio_write(port, chunk);
                }
                VcpuExit::Handled
            }
            KvmExit::MmioRead(addr, data) => {
                io.mmio_read(addr, data);
                VcpuExit::Handled
            }
            KvmExit::MmioWrite(addr, data) => {
                io.mmio_write(addr, data);
                VcpuExit::Handled
            }
            KvmExit::Hlt => VcpuExit::Halted,
            KvmExit::Shutdown => VcpuExit::Shutdown,
            KvmExit::SystemEvent(kind, _) => VcpuExit::SystemEvent(system_event(kind)),
            KvmExit::FailEntry(hardware_reason, cpu) => VcpuExit::FailEntry {
                hardware_reason,
                cpu,
            },
            KvmExit::Intr => VcpuExit::Interrupted,
            KvmExit::IrqWindowOpen | KvmExit::IoapicEoi(_) => VcpuExit::Handled,
            KvmExit::InternalError => return self.handle_internal_error(),
            other => VcpuExit::Unknown(format!("{other:?}")),
        };
        Ok(translated)
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        Arc::new(KvmKicker {
            state: Arc::clone(&self.kick),
        })
    }

    fn save_state(&self) -> Result<VcpuStateBlob, HvError> {
        if self.extra_msrs.is_empty() {
            return state::save(&self.fd, &self.msr_indices);
        }
        let mut indices = self.msr_indices.to_vec();
        indices.extend_from_slice(&self.extra_msrs);
        state::save(&self.fd, &indices)
    }

    fn restore_state(&mut self, state: &VcpuStateBlob) -> Result<(), HvError> {
        let restored = state::restore(&self.fd, state)?;
        self.remember_msrs(restored);
        Ok(())
    }

    fn as_x86(&mut self) -> Option<&mut dyn VcpuX86> {
        Some(self)
    }
}

impl VcpuX86 for KvmVcpu {
    fn apply_boot_state(&mut self, state: &X86BootState) -> Result<(), HvError> {
        // CPUID first: KVM validates CR4/EFER bits in SET_SREGS against the guest CPUID, and
        // CPUID-dependent MSRs (Linux >= 6.13) only accept values once it is set.
        self.set_cpuid(&state.cpuid)?;
        self.remember_msrs(state.msrs.iter().map(|m| m.index));

        let msr_entries: Vec<kvm_msr_entry> = state
            .msrs
            .iter()
            .map(|m| kvm_msr_entry {
                index: m.index,
                data: m.value,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&msr_entries)
            .map_err(|_| HvError::InvalidArgument(format!("{} MSRs", msr_entries.len())))?;
        let set = self.fd.set_msrs(&msrs).map_err(os("KVM_SET_MSRS"))?;
        if set != msr_entries.len() {
            return Err(HvError::InvalidArgument(format!(
                "KVM refused MSR {:#x}",
                msr_entries[set].index
            )));
        }

        self.set_regs(&state.regs)?;
        let fpu = kvm_fpu {
            fcw: state.fpu.fcw,
            mxcsr: state.fpu.mxcsr,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(os("KVM_SET_FPU"))?;
        self.set_sregs(&state.sregs)?;

        if let Some(l) = state.lapic {
            let mut lapic = self.fd.get_lapic().map_err(os("KVM_GET_LAPIC"))?;
            set_lints(&mut lapic, l.lint0, l.lint1);
            self.fd.set_lapic(&lapic).map_err(os("KVM_SET_LAPIC"))?;
        }
        Ok(())
    }

    fn regs(&self) -> Result<X86Regs, HvError> {
        let r = self.fd.get_regs().map_err(os("KVM_GET_REGS"))?;
        Ok(regs_from_kvm(&r))
    }

    fn set_regs(&mut self, regs: &X86Regs) -> Result<(), HvError> {
        self.fd
            .set_regs(&regs_to_kvm(regs))
            .map_err(os("KVM_SET_REGS"))
    }

    fn sregs(&self) -> Result<X86SpecialRegs, HvError> {
        let s = self.fd.get_sregs().map_err(os("KVM_GET_SREGS"))?;
        Ok(sregs_from_kvm(&s))
    }

    fn set_sregs(&mut self, sregs: &X86SpecialRegs) -> Result<(), HvError> {
        let mut base = self.fd.get_sregs().map_err(os("KVM_GET_SREGS"))?;
        sregs_onto_kvm(sregs, &mut base);
        self.fd.set_sregs(&base).map_err(os("KVM_SET_SREGS"))
    }

    fn xsave_area(&self) -> Result<Vec<u8>, HvError> {
        let xsave = self.fd.get_xsave().map_err(os("KVM_GET_XSAVE"))?;
        Ok(xsave.region.iter().flat_map(|w| w.to_le_bytes()).collect())
    }

    fn set_xsave_area(&mut self, area: &[u8]) -> Result<(), HvError> {
        let mut xsave = kvm_xsave::default();
        if area.len() != xsave.region.len() * 4 {
            return Err(HvError::InvalidArgument(format!(
                "XSAVE area of {} bytes (KVM's is {})",
                area.len(),
                xsave.region.len() * 4
            )));
        }
        for (w, b) in xsave.region.iter_mut().zip(area.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        // SAFETY: `xsave` is a complete 4 KiB `kvm_xsave`. This process never requests
        // dynamically enabled XSAVE features (AMX), so KVM's guest XSAVE state fits in 4 KiB.
        unsafe { self.fd.set_xsave(&xsave) }.map_err(os("KVM_SET_XSAVE"))
    }

    fn xcr0(&self) -> Result<u64, HvError> {
        let xcrs = self.fd.get_xcrs().map_err(os("KVM_GET_XCRS"))?;
        let n = usize::try_from(xcrs.nr_xcrs)
            .unwrap_or(0)
            .min(xcrs.xcrs.len());
        Ok(xcrs.xcrs[..n]
            .iter()
            .find(|x| x.xcr == 0)
            .map_or(1, |x| x.value))
    }

    fn cpuid_table(&self) -> Result<Vec<CpuidEntry>, HvError> {
        let cpuid = self
            .fd
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(os("KVM_GET_CPUID2"))?;
        Ok(cpuid.as_slice().iter().map(cpuid_from_kvm).collect())
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) -> Result<(), HvError> {
        let mut events = self
            .fd
            .get_vcpu_events()
            .map_err(os("KVM_GET_VCPU_EVENTS"))?;
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = u8::from(error_code.is_some());
        events.exception.error_code = error_code.unwrap_or(0);
        self.fd
            .set_vcpu_events(&events)
            .map_err(os("KVM_SET_VCPU_EVENTS"))
    }
}
