//! CPUID normalisation: the hypervisor's supported table → what vCPU `i` of `n` sees.
//!
//! A subset of Firecracker's `cpuid/normalize.rs`, vendor-neutral where possible:
//!
//! - leaf 0x1: initial APIC id (EBX[31:24]) = vCPU index, logical processor count (EBX[23:16]),
//!   CLFLUSH size 64 bytes, hypervisor bit (ECX[31]), HTT (EDX[28]) when `n > 1`;
//! - leaf 0x4 (Intel deterministic caches): cores/threads sharing each cache level;
//! - leaf 0x6 (Intel power management): no Turbo Boost (EAX[1]), no energy-performance bias
//!   (ECX[3]: its MSR is not emulated);
//! - leaf 0xA: zeroed (no PMU);
//! - leaves 0xB and 0x1F (extended topology): SMT and core levels for `n` vCPUs, x2APIC id;
//! - optional hiding of feature bits (`hide_cx16` for the nested-PVM SLUB workaround).
//!
//! SMT: with `smt` and an even count, two threads per core; else one.
//!
//! A CPU template ([`crate::template`]) is applied to the supported table *before* this, so
//! the values set here win over a template's (Firecracker's order). Feature bits are changed
//! with the templates' primitive, [`BitFilter`] through [`modify_register`].

use squib_hv::CpuidEntry;

use crate::error::ArchError;
use crate::template::{BitFilter, CpuidReg, modify_register};

/// Leaf 0x1 ECX bit: hypervisor present.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 0x1 ECX bit: CMPXCHG16B.
const LEAF1_ECX_CX16: u32 = 1 << 13;
/// Leaf 0x1 EDX bit: hyper-threading / multi-core package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0x6 EAX bit: Intel Turbo Boost.
const LEAF6_EAX_TURBO: u64 = 1 << 1;
/// Leaf 0x6 ECX bit: performance-energy bias preference (`IA32_ENERGY_PERF_BIAS`).
const LEAF6_ECX_EPB: u64 = 1 << 3;
/// CLFLUSH line size in 8-byte units (64 bytes).
const CLFLUSH_SIZE: u32 = 8;
/// Topology level type: SMT.
const LEVEL_SMT: u32 = 1;
/// Topology level type: core.
const LEVEL_CORE: u32 = 2;

/// Inputs to [`normalize_cpuid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidConfig {
    /// This vCPU's index (= APIC id).
    pub vcpu_index: u8,
    /// Number of vCPUs in the VM.
    pub vcpu_count: u8,
    /// Expose two threads per core (Firecracker `smt`).
    pub smt: bool,
    /// Hide CMPXCHG16B (nested PVM cannot emulate `lock cmpxchg16b`).
    pub hide_cx16: bool,
}

fn bits_for(count: u32) -> u32 {
    // Number of APIC-id bits needed to number `count` items (ceil(log2)).
    if count <= 1 {
        0
    } else {
        u32::BITS - (count - 1).leading_zeros()
    }
}

/// Returns the CPUID table vCPU `cfg.vcpu_index` should see.
pub fn normalize_cpuid(
    supported: &[CpuidEntry],
    cfg: &CpuidConfig,
) -> Result<Vec<CpuidEntry>, ArchError> {
    if cfg.vcpu_count == 0 || cfg.vcpu_index >= cfg.vcpu_count {
        return Err(ArchError::Vcpus(format!(
            "vCPU index {} of {}",
            cfg.vcpu_index, cfg.vcpu_count
        )));
    }
    let count = u32::from(cfg.vcpu_count);
    let apic_id = u32::from(cfg.vcpu_index);
    let threads_per_core: u32 = if cfg.smt && count > 1 && count % 2 == 0 {
        2
    } else {
        1
    };
    let cores = count / threads_per_core;
    let intel = is_intel(supported);

    let mut out = Vec::with_capacity(supported.len());
    for e in supported {
        let mut e = *e;
        match e.function {
            0x1 => {
                e.ebx =
                    (apic_id << 24) | ((count & 0xff) << 16) | (CLFLUSH_SIZE << 8) | (e.ebx & 0xff);
                modify_register(
                    &mut e,
                    CpuidReg::Ecx,
                    BitFilter::set(u64::from(LEAF1_ECX_HYPERVISOR)),
                );
                if cfg.hide_cx16 {
                    modify_register(
                        &mut e,
                        CpuidReg::Ecx,
                        BitFilter::clear(u64::from(LEAF1_ECX_CX16)),
                    );
                }
                let htt = u64::from(LEAF1_EDX_HTT);
                let htt = if count > 1 {
                    BitFilter::set(htt)
                } else {
                    BitFilter::clear(htt)
                };
                modify_register(&mut e, CpuidReg::Edx, htt);
            }
            0x4 if intel => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = match level {
                    0 => 0,
                    1 | 2 => threads_per_core,
                    _ => count,
                };
                e.eax &= 0x3fff;
                if level != 0 {
                    e.eax |= (sharing.saturating_sub(1) & 0xfff) << 14;
                    e.eax |= (cores.saturating_sub(1) & 0x3f) << 26;
                }
            }
            0x6 if intel => {
                modify_register(&mut e, CpuidReg::Eax, BitFilter::clear(LEAF6_EAX_TURBO));
                modify_register(&mut e, CpuidReg::Ecx, BitFilter::clear(LEAF6_ECX_EPB));
            }
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                let (eax, ebx, level_type) = match e.index {
                    0 => (bits_for(threads_per_core), threads_per_core, LEVEL_SMT),
                    1 => (bits_for(count), count, LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = (level_type << 8) | (e.index & 0xff);
                e.edx = apic_id;
            }
            _ => {}
        }
        out.push(e);
    }
    Ok(out)
}

