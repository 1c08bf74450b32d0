//! virtio-mem's VMM side (`/hotplug/memory`, Firecracker's memory hotplug).
//!
//! - **Region.** `total_size_mib` of anonymous, unpopulated memory at the first slot-aligned
//!   address past the 64-bit MMIO gap (512 GiB; allocated before any pmem window, as
//!   Firecracker does). It is one region of the microVM's `GuestMemoryMmap` (so devices can use
//!   plugged memory for their buffers and snapshots save it), but it is *not* mapped into the
//!   guest at boot: [`KvmSlots`] maps a slot (`slot_size_mib`) with [`Vm::add_region`] when the
//!   driver plugs its first block and removes it when the last one goes; unplugged blocks are
//!   released to the host by the device.
//! - **Boot structures** (e820, kernel, initrd) only ever see RAM: the builder keeps the RAM-only
//!   memory for them and hands the full memory to the devices.
//! - **Restore**: the region comes back with the memory file; [`ram_only`] gives the builder
//!   the RAM to map at VM creation, and the device maps its plugged slots again.
//! - **API**: Firecracker's extra `PUT` rules and texts ([`validate`]), `PATCH` (the requested
//!   size), and the status pushed to the API mirror.
//!
//! Runs on the VMM thread (the mapper also on it: the device calls it from queue processing).

use std::sync::{Arc, Mutex, PoisonError};

use squib_arch::layout::FIRST_ADDR_PAST_64BITS_MMIO;
use squib_config::{
    action::{ApiAction, ApiResponse},
    schemas::hotplug_memory::{HotplugMemoryConfig, RawHotplugMemoryConfig},
};
use squib_core::{GuestMemoryMmap, GuestRegionMmap};
use squib_devices::persist::Persist;
use squib_devices::virtio::mem::VirtioMemState;
use squib_devices::virtio::{MemGeometry, SlotMapper, VirtioMem};
use squib_hv::{RegionSlot, Vm};
use squib_sys::memory_backing::{self, PageBacking};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::device_manager::DeviceManager;
use crate::error::DeviceError;
use crate::memdev::Outcome;
use crate::runtime_status::{RuntimeStatus, StatusSink};

/// Firecracker's device id of the (unique) virtio-mem device.
pub const MEM_DEV_ID: &str = "mem";
const MIB: u64 = 1 << 20;
/// Firecracker's smallest block size, MiB.
pub const MIN_BLOCK_SIZE_MIB: u64 = 2;
/// Firecracker's smallest slot size, MiB.
pub const MIN_SLOT_SIZE_MIB: u64 = 128;

/// Firecracker's `MemoryHotplugConfig::validate`, with its texts (the API schema checks less).
pub fn validate(cfg: &HotplugMemoryConfig) -> Result<(), String> {
    let err = |m: String| Err(format!("Memory hotplug config error: {m}"));
    if cfg.block_size_mib < MIN_BLOCK_SIZE_MIB {
        return err(format!(
            "Block size must not be lower than {MIN_BLOCK_SIZE_MIB} MiB"
        ));
    }
    if !cfg.block_size_mib.is_power_of_two() {
        return err("Block size must be a power of 2".to_owned());
    }
    if cfg.slot_size_mib < MIN_SLOT_SIZE_MIB {
        return err(format!(
            "Slot size must not be lower than {MIN_SLOT_SIZE_MIB} MiB"
        ));
    }
    if !cfg.slot_size_mib.is_multiple_of(cfg.block_size_mib) {
        return err(format!(
            "Slot size must be a multiple of block size ({} MiB)",
            cfg.block_size_mib
        ));
    }
    if cfg.total_size_mib < cfg.slot_size_mib {
        return err(format!(
            "Total size must not be lower than slot size ({} MiB)",
            cfg.slot_size_mib
        ));
    }
    if !cfg.total_size_mib.is_multiple_of(cfg.slot_size_mib) {
        return err(format!(
            "Total size must be a multiple of slot size ({} MiB)",
            cfg.slot_size_mib
        ));
    }
    Ok(())
}

