//! Snapshots: `PUT /snapshot/create` and `PUT /snapshot/load`, as Firecracker.
//!
//! - [`MicrovmState`] is what the state file holds (inside `squib-snapshot`'s container: the
//!   Firecracker outer form with a squib envelope): machine parameters, the memory layout, the
//!   VM's and every vCPU's backend state, and every device ([`DeviceManagerState`]).
//! - [`create`] (VM paused): vCPU and VM state, devices (after their in-flight work drained),
//!   then the memory file: Full writes all of guest memory, Diff only the pages dirtied since
//!   the previous snapshot (the hypervisor's dirty log for guest writes OR the memory's own
//!   bitmap for the VMM's writes) into a sparse file. Both files are written atomically (temp
//!   file, fsync, rename), so a crash leaves the previous pair intact. After a snapshot the
//!   dirty state is cleared.
//! - [`load_memory`]: the restore-side memory backends, with the page backing of the request's
//!   `huge_pages` resolved against the snapshot's (`crate::huge_pages`). `File` maps the memory
//!   file `MAP_PRIVATE` (pages load lazily, so restore cost does not grow with guest size);
//!   `Uffd` hands anonymous memory to a page-fault handler on a Unix socket with Firecracker's
//!   handshake.
//!
//! Runs on the VMM thread.

use std::path::Path;

use serde::{Deserialize, Serialize};
use squib_config::schemas::machine_config::HugePages;
use squib_config::schemas::snapshot::{
    MemBackendType, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
};
use squib_core::{GuestMemoryMmap, MAX_SUPPORTED_VCPUS};
use squib_hv::{VcpuStateBlob, VmStateBlob};
use squib_snapshot::{DirtyPages, MemoryLayout, PAGE_SIZE};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::builder::{MachineState, Microvm};
use crate::device_manager::DeviceManagerState;

/// Everything a state file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MicrovmState {
    /// Machine parameters.
    pub machine: MachineState,
    /// Guest memory regions and their offsets in the memory file.
    pub memory: MemoryLayout,
    /// The VM's platform state.
    pub vm: VmStateBlob,
    /// Every vCPU's state, in index order.
    pub vcpus: Vec<VcpuStateBlob>,
    /// Every device.
    pub devices: DeviceManagerState,
    /// MMDS configuration and token key, if MMDS was configured.
    pub mmds: Option<crate::mmds::MmdsState>,
}

