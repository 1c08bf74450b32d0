//! KVM capabilities a VM requires: Firecracker's default x86_64 set, changed by a CPU
//! template's `kvm_capabilities` ([`CapabilityModifier`]s), checked with
//! `KVM_CHECK_EXTENSION` when the VM is created and again when a snapshot is restored.

use kvm_bindings::{
    KVM_CAP_ADJUST_CLOCK, KVM_CAP_DEBUGREGS, KVM_CAP_EXT_CPUID, KVM_CAP_IOEVENTFD, KVM_CAP_IRQCHIP,
    KVM_CAP_IRQFD, KVM_CAP_MP_STATE, KVM_CAP_PIT_STATE2, KVM_CAP_PIT2, KVM_CAP_SET_TSS_ADDR,
    KVM_CAP_USER_MEMORY, KVM_CAP_VCPU_EVENTS, KVM_CAP_XCRS, KVM_CAP_XSAVE,
};
use squib_hv::{CapabilityModifier, HvError};

/// Firecracker's default x86_64 capability list, in its order.
pub const DEFAULT_CAPABILITIES: [u32; 14] = [
    KVM_CAP_IRQCHIP,
    KVM_CAP_IOEVENTFD,
    KVM_CAP_IRQFD,
    KVM_CAP_USER_MEMORY,
    KVM_CAP_SET_TSS_ADDR,
    KVM_CAP_PIT2,
    KVM_CAP_PIT_STATE2,
    KVM_CAP_ADJUST_CLOCK,
    KVM_CAP_DEBUGREGS,
    KVM_CAP_MP_STATE,
    KVM_CAP_VCPU_EVENTS,
    KVM_CAP_XCRS,
    KVM_CAP_XSAVE,
    KVM_CAP_EXT_CPUID,
];

/// The capabilities to check, in the order Firecracker checks them (its `swap_remove`
/// included, so the first missing one reported is the same).
pub fn required(modifiers: &[CapabilityModifier]) -> Vec<u32> {
    let mut caps = DEFAULT_CAPABILITIES.to_vec();
    for m in modifiers {
        match *m {
            CapabilityModifier::Add(cap) => {
                if !caps.contains(&cap) {
                    caps.push(cap);
                }
            }
            CapabilityModifier::Remove(cap) => {
                if let Some(pos) = caps.iter().position(|&c| c == cap) {
                    caps.swap_remove(pos);
                }
            }
        }
    }
    caps
}

/// Checks every required capability with `has` (`KVM_CHECK_EXTENSION` > 0).
pub fn check(modifiers: &[CapabilityModifier], has: impl Fn(u32) -> bool) -> Result<(), HvError> {
    match required(modifiers).into_iter().find(|&cap| !has(cap)) {
        Some(missing) => Err(HvError::MissingCapability(missing)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use kvm_bindings::KVM_CAP_IOMMU;

    use super::*;

    #[test]
    fn test_should_combine_like_firecracker() {
        let caps = required(&[
            CapabilityModifier::Add(KVM_CAP_IOMMU),
            CapabilityModifier::Remove(KVM_CAP_IOEVENTFD),
            CapabilityModifier::Add(KVM_CAP_IRQCHIP),
            CapabilityModifier::Remove(9999),
        ]);
        assert!(caps.contains(&KVM_CAP_IOMMU));
        assert!(!caps.contains(&KVM_CAP_IOEVENTFD));
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        // swap_remove: the last default took the removed one's place.
        assert_eq!(caps[1], KVM_CAP_IOMMU);
        assert_eq!(caps[DEFAULT_CAPABILITIES.len() - 1], KVM_CAP_EXT_CPUID);
    }

    #[test]
    fn test_should_report_the_first_missing_capability() {
        let err = check(&[CapabilityModifier::Add(9999)], |c| c != 9999).unwrap_err();
        assert!(matches!(err, HvError::MissingCapability(9999)));
        assert!(
            check(&[CapabilityModifier::Remove(KVM_CAP_XCRS)], |c| c
                != KVM_CAP_XCRS)
            .is_ok()
        );
        assert!(matches!(
            check(&[], |c| c != KVM_CAP_XCRS).unwrap_err(),
            HvError::MissingCapability(KVM_CAP_XCRS)
        ));
    }
}
