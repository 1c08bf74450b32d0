//! The template engine: CPUID/MSR application, static templates on both vendors, proptests.

use proptest::prelude::*;
use squib_hv::{CapabilityModifier, CpuidEntry, MsrEntry};

use super::*;
use crate::cpuid::{CpuidConfig, normalize_cpuid};

fn entry(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        significant_index: false,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
    }
}

fn vendor_leaf(vendor: &[u8; 12]) -> CpuidEntry {
    let word =
        |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
    entry(0, 0, [0x1c, word(0), word(8), word(4)])
}

fn host_table(vendor: &[u8; 12], signature: u32) -> Vec<CpuidEntry> {
    vec![
        vendor_leaf(vendor),
        entry(1, 0, [signature, 0x0001_0800, 0xf7f8_3203, 0x1f8b_fbff]),
        CpuidEntry {
            significant_index: true,
            ..entry(7, 0, [2, 0xf1bf_2bfb, 0x1a00_5f46, 0x2081_4010])
        },
        CpuidEntry {
            significant_index: true,
            ..entry(0xd, 0, [0xe7, 0x240, 0xa80, 0])
        },
        CpuidEntry {
            significant_index: true,
            ..entry(0xd, 1, [0x7, 0x240, 0, 0])
        },
        entry(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
        entry(0x8000_0008, 0, [0x3930, 0x200, 0, 0]),
    ]
}

fn find(t: &[CpuidEntry], f: u32, i: u32) -> CpuidEntry {
    *t.iter().find(|e| e.function == f && e.index == i).unwrap()
}

fn tpl(cpuid: Vec<CpuidModifier>, msrs: Vec<MsrModifier>) -> CpuTemplate {
    CpuTemplate {
        capabilities: vec![CapabilityModifier::Remove(36)],
        cpuid,
        msrs,
    }
}

#[test]
fn test_bit_filter_sets_clears_and_keeps() {
    let f = BitFilter::new(0b0111, 0b1101);
    assert_eq!((f.filter(), f.value()), (0b0111, 0b0101));
    assert_eq!(f.apply(0b1000), 0b1101);
    assert_eq!(BitFilter::set(0b10).apply(0), 0b10);
    assert_eq!(BitFilter::clear(0b10).apply(0b11), 0b01);
    assert_eq!(
        BitFilter::new(u64::MAX, 0x1_0000_0001).apply32(0xffff_ffff),
        1
    );
}

#[test]
fn test_cpuid_template_modifies_registers_and_flags_like_firecracker() {
    // Firecracker's own unit-test case: leaf 3, all registers, stateful flags.
    let supported = vec![entry(3, 0, [0; 4])];
    let t = tpl(
        vec![CpuidModifier {
            leaf: 3,
            subleaf: 0,
            flags: 1,
            registers: vec![
                (CpuidReg::Eax, BitFilter::new(0b0111, 0b0101)),
                (CpuidReg::Ebx, BitFilter::new(0b0111, 0b0100)),
                (CpuidReg::Ecx, BitFilter::new(0b0111, 0b0111)),
                (CpuidReg::Edx, BitFilter::new(0b0111, 0b0001)),
            ],
        }],
        vec![],
    );
    let out = apply_cpuid_template(&supported, &t).unwrap();
    let e = find(&out, 3, 0);
    assert_eq!(
        (e.eax, e.ebx, e.ecx, e.edx),
        (0b0101, 0b0100, 0b0111, 0b0001)
    );
    assert!(e.significant_index);
    // An empty template changes nothing.
    assert_eq!(
        apply_cpuid_template(&supported, &CpuTemplate::default()).unwrap(),
        supported
    );
}

#[test]
fn test_cpuid_template_applies_register_modifiers_in_order() {
    let supported = vec![entry(1, 0, [0xff, 0, 0, 0])];
    let t = tpl(
        vec![CpuidModifier {
            leaf: 1,
            subleaf: 0,
            flags: 0,
            registers: vec![
                (CpuidReg::Eax, BitFilter::clear(0x0f)),
                (CpuidReg::Eax, BitFilter::set(0x01)),
            ],
        }],
        vec![],
    );
    assert_eq!(
        find(&apply_cpuid_template(&supported, &t).unwrap(), 1, 0).eax,
        0xf1
    );
}

#[test]
fn test_cpuid_template_refuses_unknown_leaves_with_firecracker_text() {
    let supported = host_table(&VENDOR_INTEL, 0x000c_06f2);
    for (leaf, subleaf, text) in [
        (0x99, 0, "Leaf: 99, Subleaf: 0"),
        (0x1, 5, "Leaf: 1, Subleaf: 5"),
        (0x8000_0099, 0x1f, "Leaf: 80000099, Subleaf: 1f"),
    ] {
        let t = tpl(
            vec![CpuidModifier {
                leaf,
                subleaf,
                flags: 0,
                registers: vec![],
            }],
            vec![],
        );
        let err = apply_cpuid_template(&supported, &t).unwrap_err();
        assert_eq!(err, TemplateError::CpuidNotSupported { leaf, subleaf });
        assert_eq!(
            err.to_string(),
            format!(
                "System configuration error: Failed to create guest config: Template changes a CPUID entry not supported by KVM: {text}"
            )
        );
    }
}

#[test]
fn test_normalisation_wins_over_the_template() {
    let supported = host_table(&VENDOR_INTEL, 0x000c_06f2);
    // A template that tries to clear the hypervisor bit and rewrite the APIC id.
    let t = tpl(
        vec![CpuidModifier {
            leaf: 1,
            subleaf: 0,
            flags: 0,
            registers: vec![
                (CpuidReg::Ecx, BitFilter::clear(1 << 31)),
                (CpuidReg::Ebx, BitFilter::set(0xff00_0000)),
                (CpuidReg::Ecx, BitFilter::clear(1 << 13)),
            ],
        }],
        vec![],
    );
    let templated = apply_cpuid_template(&supported, &t).unwrap();
    let cfg = CpuidConfig {
        vcpu_index: 1,
        vcpu_count: 2,
        smt: false,
        hide_cx16: false,
    };
    let l1 = find(&normalize_cpuid(&templated, &cfg).unwrap(), 1, 0);
    assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit is normalisation's");
    assert_eq!(l1.ebx >> 24, 1, "APIC id is normalisation's");
    assert_eq!(
        l1.ecx & (1 << 13),
        0,
        "the template's own bit stays cleared"
    );
}

#[test]
fn test_msr_template_filters_the_read_values() {
    let current = [
        MsrEntry {
            index: 0x10a,
            value: 0xe16d,
        },
        MsrEntry {
            index: 0x277,
            value: 0x0007_0406_0007_0406,
        },
    ];
    let t = tpl(
        vec![],
        vec![
            MsrModifier {
                index: 0x277,
                bits: BitFilter::new(0xff00_0000_0000_0000, 0x0500_0000_0000_0000),
            },
            MsrModifier {
                index: 0x10a,
                bits: BitFilter::clear(1),
            },
            // A second modifier of the same MSR applies on top of the first.
            MsrModifier {
                index: 0x10a,
                bits: BitFilter::set(0x1_0000_0000),
            },
        ],
    );
    assert_eq!(t.msr_indices(), vec![0x277, 0x10a, 0x10a]);
    assert_eq!(
        apply_msr_template(&current, &t).unwrap(),
        vec![
            MsrEntry {
                index: 0x10a,
                value: 0x1_0000_e16c
            },
            MsrEntry {
                index: 0x277,
                value: 0x0507_0406_0007_0406
            },
        ]
    );
}

#[test]
fn test_msr_template_refuses_unreadable_msrs_with_firecracker_text() {
    let t = tpl(
        vec![],
        vec![MsrModifier {
            index: 0x12345,
            bits: BitFilter::set(1),
        }],
    );
    let err = apply_msr_template(&[], &t).unwrap_err();
    assert_eq!(err, TemplateError::MsrNotReadable(0x12345));
    assert_eq!(
        err.to_string(),
        "System configuration error: Failed to create guest config: KVM vcpu ioctl failed: Failed to get KVM vcpu msr: 0x12345"
    );
}

#[test]
fn test_boot_msrs_win_over_template_msrs() {
    let boot = vec![MsrEntry {
        index: 0x1a0,
        value: 1,
    }];
    let template = [
        MsrEntry {
            index: 0x1a0,
            value: 0,
        },
        MsrEntry {
            index: 0x277,
            value: 7,
        },
    ];
    assert_eq!(
        with_template_msrs(boot.clone(), &template),
        vec![boot[0], template[1]]
    );
}

#[test]
fn test_host_cpu_from_cpuid() {
    let host = HostCpu::from_cpuid(&host_table(&VENDOR_AMD, MILAN)).unwrap();
    assert_eq!((host.vendor, host.signature), (VENDOR_AMD, MILAN));
    assert_eq!(
        HostCpu::from_cpuid(&[]).unwrap_err().to_string(),
        "Failed to get CPU template: Failed to get CPU vendor information: Invalid leaf: 0"
    );
}

const INTEL_TEMPLATES: [StaticTemplate; 4] = [
    StaticTemplate::C3,
    StaticTemplate::T2,
    StaticTemplate::T2S,
    StaticTemplate::T2CL,
];

#[test]
fn test_static_templates_refuse_the_wrong_vendor_with_firecracker_text() {
    let amd = HostCpu {
        vendor: VENDOR_AMD,
        signature: MILAN,
    };
    for t in INTEL_TEMPLATES {
        let err = static_template(t, &amd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to get CPU template: CPU vendor mismatched between actual CPU and CPU template."
        );
    }
    let intel = HostCpu {
        vendor: VENDOR_INTEL,
        signature: CASCADE_LAKE,
    };
    assert_eq!(
        static_template(StaticTemplate::T2A, &intel).unwrap_err(),
        TemplateError::VendorMismatch
    );
}

#[test]
fn test_static_templates_check_the_cpu_model_like_firecracker() {
    let intel = |signature| HostCpu {
        vendor: VENDOR_INTEL,
        signature,
    };
    // This host: Emerald Rapids (family 6, model 0xcf): no Intel template allows it.
    for t in INTEL_TEMPLATES {
        assert_eq!(
            static_template(t, &intel(0x000c_06f2))
                .unwrap_err()
                .to_string(),
            "Failed to get CPU template: The current CPU model is not permitted to apply the CPU template."
        );
    }
    // The processor-type bits (13:12) and reserved bits (31:28) do not matter.
    assert!(static_template(StaticTemplate::T2, &intel(SKYLAKE | 0xf000_3000)).is_ok());
    assert_eq!(
        static_template(StaticTemplate::T2S, &intel(ICE_LAKE)).unwrap_err(),
        TemplateError::InvalidCpuModel
    );
    assert_eq!(
        static_template(StaticTemplate::T2CL, &intel(SKYLAKE)).unwrap_err(),
        TemplateError::InvalidCpuModel
    );
    assert!(static_template(StaticTemplate::T2CL, &intel(ICE_LAKE)).is_ok());
    let amd = HostCpu {
        vendor: VENDOR_AMD,
        signature: MILAN,
    };
    assert!(static_template(StaticTemplate::T2A, &amd).is_ok());
    assert_eq!(
        static_template(
            StaticTemplate::T2A,
            &HostCpu {
                signature: 0x00a1_0f11,
                ..amd
            }
        )
        .unwrap_err(),
        TemplateError::InvalidCpuModel
    );
    assert!(static_template_warning(StaticTemplate::C3, &intel(SKYLAKE)).is_some());
    assert!(static_template_warning(StaticTemplate::C3, &intel(CASCADE_LAKE)).is_none());
}

#[test]
fn test_static_template_contents_match_firecracker() {
    let t2 = StaticTemplate::T2.template();
    assert!(t2.capabilities.is_empty() && t2.msrs.is_empty());
    let leaves: Vec<_> = t2
        .cpuid
        .iter()
        .map(|m| (m.leaf, m.subleaf, m.flags))
        .collect();
    assert_eq!(
        leaves,
        vec![
            (1, 0, 0),
            (7, 0, 1),
            (0xd, 0, 1),
            (0xd, 1, 1),
            (0x8000_0001, 0, 0),
            (0x8000_0008, 0, 0)
        ]
    );
    // T2 leaf 1 EAX: the T2 family/model/stepping (0x306f2) over the version bits.
    assert_eq!(
        t2.cpuid[0].registers[0],
        (CpuidReg::Eax, BitFilter::new(0x0fff_3fff, 0x0003_06f2))
    );
    // T2S sets IA32_ARCH_CAPABILITIES whole (FB_CLEAR, bit 17, included); T2CL passes bits through.
    let t2s = StaticTemplate::T2S.template();
    assert_eq!(
        t2s.msrs,
        vec![MsrModifier {
            index: 0x10a,
            bits: BitFilter::new(u64::MAX, 0x0c0a_0c4c)
        }]
    );
    assert_ne!(t2s.msrs[0].bits.value() & (1 << 17), 0);
    assert_eq!(
        StaticTemplate::T2CL.template().msrs[0].bits.filter(),
        0xffff_ffff_e2f5_1e00
    );
    assert!(StaticTemplate::C3.template().cpuid.len() == 5);
    assert!(StaticTemplate::T2A.template().msrs.is_empty());
    // Every static template applies to a table that has its leaves.
    let table = host_table(&VENDOR_INTEL, SKYLAKE);
    for t in [
        StaticTemplate::C3,
        StaticTemplate::T2,
        StaticTemplate::T2S,
        StaticTemplate::T2CL,
        StaticTemplate::T2A,
    ] {
        let out = apply_cpuid_template(&table, &t.template()).unwrap();
        assert_eq!(
            find(&out, 1, 0).eax & 0x0fff_3fff,
            u32::try_from(t.template().cpuid[0].registers[0].1.value()).unwrap()
        );
    }
}

fn reg() -> impl Strategy<Value = CpuidReg> {
    prop_oneof![
        Just(CpuidReg::Eax),
        Just(CpuidReg::Ebx),
        Just(CpuidReg::Ecx),
        Just(CpuidReg::Edx)
    ]
}

fn cpuid_modifier() -> impl Strategy<Value = CpuidModifier> {
    (
        0u32..4,
        0u32..3,
        any::<u32>(),
        proptest::collection::vec((reg(), any::<u64>(), any::<u64>()), 0..6),
    )
        .prop_map(|(leaf, subleaf, flags, regs)| CpuidModifier {
            leaf,
            subleaf,
            flags,
            registers: regs
                .into_iter()
                .map(|(r, f, v)| (r, BitFilter::new(f, v)))
                .collect(),
        })
}

fn msr_modifier() -> impl Strategy<Value = MsrModifier> {
    (0u32..6, any::<u64>(), any::<u64>()).prop_map(|(index, f, v)| MsrModifier {
        index,
        bits: BitFilter::new(f, v),
    })
}

proptest! {
    #[test]
    fn prop_applying_arbitrary_modifiers_never_panics(
        cpuid in proptest::collection::vec(cpuid_modifier(), 0..12),
        msrs in proptest::collection::vec(msr_modifier(), 0..12),
        table in proptest::collection::vec((0u32..4, 0u32..3, any::<[u32; 4]>()), 0..12),
        current in proptest::collection::vec((0u32..6, any::<u64>()), 0..8),
    ) {
        let supported: Vec<_> = table.iter().map(|&(f, i, r)| entry(f, i, r)).collect();
        let current: Vec<_> = current.iter().map(|&(index, value)| MsrEntry { index, value }).collect();
        let t = CpuTemplate { capabilities: vec![], cpuid, msrs };
        match apply_cpuid_template(&supported, &t) {
            Ok(out) => {
                prop_assert_eq!(out.len(), supported.len());
                // Unmodified leaves are untouched.
                for (a, b) in out.iter().zip(&supported) {
                    if !t.cpuid.iter().any(|m| m.leaf == b.function && m.subleaf == b.index) {
                        prop_assert_eq!(a, b);
                    }
                }
            }
            Err(TemplateError::CpuidNotSupported { leaf, subleaf }) => {
                prop_assert!(!supported.iter().any(|e| e.function == leaf && e.index == subleaf));
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
        if let Ok(out) = apply_msr_template(&current, &t) {
            for m in &out {
                prop_assert!(t.msrs.iter().any(|x| x.index == m.index));
            }
        }
    }

    #[test]
    fn prop_last_filter_decides_its_bits(f in any::<u64>(), v in any::<u64>(), current in any::<u32>()) {
        let bits = BitFilter::new(f, v);
        let out = bits.apply32(current);
        let low = |x: u64| u32::try_from(x & 0xffff_ffff).unwrap();
        let f32 = low(f);
        prop_assert_eq!(out & !f32, current & !f32);
        prop_assert_eq!(out & f32, low(v) & f32);
    }
}
