//! The one error type of the hypervisor contract.
//!
//! Backends map their native failures (errno, `hv_return_t`) onto these variants and keep the
//! numeric cause: an OS error travels as a [`std::io::Error`] so the errno is never dropped.

use thiserror::Error;

/// Errors returned by [`crate::Hypervisor`], [`crate::Vm`] and [`crate::Vcpu`] operations.
#[derive(Debug, Error)]
pub enum HvError {
    /// A backend state blob was made by another backend or an incompatible version.
    #[error("vCPU state blob from backend {found_backend} v{found_version} is incompatible")]
    IncompatibleState {
        /// Backend named in the blob.
        found_backend: String,
        /// Format version in the blob.
        found_version: u32,
    },
    /// A required hypervisor capability (the backend's id) is missing on this host.
    #[error("missing hypervisor capability {0:#x}")]
    MissingCapability(u32),
    /// An argument is outside what the backend or the guest layout allows.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation is specified but not yet implemented by this backend (a tracked TODO,
    /// never a silent success).
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
    /// An operating-system or hypervisor call failed.
    #[error("{op} failed")]
    Os {
        /// The failing operation, e.g. `KVM_CREATE_VM`.
        op: &'static str,
        /// The underlying OS error (errno preserved).
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding backend state failed.
    #[error("state serialization failed: {0}")]
    State(String),
    /// The backend does not offer this optional capability; the VMM should fall back (for
    /// example from irqfd to [`crate::Vm::set_irq_line`], from ioeventfd to bus dispatch).
    #[error("unsupported by this hypervisor backend: {0}")]
    Unsupported(&'static str),
    /// A thread-bound object was used from the wrong thread (HVF vCPUs).
    #[error("vCPU {index} used from a thread other than its vCPU thread")]
    WrongThread {
        /// The vCPU index.
        index: u32,
    },
}

impl HvError {
    /// Wraps an OS error for `op`.
    pub fn os(op: &'static str, source: std::io::Error) -> Self {
        Self::Os { op, source }
    }

    /// Wraps a raw errno value for `op`.
    pub fn errno(op: &'static str, errno: i32) -> Self {
        Self::Os {
            op,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// `true` for [`HvError::Unsupported`], the signal to use a fallback path.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported(_))
    }
}
