//! A KVM VM: platform devices, memslots, interrupt routing helpers, vCPU creation.
//!
//! `Send + Sync`; the memslot table is behind a mutex. Guest memory objects passed to
//! `map_memory` are cloned and kept for the VM's lifetime, so the host mappings registered with
//! KVM can never be unmapped while the VM exists.

use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;

use kvm_bindings::{
    KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, IoEventAddress as KvmIoEventAddress, NoDatamatch, VmFd};
use squib_hv::{
    CapabilityModifier, DataMatch, GuestMemoryMmap, GuestRegionMmap, HvError, IoEventAddress,
    RegionSlot, Vcpu, Vm,
};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::hypervisor::KvmOptions;
use crate::kick::install_kick_handler;
use crate::vcpu::KvmVcpu;

/// Firecracker's KVM TSS address (three pages just below the 4 GiB boundary's BIOS area).
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

#[derive(Debug, Default)]
struct Memslots {
    next_slot: u32,
    /// Kept alive for the VM's lifetime: KVM holds raw pointers into these mappings.
    memories: Vec<GuestMemoryMmap>,
    /// Every registered slot, in mapping order (re-registered to toggle dirty logging).
    regions: Vec<kvm_userspace_memory_region>,
    /// `KVM_MEM_LOG_DIRTY_PAGES` on every slot.
    dirty_log: bool,
    /// Slots added with `add_region` (pmem windows, virtio-mem slots), kept alive until
    /// removed; not dirty-logged.
    extra: BTreeMap<u32, (kvm_userspace_memory_region, Arc<GuestRegionMmap>)>,
    /// Slot numbers freed by `remove_region`, reused first.
    free: Vec<u32>,
}

/// A KVM virtual machine.
#[derive(Debug)]
pub struct KvmVm {
    fd: VmFd,
    options: KvmOptions,
    slots: Mutex<Memslots>,
    msr_indices: Arc<Vec<u32>>,
    /// The CPU template's capability changes (saved in the VM state, checked on restore).
    capabilities: Mutex<Vec<CapabilityModifier>>,
}

impl KvmVm {
    pub(crate) fn new(
        fd: VmFd,
        options: KvmOptions,
        msr_indices: Vec<u32>,
        capabilities: Vec<CapabilityModifier>,
    ) -> Self {
        Self {
            fd,
            options,
            slots: Mutex::new(Memslots::default()),
            msr_indices: Arc::new(msr_indices),
            capabilities: Mutex::new(capabilities),
        }
    }

    fn capabilities(&self) -> std::sync::MutexGuard<'_, Vec<CapabilityModifier>> {
        self.capabilities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a vCPU with its concrete type (tests and KVM-specific callers).
    pub fn create_kvm_vcpu(&self, index: u32) -> Result<KvmVcpu, HvError> {
        install_kick_handler()?;
        let fd = self
            .fd
            .create_vcpu(u64::from(index))
            .map_err(|e| HvError::errno("KVM_CREATE_VCPU", e.errno()))?;
        Ok(KvmVcpu::new(
            fd,
            index,
            self.options,
            Arc::clone(&self.msr_indices),
        ))
    }
}

fn ioevent_addr(addr: IoEventAddress) -> KvmIoEventAddress {
    match addr {
        IoEventAddress::Pio(p) => KvmIoEventAddress::Pio(u64::from(p)),
        IoEventAddress::Mmio(a) => KvmIoEventAddress::Mmio(a),
    }
}