/// The region's geometry for `cfg` (its address: the first slot-aligned address at 512 GiB).
pub fn geometry(cfg: &HotplugMemoryConfig) -> MemGeometry {
    let slot_size = cfg.slot_size_mib * MIB;
    MemGeometry {
        addr: FIRST_ADDR_PAST_64BITS_MMIO.next_multiple_of(slot_size),
        region_size: cfg.total_size_mib * MIB,
        block_size: cfg.block_size_mib * MIB,
        slot_size,
    }
}

/// `ram` plus the (unmapped, unpopulated) hotplug region of `cfg`, if any.
/// The region is backed like RAM (`backing`: `huge_pages`), as Firecracker allocates it.
pub fn guest_memory(
    ram: &GuestMemoryMmap,
    cfg: Option<&HotplugMemoryConfig>,
    backing: PageBacking,
) -> Result<GuestMemoryMmap, DeviceError> {
    let Some(cfg) = cfg else {
        return Ok(ram.clone());
    };
    let g = geometry(cfg);
    let size = usize::try_from(g.region_size)
        .map_err(|_| DeviceError::Config("Memory hotplug region too large".into()))?;
    let region: GuestRegionMmap =
        memory_backing::anonymous_region(GuestAddress(g.addr), size, backing).map_err(|e| {
            DeviceError::Config(format!("Cannot create the memory hotplug region: {e}"))
        })?;
    ram.insert_region(Arc::new(region))
        .map_err(|e| DeviceError::Config(format!("Cannot add the memory hotplug region: {e}")))
}

/// An `Arc` of the region of `memory` starting at `addr` (sharing its mapping).
fn region_arc(memory: &GuestMemoryMmap, addr: u64) -> Option<Arc<GuestRegionMmap>> {
    let r = memory.find_region(GuestAddress(addr))?;
    (r.start_addr().0 == addr)
        .then(|| GuestRegionMmap::with_arc(r.get_mmap(), r.start_addr()))
        .flatten()
        .map(Arc::new)
}

/// The RAM of a restored microVM: every region below its virtio-mem region (all of them
/// without one). Shares the mappings with `memory`.
pub fn ram_only(memory: &GuestMemoryMmap, hotplug_addr: Option<u64>) -> GuestMemoryMmap {
    let Some(addr) = hotplug_addr else {
        return memory.clone();
    };
    let regions: Vec<_> = memory
        .iter()
        .filter(|r| r.start_addr().0 < addr)
        .filter_map(|r| GuestRegionMmap::with_arc(r.get_mmap(), r.start_addr()).map(Arc::new))
        .collect();
    GuestMemoryMmap::from_arc_regions(regions).unwrap_or_else(|_| memory.clone())
}

/// The virtio-mem region's address in a saved microVM, if it had one.
pub fn restored_addr(state: &crate::device_manager::DeviceManagerState) -> Option<u64> {
    state.virtio.iter().find_map(|e| match &e.device {
        crate::device_manager::VirtioDeviceState::Mem(m) => Some(m.addr),
        _ => None,
    })
}

/// Maps and unmaps the hotplug region's slots on the hypervisor.
#[derive(Debug)]
pub struct KvmSlots {
    vm: Arc<dyn Vm>,
    region: Arc<GuestRegionMmap>,
    slot_size: u64,
    mapped: Mutex<Vec<Option<RegionSlot>>>,
}

