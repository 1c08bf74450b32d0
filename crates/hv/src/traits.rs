//! The object-safe `Hypervisor` / `Vm` / `Vcpu` traits and their small companion types.
//!
//! Ownership: the VMM holds an `Arc<dyn Hypervisor>` (chosen at startup), an `Arc<dyn Vm>` per
//! microVM and one `Box<dyn Vcpu>` per vCPU thread. Backend-specific state never appears in these
//! types: snapshots carry an opaque [`VcpuStateBlob`] tagged with the backend name and version.

use std::fmt::Debug;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use squib_core::CapabilityProfile;
use squib_core::{GuestMemoryMmap, GuestRegionMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::error::HvError;
use crate::exit::{VcpuExit, VcpuIo};
use crate::x86::{HypervisorX86, VcpuX86};

/// Optional features of a backend, for the VMM to pick fast paths or fallbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HvCapabilities {
    /// Backend name (`"kvm"`, later `"hvf"`).
    pub backend: String,
    /// [`Vm::register_irqfd`] is available (else use [`Vm::set_irq_line`]).
    pub irqfd: bool,
    /// [`Vm::register_ioeventfd`] is available (else dispatch the write through the bus).
    pub ioeventfd: bool,
    /// The interrupt controller is emulated by the hypervisor (x86: PIC + IOAPIC + LAPIC).
    pub in_kernel_irqchip: bool,
    /// Kicks are race-free through an immediate-exit mechanism.
    pub immediate_exit: bool,
    /// Largest number of vCPUs per VM.
    pub max_vcpus: u32,
    /// Number of vCPUs the backend recommends per VM.
    pub recommended_vcpus: u32,
    /// Largest number of guest memory slots.
    pub max_memslots: u32,
    /// The backend emulates most guest instructions (nested `kvm_pvm`): full OS guests are slow
    /// and need the documented guest workarounds.
    pub emulated_guests: bool,
}

/// A change to the set of hypervisor capabilities a VM requires (Firecracker's
/// `kvm_capabilities` of a CPU template). The numbers are the backend's own capability ids
/// (`KVM_CAP_*` for KVM); a backend without numbered capabilities refuses any `Add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapabilityModifier {
    /// Also require this capability.
    Add(u32),
    /// Do not require this capability even if the backend's default set does.
    Remove(u32),
}

/// Parameters fixed when a VM is created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Number of vCPUs the VM will have (some backends size structures up front).
    pub vcpu_count: u32,
    /// Changes to the backend's required capabilities; [`Hypervisor::create_vm`] fails with
    /// [`HvError::MissingCapability`] if one is missing. The backend keeps them in its VM state
    /// blob and checks them again on restore.
    pub capabilities: Vec<CapabilityModifier>,
}

impl VmConfig {
    /// A VM of `vcpu_count` vCPUs with the backend's default capability requirements.
    pub fn new(vcpu_count: u32) -> Self {
        Self {
            vcpu_count,
            capabilities: Vec::new(),
        }
    }
}

/// Guest address that an ioeventfd watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEventAddress {
    /// An x86 I/O port.
    Pio(u16),
    /// A guest-physical MMIO address.
    Mmio(u64),
}

/// Which written values trigger an ioeventfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataMatch {
    /// Any value, any width.
    Any,
    /// Exactly this 8-bit value.
    U8(u8),
    /// Exactly this 16-bit value.
    U16(u16),
    /// Exactly this 32-bit value (virtio-mmio `QueueNotify`).
    U32(u32),
    /// Exactly this 64-bit value.
    U64(u64),
}

/// A memory region added with [`Vm::add_region`], for [`Vm::remove_region`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionSlot(pub u32);

/// Opaque, serde-able backend vCPU state for snapshots.
///
/// Only the backend that produced it (same `backend`, compatible `version`) can restore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuStateBlob {
    /// Producing backend (`"kvm"`).
    pub backend: String,
    /// Backend-defined format version.
    pub version: u32,
    /// Backend-defined encoding of the state.
    pub data: Vec<u8>,
}

