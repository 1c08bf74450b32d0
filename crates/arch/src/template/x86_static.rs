//! Firecracker 1.17's x86_64 static CPU templates as data (the bit filters of its `C3`, `T2`,
//! `T2S`, `T2CL` and `T2A` templates, which its `tests/data/custom_cpu_templates/*.json` spell
//! as custom templates). Each row is `(register, filter, value)`: bits set in `filter` are
//! forced to `value`, the others pass through.

use super::CpuidReg::{Eax, Ebx, Ecx, Edx};
use super::{LeafBits, StaticData};

/// C3: Intel; Skylake, Cascade Lake, Ice Lake. Close to an AWS C3 instance.
pub(super) const C3: StaticData = StaticData {
    cpuid: &[
        LeafBits {
            leaf: 0x1,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Eax, 0x0fff_3fff, 0x0003_06e4),
                (Ecx, 0x0040_dd3c, 0x0000_0000),
                (Edx, 0xa864_1080, 0x0000_1080),
            ],
        },
        LeafBits {
            leaf: 0x7,
            subleaf: 0x0,
            flags: 1,
            registers: &[
                (Ebx, 0xffaf_dd3c, 0x0000_0000),
                (Ecx, 0x4041_481e, 0x0000_0000),
                (Edx, 0x0000_000c, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x0,
            flags: 1,
            registers: &[(Eax, 0x0000_02f8, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x1,
            flags: 1,
            registers: &[(Eax, 0x0000_000e, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0x8000_0001,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Ecx, 0x0000_0120, 0x0000_0000),
                (Edx, 0x0400_0000, 0x0000_0000),
            ],
        },
    ],
    msrs: &[],
};

/// T2: Intel; Skylake, Cascade Lake, Ice Lake. Close to an AWS T2 instance.
pub(super) const T2: StaticData = StaticData {
    cpuid: &[
        LeafBits {
            leaf: 0x1,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Eax, 0x0fff_3fff, 0x0003_06f2),
                (Ecx, 0x0004_cdfc, 0x0000_0000),
                (Edx, 0xe864_1080, 0x0000_1080),
            ],
        },
        LeafBits {
            leaf: 0x7,
            subleaf: 0x0,
            flags: 1,
            registers: &[
                (Ebx, 0xffef_da14, 0x0000_0200),
                (Ecx, 0x4041_5f5e, 0x0000_0000),
                (Edx, 0x0000_011c, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x0,
            flags: 1,
            registers: &[(Eax, 0x0000_02f8, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x1,
            flags: 1,
            registers: &[(Eax, 0x0000_000e, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0x8000_0001,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Ecx, 0x2000_0100, 0x0000_0000),
                (Edx, 0x0400_0000, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0x8000_0008,
            subleaf: 0x0,
            flags: 0,
            registers: &[(Ebx, 0x0000_0200, 0x0000_0000)],
        },
    ],
    msrs: &[],
};

/// T2S: Intel; Skylake, Cascade Lake. T2 restricted further for snapshot migration between the two; sets `FB_CLEAR` in `IA32_ARCH_CAPABILITIES`.
pub(super) const T2S: StaticData = StaticData {
    cpuid: &[
        LeafBits {
            leaf: 0x1,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Eax, 0x0fff_3fff, 0x0003_06f2),
                (Ecx, 0x0004_cdfc, 0x0000_0000),
                (Edx, 0xe864_1080, 0x0000_1080),
            ],
        },
        LeafBits {
            leaf: 0x7,
            subleaf: 0x0,
            flags: 1,
            registers: &[
                (Ebx, 0xffef_da14, 0x0000_0200),
                (Ecx, 0x4041_5f5e, 0x0000_0000),
                (Edx, 0x0000_011c, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x0,
            flags: 1,
            registers: &[(Eax, 0x0000_02f8, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x1,
            flags: 1,
            registers: &[(Eax, 0x0000_000e, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0x8000_0001,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Ecx, 0x2000_0100, 0x0000_0000),
                (Edx, 0x0400_0000, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0x8000_0008,
            subleaf: 0x0,
            flags: 0,
            registers: &[(Ebx, 0x0000_0200, 0x0000_0000)],
        },
    ],
    msrs: &[(0x10a, 0xffff_ffff_ffff_ffff, 0x0000_0000_0c0a_0c4c)],
};

/// T2CL: Intel; Cascade Lake, Ice Lake. Instruction-set parity with T2A.
pub(super) const T2CL: StaticData = StaticData {
    cpuid: &[
        LeafBits {
            leaf: 0x1,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Eax, 0x0fff_3fff, 0x0003_06f2),
                (Ecx, 0x0004_cdfc, 0x0000_0000),
                (Edx, 0xe864_1080, 0x0000_1080),
            ],
        },
        LeafBits {
            leaf: 0x7,
            subleaf: 0x0,
            flags: 1,
            registers: &[
                (Ebx, 0xffef_da14, 0x0000_0200),
                (Ecx, 0x4041_5f5e, 0x0000_0000),
                (Edx, 0x0000_011c, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x0,
            flags: 1,
            registers: &[(Eax, 0x0000_02f8, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x1,
            flags: 1,
            registers: &[(Eax, 0x0000_000e, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0x8000_0001,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Ecx, 0x2000_01c0, 0x0000_0000),
                (Edx, 0x07c0_0000, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0x8000_0008,
            subleaf: 0x0,
            flags: 0,
            registers: &[(Ebx, 0x0000_0200, 0x0000_0000)],
        },
    ],
    msrs: &[(0x10a, 0xffff_ffff_e2f5_1e00, 0x0000_0000_0000_0000)],
};

/// T2A: AMD; Milan. Instruction-set parity with T2CL.
pub(super) const T2A: StaticData = StaticData {
    cpuid: &[
        LeafBits {
            leaf: 0x1,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Eax, 0x0fff_3fff, 0x0003_06f2),
                (Ecx, 0x0004_cdfc, 0x0000_0000),
                (Edx, 0xe864_1080, 0x0000_1080),
            ],
        },
        LeafBits {
            leaf: 0x7,
            subleaf: 0x0,
            flags: 1,
            registers: &[
                (Ebx, 0xffef_da14, 0x0000_0200),
                (Ecx, 0x4041_5f5e, 0x0000_0000),
                (Edx, 0x0000_011c, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x0,
            flags: 1,
            registers: &[(Eax, 0x0000_02f8, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0xd,
            subleaf: 0x1,
            flags: 1,
            registers: &[(Eax, 0x0000_000e, 0x0000_0000)],
        },
        LeafBits {
            leaf: 0x8000_0001,
            subleaf: 0x0,
            flags: 0,
            registers: &[
                (Ecx, 0x2000_01c4, 0x0000_0000),
                (Edx, 0x0640_0000, 0x0000_0000),
            ],
        },
        LeafBits {
            leaf: 0x8000_0008,
            subleaf: 0x0,
            flags: 0,
            registers: &[(Ebx, 0x001c_0205, 0x001c_0004)],
        },
    ],
    msrs: &[],
};