/// Why a snapshot could not be created or loaded. Texts follow Firecracker's where it has them.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Diff requested without dirty-page tracking.
    #[error("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.")]
    DiffWithoutTracking,
    /// The VM is running.
    #[error(
        "Cannot save the microVM state: Operation not allowed: save/restore unavailable while running"
    )]
    NotPaused,
    /// Saving vCPU/VM/device state failed.
    #[error("Cannot save the microVM state: {0}")]
    SaveState(String),
    /// The state file could not be written or read.
    #[error("{0}")]
    StateFile(#[from] squib_snapshot::SnapshotError),
    /// The memory file could not be written.
    #[error("Cannot save the memory: {0}")]
    MemoryFile(#[from] squib_snapshot::MemoryFileError),
    /// The memory backend could not provide guest memory.
    #[error("Cannot restore the guest memory: {0}")]
    RestoreMemory(String),
    /// The state is inconsistent.
    #[error("Invalid snapshot state: {0}")]
    Invalid(String),
    /// A combination Firecracker refuses, with its full text (hugetlbfs + `File` backend).
    #[error("{0}")]
    Refused(&'static str),
}

/// Reads the pages dirtied since the last call (hypervisor log | memory bitmap, word by word)
/// and clears both. Regions the hypervisor does not log (the virtio-mem region, mapped slot by
/// slot) are saved whole.
fn dirty_pages(vm: &Microvm) -> Result<Vec<DirtyPages>, SnapshotError> {
    let log = vm
        .vm
        .dirty_log()
        .map_err(|e| SnapshotError::SaveState(e.to_string()))?;
    let mut out = Vec::with_capacity(vm.memory.num_regions());
    for (index, region) in vm.memory.iter().enumerate() {
        let Some(kvm) = log.get(index) else {
            (**region).bitmap().reset();
            out.push(DirtyPages::All);
            continue;
        };
        let pages = usize::try_from(region.len() / PAGE_SIZE).unwrap_or(usize::MAX);
        let mut bits = kvm.clone();
        bits.resize(pages.div_ceil(64), 0);
        // The VMM's own writes (device DMA), tracked by vm-memory at the same page size.
        for (word, vmm) in bits.iter_mut().zip((**region).bitmap().get_and_reset()) {
            *word |= vmm;
        }
        out.push(DirtyPages::Bitmap(bits));
    }
    Ok(out)
}

/// Clears the dirty state after a Full snapshot (the next Diff starts from it).
fn clear_dirty(vm: &Microvm) {
    if vm.machine.track_dirty_pages {
        let _ = vm.vm.dirty_log();
    }
    for region in vm.memory.iter() {
        (**region).bitmap().reset();
    }
}

/// `PUT /snapshot/create` on a paused microVM.
pub fn create(
    vm: &mut Microvm,
    params: &SnapshotCreateParams,
    mmds: Option<crate::mmds::MmdsState>,
) -> Result<(), SnapshotError> {
    if !vm.is_paused() {
        return Err(SnapshotError::NotPaused);
    }
    if params.snapshot_type == SnapshotType::Diff && !vm.machine.track_dirty_pages {
        return Err(SnapshotError::DiffWithoutTracking);
    }
    let vcpus = vm.save_vcpus().map_err(SnapshotError::SaveState)?;
    let vm_state = vm
        .vm
        .save_state()
        .map_err(|e| SnapshotError::SaveState(e.to_string()))?;
    let devices = vm
        .devices
        .save()
        .map_err(|e| SnapshotError::SaveState(e.to_string()))?;
    let layout = match params.snapshot_type {
        SnapshotType::Full => {
            let layout = squib_snapshot::save_memory_full(&vm.memory, &params.mem_file_path)?;
            clear_dirty(vm);
            layout
        }
        SnapshotType::Diff => {
            let dirty = dirty_pages(vm)?;
            squib_snapshot::save_memory_diff_pages(&vm.memory, &dirty, &params.mem_file_path)?
                .layout
        }
    };
    let state = MicrovmState {
        machine: vm.machine,
        memory: layout,
        vm: vm_state,
        vcpus,
        devices,
        mmds,
    };
    squib_snapshot::save_state(&params.snapshot_path, &state)?;
    Ok(())
}

/// Reads and checks a state file (untrusted input).
pub fn load_state(path: &Path) -> Result<MicrovmState, SnapshotError> {
    check_state(squib_snapshot::load_state(path)?)
}

/// Decodes and checks a state file held in memory (untrusted input; the fuzz target's entry).
pub fn state_from_bytes(bytes: &[u8]) -> Result<MicrovmState, SnapshotError> {
    check_state(squib_snapshot::decode_state(bytes)?)
}

/// The checks every decoded state passes before anything is built from it.
pub fn check_state(state: MicrovmState) -> Result<MicrovmState, SnapshotError> {
    let m = &state.machine;
    if m.vcpu_count == 0 || m.vcpu_count > MAX_SUPPORTED_VCPUS {
        return Err(SnapshotError::Invalid(format!("{} vCPUs", m.vcpu_count)));
    }
    if state.vcpus.len() != usize::from(m.vcpu_count) {
        return Err(SnapshotError::Invalid(format!(
            "{} vCPU states for {} vCPUs",
            state.vcpus.len(),
            m.vcpu_count
        )));
    }
    state
        .memory
        .validate()
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    Ok(state)
}

/// The page backing of a restore: the request's `huge_pages` resolved against the snapshot's.
pub fn restore_huge_pages(params: &SnapshotLoadParams, state: &MicrovmState) -> HugePages {
    crate::huge_pages::resolve(params.huge_pages, state.machine.huge_pages)
}

/// Guest memory for a restore, from the configured backend with `huge_pages`' backing, and
/// what keeps that backend alive. Firecracker's refusals come first (a memory size that does
/// not suit the page size, hugetlbfs with the `File` backend), with its texts.
pub fn load_memory(
    params: &SnapshotLoadParams,
    layout: &MemoryLayout,
    huge_pages: HugePages,
    mem_size_mib: usize,
) -> Result<(GuestMemoryMmap, Option<Box<dyn std::any::Any + Send>>), SnapshotError> {
    crate::huge_pages::check_load(params.mem_backend.backend_type, huge_pages, mem_size_mib)
        .map_err(SnapshotError::Refused)?;
    let backing = crate::huge_pages::backing(huge_pages);
    let ranges = layout.restore_ranges();
    let path = Path::new(&params.mem_backend.backend_path);
    match params.mem_backend.backend_type {
        MemBackendType::File => {
            squib_sys::snapshot_memory::memory_from_file_backed(path, &ranges, backing)
                .map(|m| (m, None))
                .map_err(|e| SnapshotError::RestoreMemory(e.to_string()))
        }
        MemBackendType::Uffd => {
            squib_sys::snapshot_memory::memory_from_uffd_backed(path, &ranges, backing)
                .map(|(m, h)| (m, Some(Box::new(h) as Box<dyn std::any::Any + Send>)))
                .map_err(|e| SnapshotError::RestoreMemory(e.to_string()))
        }
    }
}
