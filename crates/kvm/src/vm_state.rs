//! KVM VM-level state for snapshots: PIC master/slave, IOAPIC, PIT2 and the kvmclock.
//!
//! The blob is `backend = "kvm"`, `version = 1`, `data` = JSON of [`KvmVmState`] (kvm-bindings
//! structs serialise as their raw bytes). Saved with every vCPU paused; restored after
//! `setup_platform` (irqchip + PIT exist) and before any vCPU runs, as Firecracker does. The
//! clock is restored without `KVM_CLOCK_TSC_STABLE` flags KVM refuses on `KVM_SET_CLOCK`.
//! The CPU template's capability changes travel with it (Firecracker's `KvmState`): restore
//! checks the same capabilities on this host before touching the VM.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};
use squib_hv::{CapabilityModifier, HvError, VmStateBlob};

use crate::state::{BACKEND, VERSION};

/// Everything KVM keeps per VM outside guest memory and vCPUs.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvmVmState {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
    /// The CPU template's `kvm_capabilities` (absent in older blobs).
    #[serde(default)]
    capabilities: Vec<CapabilityModifier>,
}

fn os(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HvError {
    move |e| HvError::errno(op, e.errno())
}

fn chip(fd: &VmFd, chip_id: u32) -> Result<kvm_irqchip, HvError> {
    let mut c = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut c).map_err(os("KVM_GET_IRQCHIP"))?;
    Ok(c)
}

/// Saves the VM's platform state and its capability changes.
pub fn save(fd: &VmFd, capabilities: Vec<CapabilityModifier>) -> Result<VmStateBlob, HvError> {
    let state = KvmVmState {
        pic_master: chip(fd, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: chip(fd, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: chip(fd, KVM_IRQCHIP_IOAPIC)?,
        pit: fd.get_pit2().map_err(os("KVM_GET_PIT2"))?,
        clock: fd.get_clock().map_err(os("KVM_GET_CLOCK"))?,
        capabilities,
    };
    let data = serde_json::to_vec(&state)
        .map_err(|e| HvError::InvalidArgument(format!("cannot encode the VM state: {e}")))?;
    Ok(VmStateBlob {
        backend: BACKEND.to_owned(),
        version: VERSION,
        data,
    })
}

/// Restores a blob from [`save`] after checking its capabilities on this host; returns them.
pub fn restore(fd: &VmFd, blob: &VmStateBlob) -> Result<Vec<CapabilityModifier>, HvError> {
    if blob.backend != BACKEND || blob.version != VERSION {
        return Err(HvError::InvalidArgument(format!(
            "VM state from backend {:?} v{} cannot be restored by {BACKEND} v{VERSION}",
            blob.backend, blob.version
        )));
    }
    let mut state: KvmVmState = serde_json::from_slice(&blob.data)
        .map_err(|e| HvError::InvalidArgument(format!("corrupt VM state: {e}")))?;
    crate::caps::check(&state.capabilities, |cap| {
        fd.check_extension_raw(libc::c_ulong::from(cap)) > 0
    })?;
    // The chip ids are part of the (untrusted) blob; pin them to the slot they are restored in.
    state.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    state.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    state.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    fd.set_pit2(&state.pit).map_err(os("KVM_SET_PIT2"))?;
    // Only KVM_CLOCK_REALTIME-less flags are accepted by KVM_SET_CLOCK here.
    state.clock.flags = 0;
    fd.set_clock(&state.clock).map_err(os("KVM_SET_CLOCK"))?;
    for c in [&state.pic_master, &state.pic_slave, &state.ioapic] {
        fd.set_irqchip(c).map_err(os("KVM_SET_IRQCHIP"))?;
    }
    Ok(state.capabilities)
}
