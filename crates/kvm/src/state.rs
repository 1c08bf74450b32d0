//! KVM vCPU state save/restore for snapshots, as an opaque [`VcpuStateBlob`].
//!
//! The blob is `backend = "kvm"`, `version = 1`, `data` = JSON of [`KvmVcpuState`] (the
//! kvm-bindings structs serialise as their raw bytes). Restore order follows Firecracker:
//! CPUID, MP state, regs, sregs, XSAVE, XCRs, debug regs, LAPIC, MSRs, vCPU events.
//!
//! Precondition (documented on the neutral trait): save only while the vCPU is stopped after
//! `run` returned `Interrupted` or before its first run, so no port-I/O/MMIO completion is
//! pending in `kvm_run`.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};
use squib_hv::{HvError, VcpuStateBlob};

/// Backend tag of KVM blobs.
pub const BACKEND: &str = "kvm";
/// Current blob format version.
pub const VERSION: u32 = 1;

/// Everything KVM needs to recreate a vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvmVcpuState {
    cpuid: Vec<kvm_cpuid_entry2>,
    mp_state: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debug_regs: kvm_debugregs,
    /// `None` when the VM has no in-kernel irqchip.
    lapic: Option<kvm_lapic_state>,
    msrs: Vec<kvm_msr_entry>,
    vcpu_events: kvm_vcpu_events,
}

fn os(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HvError {
    move |e| HvError::errno(op, e.errno())
}

/// Reads every MSR of `indices` that KVM lets us read (unreadable ones are skipped).
pub(crate) fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, HvError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk: Vec<kvm_msr_entry> = rest
            .iter()
            .take(kvm_bindings::KVM_MAX_MSR_ENTRIES)
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&chunk)
            .map_err(|_| HvError::InvalidArgument("MSR list".to_owned()))?;
        let n = fd.get_msrs(&mut msrs).map_err(os("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        // KVM stops at the first MSR it cannot read: skip it and go on.
        let consumed = (n + usize::from(n < chunk.len())).max(1);
        rest = &rest[consumed.min(rest.len())..];
    }
    Ok(out)
}

/// Captures the vCPU state.
pub(crate) fn save(fd: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuStateBlob, HvError> {
    let state = KvmVcpuState {
        cpuid: fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(os("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec(),
        mp_state: fd.get_mp_state().map_err(os("KVM_GET_MP_STATE"))?,
        regs: fd.get_regs().map_err(os("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(os("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(os("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(os("KVM_GET_XCRS"))?,
        debug_regs: fd.get_debug_regs().map_err(os("KVM_GET_DEBUGREGS"))?,
        lapic: match fd.get_lapic() {
            Ok(lapic) => Some(lapic),
            Err(e) if e.errno() == libc::ENXIO => None,
            Err(e) => return Err(HvError::errno("KVM_GET_LAPIC", e.errno())),
        },
        msrs: read_msrs(fd, msr_indices)?,
        vcpu_events: fd.get_vcpu_events().map_err(os("KVM_GET_VCPU_EVENTS"))?,
    };
    let data = serde_json::to_vec(&state).map_err(|e| HvError::State(e.to_string()))?;
    Ok(VcpuStateBlob {
        backend: BACKEND.to_owned(),
        version: VERSION,
        data,
    })
}

/// Applies a blob produced by [`save`]; returns the indices of the MSRs it restored.
pub(crate) fn restore(fd: &VcpuFd, blob: &VcpuStateBlob) -> Result<Vec<u32>, HvError> {
    if blob.backend != BACKEND || blob.version != VERSION {
        return Err(HvError::IncompatibleState {
            found_backend: blob.backend.clone(),
            found_version: blob.version,
        });
    }
    let s: KvmVcpuState =
        serde_json::from_slice(&blob.data).map_err(|e| HvError::State(e.to_string()))?;
    let cpuid = CpuId::from_entries(&s.cpuid)
        .map_err(|_| HvError::State(format!("{} CPUID entries", s.cpuid.len())))?;
    fd.set_cpuid2(&cpuid).map_err(os("KVM_SET_CPUID2"))?;
    fd.set_mp_state(s.mp_state)
        .map_err(os("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(os("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs).map_err(os("KVM_SET_SREGS"))?;
    // SAFETY: `s.xsave` is a complete 4 KiB `kvm_xsave`. This process never requests
    // dynamically enabled XSTATE features (AMX guest permission via arch_prctl), so KVM's XSAVE
    // area fits the legacy 4 KiB struct and the kernel reads no further.
    unsafe { fd.set_xsave(&s.xsave) }.map_err(os("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&s.xcrs).map_err(os("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&s.debug_regs)
        .map_err(os("KVM_SET_DEBUGREGS"))?;
    if let Some(lapic) = &s.lapic {
        fd.set_lapic(lapic).map_err(os("KVM_SET_LAPIC"))?;
    }
    for chunk in s.msrs.chunks(kvm_bindings::KVM_MAX_MSR_ENTRIES) {
        let msrs = Msrs::from_entries(chunk).map_err(|_| HvError::State("MSR list".to_owned()))?;
        let n = fd.set_msrs(&msrs).map_err(os("KVM_SET_MSRS"))?;
        if n != chunk.len() {
            return Err(HvError::State(format!(
                "KVM refused MSR {:#x} on restore",
                chunk[n].index
            )));
        }
    }
    fd.set_vcpu_events(&s.vcpu_events)
        .map_err(os("KVM_SET_VCPU_EVENTS"))?;
    Ok(s.msrs.iter().map(|m| m.index).collect())
}
