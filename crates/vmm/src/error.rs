//! Errors of the VMM core. `Display` texts follow Firecracker's (`<Category> error: <detail>`
//! once prefixed by the caller, e.g. `Start microvm error: ...`).

use squib_arch::{ArchError, template::TemplateError};
use squib_hv::HvError;

/// Why the VMM could not be created at start-up (the process exits).
#[derive(Debug, thiserror::Error)]
pub enum VmmInitError {
    /// The MMDS store (its token key comes from the OS random source) could not be created.
    #[error("Cannot create the MMDS data store: {0}")]
    Mmds(String),
}

/// Why `InstanceStart` failed. A failed start is not fatal: the client may fix and retry.
#[derive(Debug, thiserror::Error)]
pub enum StartMicrovmError {
    /// No `PUT /boot-source` yet.
    #[error("Cannot start microvm without kernel configuration.")]
    MissingKernelConfig,
    /// The kernel or initrd file could not be opened or read.
    #[error("Cannot open the {what} file: {source}")]
    OpenFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The guest memory layout could not be computed.
    #[error("Cannot create guest memory: {0}")]
    Memory(ArchError),
    /// Guest memory could not be mapped with its page backing (Firecracker's
    /// `StartMicrovmError::GuestMemory`).
    #[error("Invalid Memory Configuration: {0}")]
    GuestMemory(squib_sys::memory_backing::BackingError),
    /// Loading the kernel failed.
    #[error(
        "System configuration error: Cannot load kernel due to invalid memory configuration or invalid kernel image: {0}"
    )]
    KernelLoad(ArchError),
    /// Writing boot structures failed.
    #[error("System configuration error: {0}")]
    Configure(ArchError),
    /// The hypervisor refused something.
    #[error("Hypervisor error: {0}")]
    Hypervisor(HvError),
    /// A capability the CPU template (or the backend's default set) requires is missing.
    #[error("Kvm error: Missing KVM capabilities: {0:#x}")]
    MissingCapability(u32),
    /// The CPU template cannot be resolved or applied (the text carries Firecracker's category).
    #[error("{0}")]
    CpuTemplate(#[from] TemplateError),
    /// A device could not be created.
    #[error("{0}")]
    Device(#[from] DeviceError),
    /// An eventfd could not be created.
    #[error("Cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// The hypervisor has no x86_64 support.
    #[error("the hypervisor cannot run x86_64 guests")]
    NoX86,
    /// A vCPU thread could not be started.
    #[error("Cannot start vCPU {index}: {reason}")]
    Vcpu {
        /// vCPU index.
        index: u32,
        /// Why.
        reason: String,
    },
}

impl From<HvError> for StartMicrovmError {
    fn from(e: HvError) -> Self {
        match e {
            HvError::MissingCapability(cap) => Self::MissingCapability(cap),
            other => Self::Hypervisor(other),
        }
    }
}

/// Why a device could not be created, registered, restored or updated.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A configured device cannot be created (Firecracker's per-device text).
    #[error("{0}")]
    Config(String),
    /// The bus refused the device's range.
    #[error("cannot register the device: {0}")]
    Bus(String),
    /// No free virtio-mmio slot / GSI.
    #[error("no free virtio-mmio slot (GSIs exhausted)")]
    NoSlot,
    /// Two devices with one id.
    #[error("a device with id {0} is already registered")]
    DuplicateId(String),
    /// The hypervisor refused an irqfd/ioeventfd.
    #[error("{0}")]
    Hypervisor(#[from] HvError),
    /// An eventfd could not be created.
    #[error("{0}")]
    Io(std::io::Error),
    /// `serial_out_path` cannot be opened.
    #[error("cannot open serial_out_path {path}: {source}")]
    SerialOut {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A saved device cannot be rebuilt.
    #[error("{0}")]
    Restore(String),
    /// `PATCH /drives` for an unknown drive.
    #[error("Drive config error: No block device with id {0} found.")]
    NoDrive(String),
    /// `PATCH /drives` failed.
    #[error("Drive config error: Unable to patch the block device: {0}")]
    PatchDrive(String),
    /// `PATCH /network-interfaces` for an unknown interface.
    #[error("Network config error: The network interface ID {0} does not exist.")]
    NoNet(String),
    /// No i8042 (not booted).
    #[error("no i8042 device")]
    NoI8042,
    /// Ctrl-Alt-Del injection failed.
    #[error("Failed to send CTRL+ALT+DEL: {0}")]
    CtrlAltDel(String),
}
