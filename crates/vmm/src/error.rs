//! Errors of the VMM core. `Display` texts follow Firecracker's (`<Category> error: <detail>`
//! once prefixed by the caller, e.g. `Start microvm error: ...`).

use squib_arch::ArchError;
use squib_hv::HvError;

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
    /// Guest memory could not be created.
    #[error("Cannot create guest memory: {0}")]
    Memory(ArchError),
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
    Hypervisor(#[from] HvError),
    /// A device could not be created.
    #[error("Device error: {0}")]
    Device(String),
    /// A vCPU thread could not be started.
    #[error("Cannot start vCPU {index}: {reason}")]
    Vcpu {
        /// vCPU index.
        index: u32,
        /// Why.
        reason: String,
    },
}