impl SlotMapper for KvmSlots {
    fn set_slot(&self, index: usize, mapped: bool) -> Result<(), String> {
        let mut slots = self.mapped.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = slots
            .get_mut(index)
            .ok_or_else(|| format!("no slot {index}"))?;
        match (mapped, *entry) {
            (true, None) => {
                let offset = index as u64 * self.slot_size;
                let slot = self
                    .vm
                    .add_region(Arc::clone(&self.region), offset, self.slot_size, false)
                    .map_err(|e| e.to_string())?;
                *entry = Some(slot);
            }
            (false, Some(slot)) => {
                self.vm.remove_region(slot).map_err(|e| e.to_string())?;
                *entry = None;
            }
            _ => {}
        }
        Ok(())
    }
}

fn mapper(
    vm: &Arc<dyn Vm>,
    memory: &GuestMemoryMmap,
    g: &MemGeometry,
) -> Result<Arc<KvmSlots>, DeviceError> {
    let region = region_arc(memory, g.addr).ok_or_else(|| {
        DeviceError::Config("Memory hotplug region missing from guest memory".into())
    })?;
    if region.len() != g.region_size {
        return Err(DeviceError::Config(
            "Memory hotplug region size mismatch".into(),
        ));
    }
    let slots = usize::try_from(g.region_size / g.slot_size).unwrap_or(0);
    Ok(Arc::new(KvmSlots {
        vm: Arc::clone(vm),
        region,
        slot_size: g.slot_size,
        mapped: Mutex::new(vec![None; slots]),
    }))
}

/// Creates the virtio-mem device of `cfg` over the region in `memory`.
pub fn create(
    vm: &Arc<dyn Vm>,
    memory: &GuestMemoryMmap,
    cfg: &HotplugMemoryConfig,
) -> Result<Arc<Mutex<VirtioMem>>, DeviceError> {
    let g = geometry(cfg);
    let slots = mapper(vm, memory, &g)?;
    VirtioMem::new(g, slots)
        .map(|d| Arc::new(Mutex::new(d)))
        .map_err(|e| DeviceError::Config(format!("Failed to create memory hotplug device: {e}")))
}

/// Rebuilds a saved virtio-mem device (mapping its plugged slots again).
pub fn restore(
    vm: &Arc<dyn Vm>,
    memory: &GuestMemoryMmap,
    state: &VirtioMemState,
) -> Result<Arc<Mutex<VirtioMem>>, DeviceError> {
    let g = MemGeometry {
        addr: state.addr,
        region_size: state.region_size,
        block_size: state.block_size,
        slot_size: state.slot_size,
    };
    g.validate()
        .map_err(|e| DeviceError::Restore(format!("virtio-mem: {e}")))?;
    let slots = mapper(vm, memory, &g).map_err(|e| DeviceError::Restore(e.to_string()))?;
    VirtioMem::restore(slots, state)
        .map(|d| Arc::new(Mutex::new(d)))
        .map_err(|e| DeviceError::Restore(format!("virtio-mem: {e}")))
}

/// Routes the device's status to `sink` (which publishes the current one at once).
pub fn connect(mem: &Mutex<VirtioMem>, sink: &StatusSink) {
    let sink = sink.clone();
    mem.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set_status_sink(Arc::new(move |s| {
            sink.publish(RuntimeStatus::Hotplug(Some(s)));
        }));
}

/// The `PUT /hotplug/memory` configuration of a running device (after a restore).
pub fn api_config(mem: &Mutex<VirtioMem>) -> Option<HotplugMemoryConfig> {
    let g = mem
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .geometry();
    HotplugMemoryConfig::try_from(RawHotplugMemoryConfig {
        total_size_mib: g.region_size / MIB,
        block_size_mib: g.block_size / MIB,
        slot_size_mib: g.slot_size / MIB,
    })
    .ok()
}