/// Opaque VM-level state (x86 KVM: PIC, IOAPIC, PIT, kvmclock); same rules as [`VcpuStateBlob`].
pub type VmStateBlob = VcpuStateBlob;

/// A hypervisor available on this host. One per process.
pub trait Hypervisor: Send + Sync + Debug {
    /// The capability profile the API layer admits requests against.
    fn profile(&self) -> CapabilityProfile;
    /// Optional features of this backend.
    fn capabilities(&self) -> HvCapabilities;
    /// Creates an empty VM (no memory, no vCPUs, no platform devices).
    fn create_vm(&self, config: &VmConfig) -> Result<Arc<dyn Vm>, HvError>;
    /// The x86_64 extension, if this backend runs x86_64 guests.
    fn as_x86(&self) -> Option<&dyn HypervisorX86> {
        None
    }
}

/// One virtual machine. Shared by the VMM thread and all vCPU threads.
pub trait Vm: Send + Sync + Debug {
    /// Creates the platform the backend emulates in the hypervisor: on x86 KVM the TSS, the
    /// in-kernel irqchip (PIC + IOAPIC + LAPIC) and the PIT; on aarch64 the GIC. Call once,
    /// before [`Vm::create_vcpu`]. A VM without it has no interrupt controller (tiny test guests).
    fn setup_platform(&self) -> Result<(), HvError>;

    /// Maps every region of `memory` into the guest physical address space at its
    /// `start_addr`. The backend keeps a clone of `memory` (which shares the mappings), so the
    /// host mappings outlive the VM; call once per distinct memory object.
    fn map_memory(&self, memory: &GuestMemoryMmap) -> Result<(), HvError>;

    /// Maps `[offset, offset + len)` of a host mapping into the guest physical address space
    /// at `region.start_addr() + offset`, outside the memory given to [`Vm::map_memory`]: a
    /// virtio-pmem window (the whole region) or one slot of the virtio-mem region. `offset`
    /// and `len` must be page multiples inside the region. The backend keeps `region` (and so
    /// the mapping) alive until [`Vm::remove_region`] or the VM's end.
    ///
    /// With `read_only`, guest reads are served from the mapping but a guest write never
    /// reaches it: it completes as an MMIO write through [`VcpuIo`] (the VMM ignores or counts
    /// it). Regions added here are not part of [`Vm::dirty_log`] (no dirty logging); the
    /// range must not overlap any mapped memory.
    fn add_region(
        &self,
        region: Arc<GuestRegionMmap>,
        offset: u64,
        len: u64,
        read_only: bool,
    ) -> Result<RegionSlot, HvError> {
        let _ = (region, offset, len, read_only);
        Err(HvError::Unsupported("adding memory regions"))
    }

    /// Unmaps a region added with [`Vm::add_region`] and drops the backend's reference to it.
    fn remove_region(&self, slot: RegionSlot) -> Result<(), HvError> {
        let _ = slot;
        Err(HvError::Unsupported("removing memory regions"))
    }

    /// Creates vCPU `index` (0 is the boot processor).
    ///
    /// Threading: call this **on the vCPU's own thread** and keep the returned vCPU there for
    /// configuration and every `run` (HVF creates vCPUs bound to the calling thread; KVM does not
    /// care, but the VMM must follow the stricter rule).
    fn create_vcpu(&self, index: u32) -> Result<Box<dyn Vcpu>, HvError>;

    /// Drives interrupt line `gsi` to `level` (edge devices pulse: `true` then `false`).
    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<(), HvError>;

