//! What `Vcpu::run` returns, and the I/O callback through which the backend completes accesses.
//!
//! The backend decodes port-I/O and MMIO exits itself and completes them through [`VcpuIo`]
//! *inside* `run` (KVM: the data lives in `kvm_run` and is consumed by the next `KVM_RUN`; HVF:
//! the backend decodes the data abort and writes the value back into the destination register).
//! The VMM therefore never sees raw I/O exits, only [`VcpuExit::Handled`].

use serde::{Deserialize, Serialize};

/// Device access callbacks supplied by the VMM to [`crate::Vcpu::run`].
///
/// Called on the vCPU thread, synchronously, while the vCPU is stopped. For a read the callee
/// fills `data` (its length is the access width in bytes, 1..=8 for MMIO, 1/2/4 for port I/O);
/// whatever is left in `data` is what the guest receives, so an unclaimed address should be
/// answered deliberately (e.g. all ones). Guest-controlled: implementations must not panic.
pub trait VcpuIo {
    /// Guest `in` from `port`.
    fn pio_read(&mut self, port: u16, data: &mut [u8]);
    /// Guest `out` to `port`.
    fn pio_write(&mut self, port: u16, data: &[u8]);
    /// Guest load from guest-physical `addr` that is not RAM.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]);
    /// Guest store to guest-physical `addr` that is not RAM.
    fn mmio_write(&mut self, addr: u64, data: &[u8]);
}

/// Platform event reported by the hypervisor (KVM `KVM_EXIT_SYSTEM_EVENT`, PSCI on aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemEventKind {
    /// The guest asked for power-off.
    Shutdown,
    /// The guest asked for a reset / reboot.
    Reset,
    /// The guest reported a crash (e.g. PSCI `SYSTEM_CRASH`).
    Crash,
    /// A wake-up event.
    Wakeup,
    /// Another event type, by its backend number.
    Other(u32),
}

/// Why the hypervisor could not continue running the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InternalErrorKind {
    /// The instruction emulator could not emulate an instruction.
    Emulation,
    /// An exception occurred while delivering another (simultaneous exception).
    SimultaneousException,
    /// Event delivery failed.
    DeliveryEvent,
    /// The hypervisor saw an exit reason it did not expect.
    UnexpectedExitReason,
    /// Another backend-specific sub-error.
    Other(u32),
}

/// Details of an internal hypervisor error (KVM `KVM_EXIT_INTERNAL_ERROR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalError {
    /// The classified sub-error.
    pub kind: InternalErrorKind,
    /// The raw backend sub-error number.
    pub suberror: u32,
    /// Guest instruction pointer at the failure, if the backend could read it.
    pub rip: Option<u64>,
    /// Instruction bytes at the failing RIP as fetched by the hypervisor, when reported (may be
    /// empty; KVM reports up to 15 bytes, which can run past the failing instruction).
    pub insn: Vec<u8>,
    /// Remaining raw data words reported by the backend.
    pub data: Vec<u64>,
}

/// High-level result of one [`crate::Vcpu::run`] call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum VcpuExit {
    /// An I/O or MMIO access was completed through [`VcpuIo`]; call `run` again.
    Handled,
    /// The guest executed `HLT` and the hypervisor returned to user space (only without an
    /// in-kernel interrupt controller; with one, `HLT` is handled in the kernel).
    Halted,
    /// The guest triple-faulted (x86 shutdown).
    Shutdown,
    /// A platform system event (reset, shutdown, crash).
    SystemEvent(SystemEventKind),
    /// The run was interrupted by a [`crate::VcpuKicker`] (or a signal). May occasionally be
    /// spurious; the VMM checks its own state and calls `run` again if there is nothing to do.
    Interrupted,
    /// The hypervisor failed internally, typically an instruction it could not emulate.
    InternalError(InternalError),
    /// VM entry failed.
    FailEntry {
        /// Hardware-specific entry failure reason.
        hardware_reason: u64,
        /// Host CPU on which the entry failed.
        cpu: u32,
    },
    /// An exit this contract does not model, with a description for the log.
    Unknown(String),
}