impl Vm for KvmVm {
    fn setup_platform(&self) -> Result<(), HvError> {
        self.fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| HvError::errno("KVM_SET_TSS_ADDR", e.errno()))?;
        self.fd
            .create_irq_chip()
            .map_err(|e| HvError::errno("KVM_CREATE_IRQCHIP", e.errno()))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| HvError::errno("KVM_CREATE_PIT2", e.errno()))
    }

    fn map_memory(&self, memory: &GuestMemoryMmap) -> Result<(), HvError> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keep the mappings alive before KVM learns about them.
        slots.memories.push(memory.clone());
        let flags = if slots.dirty_log {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        for region in memory.iter() {
            let slot = slots.next_slot;
            let mem_region = kvm_userspace_memory_region {
                slot,
                flags,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: `userspace_addr..+memory_size` is a live mmap owned by `region`, and a clone
            // of the whole `GuestMemoryMmap` (sharing the region `Arc`s) is stored in `self.slots`
            // above, so the mapping outlives the VM fd's use of it.
            unsafe { self.fd.set_user_memory_region(mem_region) }
                .map_err(|e| HvError::errno("KVM_SET_USER_MEMORY_REGION", e.errno()))?;
            slots.regions.push(mem_region);
            slots.next_slot += 1;
        }
        Ok(())
    }

    fn add_region(
        &self,
        region: Arc<GuestRegionMmap>,
        offset: u64,
        len: u64,
        read_only: bool,
    ) -> Result<RegionSlot, HvError> {
        let page = 4096;
        let in_region = offset
            .checked_add(len)
            .is_some_and(|end| end <= region.len());
        if len == 0 || !offset.is_multiple_of(page) || !len.is_multiple_of(page) || !in_region {
            return Err(HvError::InvalidArgument(format!(
                "memory region range {offset:#x} (+{len:#x}) is not page-aligned inside the region"
            )));
        }
        let host = usize::try_from(offset)
            .ok()
            .map(|o| region.as_ptr().wrapping_add(o) as u64)
            .ok_or_else(|| HvError::InvalidArgument("memory region offset".to_owned()))?;
        if read_only && !self.fd.check_extension(Cap::ReadonlyMem) {
            return Err(HvError::Unsupported(
                "read-only memory slots (KVM_CAP_READONLY_MEM)",
            ));
        }
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = if let Some(s) = slots.free.pop() {
            s
        } else {
            let s = slots.next_slot;
            slots.next_slot += 1;
            s
        };
        let mem_region = kvm_userspace_memory_region {
            slot,
            flags: if read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: region.start_addr().0 + offset,
            memory_size: len,
            userspace_addr: host,
        };
        // SAFETY: `userspace_addr..+memory_size` lies inside the live mmap owned by `region`
        // (checked above: `offset + len <= region.len()`); the `Arc` is stored in
        // `slots.extra` right below and only dropped after KVM forgot the slot
        // (`remove_region`) or with the VM.
        if let Err(e) = unsafe { self.fd.set_user_memory_region(mem_region) } {
            slots.free.push(slot);
            return Err(HvError::errno("KVM_SET_USER_MEMORY_REGION", e.errno()));
        }
        slots.extra.insert(slot, (mem_region, region));
        Ok(RegionSlot(slot))
    }

    fn remove_region(&self, slot: RegionSlot) -> Result<(), HvError> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((region, _)) = slots.extra.get(&slot.0) else {
            return Err(HvError::InvalidArgument(format!(
                "no added memory region in slot {}",
                slot.0
            )));
        };
        let gone = kvm_userspace_memory_region {
            memory_size: 0,
            ..*region
        };
        // SAFETY: a zero-sized region deletes the slot; KVM stops using the mapping, which is
        // only dropped (below) after the ioctl succeeded.
        unsafe { self.fd.set_user_memory_region(gone) }
            .map_err(|e| HvError::errno("KVM_SET_USER_MEMORY_REGION(delete)", e.errno()))?;
        slots.extra.remove(&slot.0);
        slots.free.push(slot.0);
        Ok(())
    }

    fn save_state(&self) -> Result<squib_hv::VmStateBlob, HvError> {
        let capabilities = self.capabilities().clone();
        crate::vm_state::save(&self.fd, capabilities)
    }

    fn restore_state(&self, state: &squib_hv::VmStateBlob) -> Result<(), HvError> {
        let capabilities = crate::vm_state::restore(&self.fd, state)?;
        *self.capabilities() = capabilities;
        Ok(())
    }

    fn enable_dirty_log(&self) -> Result<(), HvError> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.dirty_log {
            return Ok(());
        }
        for region in &mut slots.regions {
            region.flags |= KVM_MEM_LOG_DIRTY_PAGES;
            // SAFETY: the same live mapping registered by `map_memory` (kept alive in
            // `slots.memories`); only the flags change.
            unsafe { self.fd.set_user_memory_region(*region) }
                .map_err(|e| HvError::errno("KVM_SET_USER_MEMORY_REGION", e.errno()))?;
        }
        slots.dirty_log = true;
        Ok(())
    }

    fn dirty_log(&self) -> Result<Vec<Vec<u64>>, HvError> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !slots.dirty_log {
            return Err(HvError::InvalidArgument(
                "dirty page logging is not enabled".to_owned(),
            ));
        }
        slots
            .regions
            .iter()
            .map(|r| {
                let size = usize::try_from(r.memory_size)
                    .map_err(|_| HvError::InvalidArgument("memslot size".to_owned()))?;
                self.fd
                    .get_dirty_log(r.slot, size)
                    .map_err(|e| HvError::errno("KVM_GET_DIRTY_LOG", e.errno()))
            })
            .collect()
    }

    fn create_vcpu(&self, index: u32) -> Result<Box<dyn Vcpu>, HvError> {
        Ok(Box::new(self.create_kvm_vcpu(index)?))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<(), HvError> {
        self.fd
            .set_irq_line(gsi, level)
            .map_err(|e| HvError::errno("KVM_IRQ_LINE", e.errno()))
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), HvError> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(|e| HvError::errno("KVM_IRQFD", e.errno()))
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), HvError> {
        self.fd
            .unregister_irqfd(fd, gsi)
            .map_err(|e| HvError::errno("KVM_IRQFD(deassign)", e.errno()))
    }

    fn register_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: DataMatch,
    ) -> Result<(), HvError> {
        let a = ioevent_addr(addr);
        let r = match datamatch {
            DataMatch::Any => self.fd.register_ioevent(fd, &a, NoDatamatch),
            DataMatch::U8(v) => self.fd.register_ioevent(fd, &a, v),
            DataMatch::U16(v) => self.fd.register_ioevent(fd, &a, v),
            DataMatch::U32(v) => self.fd.register_ioevent(fd, &a, v),
            DataMatch::U64(v) => self.fd.register_ioevent(fd, &a, v),
        };
        r.map_err(|e| HvError::errno("KVM_IOEVENTFD", e.errno()))
    }

    fn unregister_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: DataMatch,
    ) -> Result<(), HvError> {
        let a = ioevent_addr(addr);
        let r = match datamatch {
            DataMatch::Any => self.fd.unregister_ioevent(fd, &a, NoDatamatch),
            DataMatch::U8(v) => self.fd.unregister_ioevent(fd, &a, v),
            DataMatch::U16(v) => self.fd.unregister_ioevent(fd, &a, v),
            DataMatch::U32(v) => self.fd.unregister_ioevent(fd, &a, v),
            DataMatch::U64(v) => self.fd.unregister_ioevent(fd, &a, v),
        };
        r.map_err(|e| HvError::errno("KVM_IOEVENTFD(deassign)", e.errno()))
    }
}