    /// Makes a write to `fd` inject an edge interrupt on `gsi` without a VMM round trip.
    /// Optional: [`HvError::Unsupported`] means "use [`Vm::set_irq_line`]".
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), HvError> {
        let _ = (fd, gsi);
        Err(HvError::Unsupported("irqfd"))
    }

    /// Undoes [`Vm::register_irqfd`].
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), HvError> {
        let _ = (fd, gsi);
        Err(HvError::Unsupported("irqfd"))
    }

    /// Makes a guest write matching `addr`/`datamatch` signal `fd` instead of exiting to the VMM.
    /// Optional: [`HvError::Unsupported`] means "the write arrives through [`VcpuIo`]".
    fn register_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: DataMatch,
    ) -> Result<(), HvError> {
        let _ = (fd, addr, datamatch);
        Err(HvError::Unsupported("ioeventfd"))
    }

    /// Saves the VM-level platform state (interrupt controllers, timers, guest clock) for a
    /// snapshot. Call only while every vCPU is paused.
    fn save_state(&self) -> Result<VmStateBlob, HvError> {
        Err(HvError::Unsupported("VM state save"))
    }

    /// Restores a state from [`Vm::save_state`] of the same backend, after
    /// [`Vm::setup_platform`] and before any vCPU runs.
    fn restore_state(&self, state: &VmStateBlob) -> Result<(), HvError> {
        let _ = state;
        Err(HvError::Unsupported("VM state restore"))
    }

    /// Starts logging guest writes to every memory region mapped so far (and mapped later).
    fn enable_dirty_log(&self) -> Result<(), HvError> {
        Err(HvError::Unsupported("dirty page logging"))
    }

    /// Pages the guest wrote since the last call (or since logging started), and clears the log:
    /// one bitmap per mapped region in mapping order (bit `i` of word `i / 64` = page `i`, 4 KiB
    /// pages). Requires [`Vm::enable_dirty_log`].
    fn dirty_log(&self) -> Result<Vec<Vec<u64>>, HvError> {
        Err(HvError::Unsupported("dirty page logging"))
    }

    /// Undoes [`Vm::register_ioeventfd`] (same arguments).
    fn unregister_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: DataMatch,
    ) -> Result<(), HvError> {
        let _ = (fd, addr, datamatch);
        Err(HvError::Unsupported("ioeventfd"))
    }
}

/// Makes a vCPU's current or next [`Vcpu::run`] return [`VcpuExit::Interrupted`] promptly.
///
/// `kick` may be called from any thread at any time, including before the vCPU first runs and
/// while it is between runs; the kick is never lost (it is latched until consumed by `run`).
pub trait VcpuKicker: Send + Sync + Debug {
    /// Requests that the vCPU leave guest mode and return [`VcpuExit::Interrupted`].
    fn kick(&self);
}

/// One virtual CPU. See the crate docs for the thread-affinity rule.
pub trait Vcpu: Send + Debug {
    /// The vCPU index given to [`Vm::create_vcpu`].
    fn index(&self) -> u32;

    /// Runs the guest until an exit the VMM must see.
    ///
    /// Port-I/O and MMIO accesses are completed through `io` before returning
    /// [`VcpuExit::Handled`]; the VMM simply loops. Never panics on guest behaviour.
    fn run(&mut self, io: &mut dyn VcpuIo) -> Result<VcpuExit, HvError>;

    /// A handle that interrupts this vCPU from another thread.
    fn kicker(&self) -> Arc<dyn VcpuKicker>;

    /// Saves the backend's complete vCPU state for a snapshot.
    ///
    /// Call only while the vCPU is stopped on its thread: before its first `run`, or after `run`
    /// returned [`VcpuExit::Interrupted`] (which guarantees no I/O completion is pending).
    fn save_state(&self) -> Result<VcpuStateBlob, HvError>;

    /// Restores a state produced by [`Vcpu::save_state`] of the same backend.
    fn restore_state(&mut self, state: &VcpuStateBlob) -> Result<(), HvError>;

    /// The x86_64 extension, if this vCPU is an x86_64 vCPU.
    fn as_x86(&mut self) -> Option<&mut dyn VcpuX86> {
        None
    }
}
