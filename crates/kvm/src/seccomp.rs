//! The KVM ioctls each thread category may issue once its seccomp filter is installed
//! (placeholder during derivation).

/// ioctl request numbers the VMM thread issues after the build.
pub fn vmm_ioctls() -> Vec<u64> {
    Vec::new()
}

/// ioctl request numbers a vCPU thread issues after its setup.
pub fn vcpu_ioctls() -> Vec<u64> {
    Vec::new()
}
