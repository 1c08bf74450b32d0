//! The one guest-memory type every crate uses.
//!
//! [`GuestMemoryMmap`] is vm-memory's mmap-backed guest memory with an [`AtomicBitmap`] per
//! region: every write the VMM itself makes into guest memory (virtio devices filling buffers,
//! the kernel loader) marks the written pages dirty. Diff snapshots combine this bitmap with
//! the hypervisor's dirty log (guest writes), as Firecracker does; changing how memory is
//! tracked means changing only this alias. Tracking costs one atomic OR per page written.

/// Dirty-page bitmap of a region (one bit per 4 KiB page).
pub use vm_memory::bitmap::AtomicBitmap;

/// Guest memory, as every squib crate sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;

/// One region of [`GuestMemoryMmap`].
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<AtomicBitmap>;