/// `PUT` (pre-boot: Firecracker's rules) and `PATCH /hotplug/memory` (post-boot: the new
/// requested size).
pub fn handle(action: &ApiAction, devices: Option<&DeviceManager>) -> Outcome {
    match action {
        ApiAction::PutHotplugMemory(cfg) => match validate(cfg) {
            Ok(()) => Outcome::Apply,
            Err(msg) => Outcome::Reply(ApiResponse::bad_request(msg)),
        },
        ApiAction::PatchHotplugMemory(upd) => {
            let Some(mem) = devices.and_then(DeviceManager::virtio_mem) else {
                return Outcome::Reply(ApiResponse::bad_request(
                    "Memory hotplug update error: Failed perform action on device: Device not found",
                ));
            };
            let result = mem
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .update_requested_size(upd.requested_size_mib);
            match result {
                Ok(()) => Outcome::Reply(ApiResponse::NoContent),
                Err(e) => Outcome::Reply(ApiResponse::bad_request(format!(
                    "Memory hotplug update error: Failed to create memory hotplug device: {e}"
                ))),
            }
        }
        _ => Outcome::Reply(ApiResponse::bad_request(
            "Memory hotplug config error: unexpected action",
        )),
    }
}

/// Persistence of the device (for the device manager).
pub fn save(mem: &Mutex<VirtioMem>) -> VirtioMemState {
    mem.lock().unwrap_or_else(PoisonError::into_inner).save()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(total: u64, block: u64, slot: u64) -> HotplugMemoryConfig {
        HotplugMemoryConfig::try_from(RawHotplugMemoryConfig {
            total_size_mib: total,
            block_size_mib: block,
            slot_size_mib: slot,
        })
        .unwrap()
    }

    #[test]
    fn test_firecracker_rules_and_texts() {
        validate(&cfg(1024, 2, 128)).unwrap();
        let cases = [
            (cfg(1024, 1, 128), "Block size must not be lower than 2 MiB"),
            (cfg(1152, 6, 144), "Block size must be a power of 2"),
            (cfg(512, 2, 64), "Slot size must not be lower than 128 MiB"),
        ];
        for (c, text) in cases {
            assert_eq!(
                validate(&c).unwrap_err(),
                format!("Memory hotplug config error: {text}")
            );
        }
    }

    #[test]
    fn test_region_at_512_gib_and_ram_only_view() {
        let g = geometry(&cfg(256, 2, 128));
        assert_eq!((g.addr, g.region_size), (512 << 30, 256 << 20));
        assert_eq!(geometry(&cfg(384, 2, 384)).addr % (384 << 20), 0);
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let full = guest_memory(&ram, Some(&cfg(128, 2, 128)), PageBacking::Normal).unwrap();
        assert_eq!(full.num_regions(), 2);
        assert!(full.address_in_range(GuestAddress((512 << 30) + (127 << 20))));
        let back = ram_only(&full, Some(512 << 30));
        assert_eq!(back.num_regions(), 1);
        assert_eq!(ram_only(&full, None).num_regions(), 2);
        assert_eq!(
            guest_memory(&ram, None, PageBacking::Normal)
                .unwrap()
                .num_regions(),
            1
        );
        assert!(region_arc(&full, 512 << 30).is_some());
        assert!(region_arc(&full, 4096).is_none());
    }

    #[test]
    fn test_region_is_backed_like_ram() {
        // Firecracker allocates the virtio-mem region with the machine's huge_pages. Nothing is
        // touched here, so (MAP_NORESERVE) no free page is needed in the host pool.
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let full = match guest_memory(&ram, Some(&cfg(128, 2, 128)), PageBacking::Hugetlb2M) {
            Ok(m) => m,
            Err(e) => {
                println!("SKIPPED: this host cannot map 2 MiB hugetlb pages ({e})");
                return;
            }
        };
        let region = full.find_region(GuestAddress(512 << 30)).unwrap();
        assert_eq!(region.is_hugetlbfs(), Some(true));
        let normal = guest_memory(&ram, Some(&cfg(128, 2, 128)), PageBacking::Normal).unwrap();
        let region = normal.find_region(GuestAddress(512 << 30)).unwrap();
        assert_ne!(region.is_hugetlbfs(), Some(true));
    }
}
