//! The KVM ioctls each thread category issues once its seccomp filter is installed, for the
//! argument-filtered `ioctl` rules of `squib_sys::seccomp::policy` (derived by tracing the
//! end-to-end suites; see ARCHITECTURE.md). Everything done before the filters go on (creating
//! the VM and vCPUs, memory slots, irqfds, ioeventfds, applying boot or restored state) is not
//! listed: no thread can issue those ioctls afterwards.

#![allow(missing_docs)]

use kvm_bindings::{
    KVMIO, kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_dirty_log, kvm_irq_level, kvm_irqchip,
    kvm_lapic_state, kvm_mp_state, kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs,
    kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

// VM fd.
ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
ioctl_iow_nr!(
    KVM_SET_USER_MEMORY_REGION,
    KVMIO,
    0x46,
    kvm_userspace_memory_region
);
ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
// vCPU fd.
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_iow_nr!(KVM_SET_SREGS, KVMIO, 0x84, kvm_sregs);
ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
ioctl_iow_nr!(KVM_SET_VCPU_EVENTS, KVMIO, 0xa0, kvm_vcpu_events);
ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
ioctl_iow_nr!(KVM_SET_XSAVE, KVMIO, 0xa5, kvm_xsave);
ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);

/// The VMM thread after the build: `PUT /snapshot/create` (dirty log, irqchip, PIT, clock),
/// virtio-mem plug/unplug (memory slots added and removed at runtime) and legacy interrupts when
/// irqfd is unavailable (`KVM_IRQ_LINE`).
pub fn vmm_ioctls() -> Vec<u64> {
    [
        KVM_GET_DIRTY_LOG(),
        KVM_SET_USER_MEMORY_REGION(),
        KVM_GET_IRQCHIP(),
        KVM_GET_PIT2(),
        KVM_GET_CLOCK(),
        KVM_IRQ_LINE(),
    ]
    .to_vec()
}

/// A vCPU thread after its setup: `KVM_RUN`; the vCPU's half of `PUT /snapshot/create` (every
/// `KVM_GET_*` of `state::save`); the PVM `int3` workaround and the internal-error report
/// (`KVM_GET/SET_REGS`, `KVM_GET/SET_VCPU_EVENTS`); the VMM-side emulation of instructions
/// PVM refuses (`KVM_GET_CPUID2`, `KVM_GET_XCRS`, `KVM_GET/SET_XSAVE`, `KVM_SET_SREGS` for CR2
/// before a `#PF`); legacy interrupts raised by devices on the
/// vCPU's bus when irqfd is unavailable (`KVM_IRQ_LINE`).
pub fn vcpu_ioctls() -> Vec<u64> {
    [
        KVM_RUN(),
        KVM_GET_REGS(),
        KVM_SET_REGS(),
        KVM_GET_SREGS(),
        KVM_SET_SREGS(),
        KVM_GET_MSRS(),
        KVM_GET_LAPIC(),
        KVM_GET_CPUID2(),
        KVM_GET_MP_STATE(),
        KVM_GET_VCPU_EVENTS(),
        KVM_SET_VCPU_EVENTS(),
        KVM_GET_DEBUGREGS(),
        KVM_GET_XSAVE(),
        KVM_SET_XSAVE(),
        KVM_GET_XCRS(),
        KVM_IRQ_LINE(),
    ]
    .to_vec()
}

/// The signal [`crate::KvmKicker`] sends (the VMM thread's `tgkill` rule).
pub fn kick_signal() -> i32 {
    crate::kick::kick_signal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_match_the_kernel_numbers() {
        // Values from <linux/kvm.h> on x86_64.
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_GET_DIRTY_LOG(), 0x4010_ae42);
        assert_eq!(KVM_SET_SREGS(), 0x4138_ae84);
        assert_eq!(KVM_SET_XSAVE(), 0x5000_aea5);
        assert_eq!(vcpu_ioctls().len(), 16);
    }
}
