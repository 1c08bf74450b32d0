//! squib's allow-lists (placeholder during derivation).

use std::collections::BTreeMap;

use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

use super::{BpfProgram, FilterError, SeccompFilters};

/// KVM ioctl numbers allowed per category, supplied by the hypervisor backend.
#[derive(Debug, Clone, Default)]
pub struct HypervisorIoctls {
    /// On the VMM thread.
    pub vmm: Vec<u64>,
    /// On vCPU threads.
    pub vcpu: Vec<u64>,
}

fn to_program(filter: SeccompFilter) -> Result<BpfProgram, FilterError> {
    let bpf: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| FilterError::Policy(e.to_string()))?;
    Ok(bpf
        .into_iter()
        .map(|i| {
            u64::from(i.code) | (u64::from(i.jt) << 16) | (u64::from(i.jf) << 24) | (u64::from(i.k) << 32)
        })
        .collect())
}

/// Marker filters: allow everything but `acct` (derivation runs only).
pub fn default_filters(_hv: &HypervisorIoctls) -> Result<SeccompFilters, FilterError> {
    let mut map = std::collections::HashMap::new();
    for c in super::ThreadCategory::ALL {
        let rules = BTreeMap::from([(libc::SYS_acct, vec![])]);
        let f = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(1), TargetArch::x86_64)
            .map_err(|e| FilterError::Policy(e.to_string()))?;
        map.insert(c.name().to_owned(), to_program(f)?);
    }
    SeccompFilters::from_map(map)
}
