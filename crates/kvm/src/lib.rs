//! KVM backend for squib's hypervisor traits (`squib-hv`).
//!
//! This is the only crate in the workspace that names `kvm-ioctls` / `kvm-bindings`. It owns:
//!
//! - [`KvmHypervisor`]: `/dev/kvm`, capability discovery, `KVM_GET_SUPPORTED_CPUID`, detection of
//!   the nested `kvm_pvm` module ([`is_pvm`]).
//! - [`KvmVm`]: VM fd, TSS + in-kernel irqchip + PIT2, memslots, irqfd, ioeventfd, IRQ lines.
//! - [`KvmVcpu`]: the run loop translating `kvm_ioctls::VcpuExit` into the neutral
//!   [`squib_hv::VcpuExit`], completing port I/O and MMIO through [`squib_hv::VcpuIo`]; applying a
//!   neutral [`squib_hv::X86BootState`] (CPUID, MSRs, registers, FPU, LAPIC LINTs).
//! - `state`: vCPU snapshot state as an opaque, versioned `VcpuStateBlob`.
//! - `kick`: race-free vCPU kicks (`immediate_exit` set from a SIGRTMIN handler via a
//!   thread-local pointer, Firecracker's scheme, plus a latched "pending" flag).
//!
//! # Threading
//!
//! [`KvmHypervisor`] and [`KvmVm`] are `Send + Sync`. A [`KvmVcpu`] may move between threads
//! (KVM allows it), but the neutral contract requires create + configure + run on one thread.
//! The kick signal handler is process-global and installed on first vCPU creation.
//!
//! # PVM (nested `kvm_pvm`) workaround
//!
//! With [`KvmOptions::int3_workaround`] (default: on when [`is_pvm`]), an emulation failure on
//! an `int3` (0xCC) instruction is turned into a `#BP` injection with RIP advanced by one, as a
//! real CPU would do; `run` then returns [`squib_hv::VcpuExit::Handled`]. Other emulation
//! failures are reported with their instruction bytes.

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod caps;
mod convert;
mod hypervisor;
mod kick;
pub mod seccomp;
mod state;
mod vcpu;
mod vm;
mod vm_state;

pub use caps::DEFAULT_CAPABILITIES;
pub use hypervisor::{KvmHypervisor, KvmOptions, is_pvm};
pub use kick::KvmKicker;
pub use vcpu::KvmVcpu;
pub use vm::KvmVm;
