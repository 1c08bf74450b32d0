//! Errors of guest setup.

use thiserror::Error;

/// Everything that can go wrong while laying out and loading a guest.
#[derive(Debug, Error)]
pub enum ArchError {
    /// A virtio-mmio device cannot be described in the DSDT (GSI outside 5..=23, or its window
    /// is empty or not below 4 GiB).
    #[error(
        "cannot describe the virtio-mmio device at {addr:#x} (size {len:#x}, GSI {gsi}) in ACPI"
    )]
    AcpiDevice {
        /// Window base.
        addr: u64,
        /// Window size.
        len: u64,
        /// GSI.
        gsi: u32,
    },
    /// The ACPI tables do not fit the system memory region before the RSDP.
    #[error("ACPI tables of {size} bytes at {start:#x} do not fit below {end:#x}")]
    AcpiTooLarge {
        /// Bytes needed.
        size: u64,
        /// First table address.
        start: u64,
        /// End of the region.
        end: u64,
    },
    /// The bzImage has no 64-bit entry point (boot protocol < 2.12 or `XLF_KERNEL_64` clear).
    #[error("bzImage does not provide a 64-bit entry point")]
    BzImageNot64Bit,
    /// The command line does not fit at `CMDLINE_START`.
    #[error("kernel command line is {len} bytes with NUL, at most {max} allowed")]
    CmdlineTooLong {
        /// Length including the NUL terminator.
        len: usize,
        /// Maximum including the NUL terminator.
        max: usize,
    },
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Creating the guest memory mappings failed.
    #[error("cannot create guest memory")]
    GuestMemoryCreate(#[source] vm_memory::mmap::FromRangesError),
    /// A guest memory access failed (address outside RAM).
    #[error("guest memory access at {addr:#x} failed")]
    GuestMemoryAccess {
        /// The guest-physical address.
        addr: u64,
        /// Cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The initrd does not fit in the first RAM region above the kernel.
    #[error("initrd of {size} bytes does not fit in guest RAM above the kernel")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
    },
    /// Reading the initrd image failed.
    #[error("cannot read the initrd image")]
    InitrdRead(#[source] std::io::Error),
    /// The kernel image could not be loaded: an ELF image the ELF loader failed on (for
    /// example it could not be read into guest memory), or a non-ELF image that is no
    /// loadable bzImage. linux-loader's text, as Firecracker's `ConfigurationError::KernelLoader`.
    #[error("{0}")]
    KernelLoader(linux_loader::loader::Error),
    /// The kernel was loaded but extends past guest RAM or below 1 MiB.
    #[error("kernel image [{start:#x}, {end:#x}) is outside usable guest RAM")]
    KernelOutOfRange {
        /// First loaded byte.
        start: u64,
        /// End of the loaded image.
        end: u64,
    },
    /// The requested memory size is unusable.
    #[error("invalid guest memory size: {0} MiB")]
    MemorySize(usize),
    /// The MP table would not fit its reserved area.
    #[error("MP table of {size} bytes exceeds its {max}-byte area")]
    MpTableTooLarge {
        /// Table size.
        size: usize,
        /// Area size.
        max: usize,
    },
    /// The vCPU count or index is out of range.
    #[error("invalid vCPU configuration: {0}")]
    Vcpus(String),
}

impl ArchError {
    pub(crate) fn mem(addr: u64) -> impl FnOnce(vm_memory::GuestMemoryError) -> Self {
        move |source| Self::GuestMemoryAccess { addr, source }
    }
}