fn is_intel(entries: &[CpuidEntry]) -> bool {
    entries.iter().any(|e| {
        e.function == 0
            && e.ebx == u32::from_le_bytes(*b"Genu")
            && e.edx == u32::from_le_bytes(*b"ineI")
            && e.ecx == u32::from_le_bytes(*b"ntel")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            significant_index: matches!(function, 0x4 | 0xb | 0x1f),
            ..Default::default()
        }
    }

    fn cfg(vcpu_index: u8, vcpu_count: u8, smt: bool) -> CpuidConfig {
        CpuidConfig {
            vcpu_index,
            vcpu_count,
            smt,
            hide_cx16: false,
        }
    }

    fn find(t: &[CpuidEntry], f: u32, i: u32) -> CpuidEntry {
        *t.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn test_leaf1_has_apic_id_count_and_hypervisor_bit() {
        let t = normalize_cpuid(&[leaf(1, 0)], &cfg(3, 4, false)).unwrap();
        let l = find(&t, 1, 0);
        assert_eq!(l.ebx >> 24, 3);
        assert_eq!((l.ebx >> 16) & 0xff, 4);
        assert_ne!(l.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l.edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn test_leaf_b_topology_with_smt() {
        let t = normalize_cpuid(
            &[leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)],
            &cfg(1, 4, true),
        )
        .unwrap();
        let smt = find(&t, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 1));
        let core = find(&t, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 1));
        let end = find(&t, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx), (0, 0, 2));
    }

    #[test]
    fn test_single_vcpu_clears_htt_and_hides_cx16_on_request() {
        let mut l1 = leaf(1, 0);
        l1.edx = LEAF1_EDX_HTT;
        l1.ecx = LEAF1_ECX_CX16;
        let mut c = cfg(0, 1, true);
        c.hide_cx16 = true;
        let t = normalize_cpuid(&[l1], &c).unwrap();
        assert_eq!(t[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!(t[0].ecx & LEAF1_ECX_CX16, 0);
    }

    #[test]
    fn test_intel_leaf6_hides_turbo_and_energy_bias_only() {
        let vendor = |w: &[u8; 4]| u32::from_le_bytes(*w);
        let mut l0 = leaf(0, 0);
        (l0.ebx, l0.edx, l0.ecx) = (vendor(b"Genu"), vendor(b"ineI"), vendor(b"ntel"));
        let mut l6 = leaf(6, 0);
        (l6.eax, l6.ecx) = (0b111, 0b1001);
        let t = normalize_cpuid(&[l0, l6], &cfg(0, 1, false)).unwrap();
        let got = find(&t, 6, 0);
        assert_eq!((got.eax, got.ecx), (0b101, 0b0001));
        // Not on other vendors.
        let t = normalize_cpuid(&[l6], &cfg(0, 1, false)).unwrap();
        assert_eq!((t[0].eax, t[0].ecx), (0b111, 0b1001));
    }

    #[test]
    fn test_index_out_of_range_rejected() {
        assert!(normalize_cpuid(&[], &cfg(2, 2, false)).is_err());
    }
}
