//! Firecracker's process exit codes (`FcExitCode`).

/// Process exit codes, numerically identical to Firecracker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Clean exit (guest reboot/shutdown through i8042 or a system event).
    Ok = 0,
    /// Generic error (vCPU error, bad config file, failed snapshot load...).
    GenericError = 1,
    /// Unexpected error.
    UnexpectedError = 2,
    /// A seccomp filter denied a system call (set by the `SIGSYS` handler,
    /// `squib_sys::seccomp::sigsys`, which `_exit`s with it directly).
    BadSyscall = 148,
    /// Bad configuration (invalid `--level`).
    BadConfiguration = 152,
    /// Command-line parsing error.
    ArgParsing = 153,
}

impl ExitCode {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}
