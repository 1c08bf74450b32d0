//! Property tests: mutated real state files (squib's and Firecracker's) always give a clean
//! `Err` (or, for a mutation that happens to be harmless, an `Ok`), never a panic, never an
//! unbounded allocation. Default 4096 cases per property; `SQUIB_PROPTEST_CASES` for more.

mod common;

use common::*;
use proptest::prelude::*;
use squib_snapshot::{MemoryLayout, RegionDesc, decode_state, describe_bytes};

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    Extend {
        bytes: Vec<u8>,
    },
    Splice {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    /// Rewrite a byte of the header region (packing byte, magic, version length/text).
    Header {
        at: u8,
        value: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (0u8..24, any::<u8>()).prop_map(|(at, value)| Mutation::Header { at, value }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::FlipBit { at, bit } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::SetByte { at, value } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *value;
            }
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Extend { bytes: more } => bytes.extend_from_slice(more),
        Mutation::Splice { at, bytes: more } => {
            let at = at % n;
            let at = at.min(bytes.len());
            bytes.splice(at..at, more.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = (at % n).min(bytes.len());
            let end = (at + len).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Header { at, value } => {
            if let Some(b) = bytes.get_mut(usize::from(*at)) {
                *b = *value;
            }
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(4096),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn check(bytes: &[u8]) {
    let _ = decode_state::<TestState>(bytes);
    let _ = decode_state::<Vec<String>>(bytes);
    let _ = describe_bytes(bytes);
}

proptest! {
    #![proptest_config(config())]

    /// Mutations of a squib file, with the CRC left stale (the CRC check must catch them)
    /// and recomputed (so the bitcode decoders see the damage).
    #[test]
    fn prop_mutated_squib_file_never_panics(
        muts in prop::collection::vec(mutation(), 1..4),
        reseal_crc in any::<bool>(),
    ) {
        let good = squib_snapshot::encode_state(&sample_state()).unwrap();
        let mut bytes = good.clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        if reseal_crc {
            reseal(&mut bytes);
        }
        check(&bytes);
        if !reseal_crc && bytes != good {
            // Any change without a fixed-up CRC is caught (CRC64 detects all burst errors
            // shorter than 64 bits; longer changes collide with probability 2^-64).
            prop_assert!(decode_state::<TestState>(&bytes).is_err());
        }
    }

    /// Mutations of Firecracker's own file: refused cleanly, never a panic.
    #[test]
    fn prop_mutated_firecracker_file_never_panics(
        muts in prop::collection::vec(mutation(), 1..4),
        reseal_crc in any::<bool>(),
    ) {
        let mut bytes = fixture();
        for m in &muts {
            apply(&mut bytes, m);
        }
        if reseal_crc {
            reseal(&mut bytes);
        }
        check(&bytes);
        prop_assert!(decode_state::<TestState>(&bytes).is_err());
    }

    /// Random bytes, with and without a valid CRC, and random forged headers.
    #[test]
    fn prop_random_bytes_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 0..2048),
        reseal_crc in any::<bool>(),
    ) {
        if reseal_crc {
            reseal(&mut bytes);
        }
        check(&bytes);
    }

    #[test]
    fn prop_forged_headers_never_panic(
        magic in any::<u64>(),
        (major, minor, patch) in (0u64..20, 0u64..5, any::<u64>()),
        payload in prop::collection::vec(any::<u8>(), 0..256),
        tag in "[a-z]{0,8}",
        format_version in any::<u32>(),
    ) {
        let v = format!("{major}.{minor}.{patch}");
        let bytes = forged(magic, &v, Env { tag, format_version, payload });
        check(&bytes);
    }

    /// Layouts from a state file: validation never panics, and a validated layout's
    /// arithmetic never overflows.
    #[test]
    fn prop_layout_validation_never_panics(
        regions in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..8),
        aligned in any::<bool>(),
    ) {
        let regions = regions
            .into_iter()
            .map(|(g, s, f)| {
                let m = if aligned { !0xfff } else { !0 };
                RegionDesc { guest_addr: g & m, size: s & m, file_offset: f & m }
            })
            .collect();
        let layout = MemoryLayout { regions };
        if layout.validate().is_ok() {
            let total = layout.regions.iter().try_fold(0u64, |a, r| a.checked_add(r.size));
            prop_assert!(total.is_some());
            prop_assert!(i64::try_from(layout.required_file_len()).is_ok());
        }
        let _ = layout.restore_ranges();
    }
}
