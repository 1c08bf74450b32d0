//! Property test: random descriptor tables, random payloads (PFNs, statistics, hinting
//! commands) and random available rings on every balloon queue, plus random host-side calls.
//!
//! Properties: no panic; the used index of a queue never passes what was published; every
//! used entry names a descriptor inside the queue; and every byte of guest memory that changed
//! outside the used rings is now zero **and** lies in a page the guest named, either as a PFN
//! anywhere in the data area or as part of a descriptor's buffer (hinting and reporting release
//! buffers). That is: the device releases nothing the guest did not hand it.
//!
//! Cases: 3 000 by default; `SQUIB_PROPTEST_CASES` (or `PROPTEST_CASES`) overrides, e.g.
//! 100 000 for a long run.

use std::collections::HashSet;

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

use super::tests::{DATA, H, all_features};
use crate::virtio::VirtioDevice;
use crate::virtio::test_utils::{F_NEXT, F_WRITE, changed_bytes};

const QSIZE: u16 = 16;
/// Guest memory of the property test: 64 pages.
const MEM: usize = 0x4_0000;
const PAGE: u64 = 4096;

fn cases() -> u32 {
    ["SQUIB_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(3_000)
}

/// A descriptor from random integers: mostly in the data area, sometimes anywhere.
fn shape_desc((a, l, f, n): (u64, u32, u16, u16)) -> (u64, u32, u16, u16) {
    let mem = MEM as u64;
    let addr = match a % 10 {
        0 => a,
        1 => ((a >> 8) % mem) & !(PAGE - 1),
        _ => DATA + (a >> 8) % 0x4000,
    };
    let len = match l % 8 {
        0 => 4,
        1 => 10,
        2 => 4096,
        3 => (l >> 4) % 1100,
        4 => 20,
        _ => (l >> 4) % 0x3000,
    };
    let next = if n % 7 == 0 { n } else { n % QSIZE };
    (addr, len, f & (F_NEXT | F_WRITE), next)
}

/// A PFN from a random integer: mostly inside guest memory.
fn shape_pfn(p: u32) -> u32 {
    match p % 6 {
        0 => p,
        _ => (p >> 3) % u32::try_from(MEM as u64 / PAGE).unwrap(),
    }
}

#[derive(Debug, Clone)]
enum HostOp {
    Size(u64),
    Interval(u16),
    StartHint(bool),
    StopHint,
    Timer,
    Config(u64, Vec<u8>),
}

fn host_op() -> impl Strategy<Value = HostOp> {
    prop_oneof![
        (0u64..8).prop_map(HostOp::Size),
        (0u16..4).prop_map(HostOp::Interval),
        any::<bool>().prop_map(HostOp::StartHint),
        Just(HostOp::StopHint),
        Just(HostOp::Timer),
        (0u64..16, proptest::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(o, d)| HostOp::Config(o, d)),
    ]
}

type Desc = (u64, u32, u16, u16);

fn run_case(
    descs: &[Vec<Desc>],
    heads: &[Vec<u16>],
    pfns: &[u32],
    ops: &[HostOp],
) -> Result<(), TestCaseError> {
    let mut h = H::with_memory(all_features(), MEM);
    // Payloads: PFNs and (sometimes) small command values across the data area.
    let payload: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    h.mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
    for (q, table) in descs.iter().enumerate() {
        for (i, &(addr, len, flags, next)) in table.iter().enumerate() {
            h.qs[q].write_desc(u16::try_from(i).unwrap(), addr, len, flags, next);
        }
    }
    let mut published = vec![0u16; descs.len()];
    for (q, hs) in heads.iter().enumerate() {
        for &head in hs {
            h.qs[q].publish(head);
            published[q] += 1;
        }
    }
    let before = {
        let mut v = vec![0u8; MEM];
        h.mem.read_slice(&mut v, GuestAddress(0)).unwrap();
        v
    };
    // Every page the guest names: every page a descriptor buffer touches (hinting, reporting),
    // and every PFN an inflate buffer can hold (its u32s before the run; zeroed memory and the
    // used rings the device writes can only add small PFNs, hence 0..64).
    let mut named: HashSet<u64> = (0..64).collect();
    for (q, table) in descs.iter().enumerate() {
        for &(addr, len, _, _) in table {
            if len == 0 {
                continue;
            }
            let first = addr / PAGE;
            let last = addr.saturating_add(u64::from(len) - 1) / PAGE;
            named.extend(first..=last.min(first + 64));
            let end = addr
                .checked_add(u64::from(len))
                .filter(|&e| e <= MEM as u64);
            if q == 0
                && len <= 1024
                && len % 4 == 0
                && let Some(end) = end
            {
                for a in (addr..end).step_by(4) {
                    let a = usize::try_from(a).unwrap();
                    let b = [before[a], before[a + 1], before[a + 2], before[a + 3]];
                    named.insert(u64::from(u32::from_le_bytes(b)));
                }
            }
        }
    }
    for (i, op) in ops.iter().enumerate() {
        match op {
            HostOp::Size(m) => drop(h.dev.update_size(*m)),
            HostOp::Interval(s) => drop(h.dev.update_stats_polling_interval(*s)),
            HostOp::StartHint(a) => drop(h.dev.start_hinting(*a)),
            HostOp::StopHint => drop(h.dev.stop_hinting()),
            HostOp::Timer => h.dev.process_timer(0),
            HostOp::Config(o, d) => h.dev.write_config(*o, d),
        }
        h.kick(i % descs.len());
    }
    for q in 0..descs.len() {
        h.kick(q);
    }
    let after = {
        let mut v = vec![0u8; MEM];
        h.mem.read_slice(&mut v, GuestAddress(0)).unwrap();
        v
    };
    let used_ring = |addr: u64| {
        h.qs.iter()
            .any(|q| addr >= q.used_addr().0 && addr < q.end())
    };
    for addr in changed_bytes(&before, &after) {
        if used_ring(addr) {
            continue;
        }
        prop_assert_eq!(
            after[usize::try_from(addr).unwrap()],
            0,
            "byte {:#x} changed to non-zero",
            addr
        );
        prop_assert!(
            named.contains(&(addr / PAGE)),
            "page {:#x} released without being named",
            addr / PAGE
        );
    }
    for (q, tq) in h.qs.iter().enumerate() {
        let used = tq.used_idx();
        prop_assert!(
            used <= published[q],
            "queue {q}: used {used} > {}",
            published[q]
        );
        for i in 0..used {
            prop_assert!(tq.used_elem(i).0 < u32::from(QSIZE));
        }
    }
    prop_assert!(h.dev.is_activated());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_balloon_releases_only_what_the_guest_names(
        raw in proptest::collection::vec(
            proptest::collection::vec(any::<(u64, u32, u16, u16)>(), 1..8), 5),
        heads in proptest::collection::vec(
            proptest::collection::vec(any::<u16>(), 0..6), 5),
        pfns in proptest::collection::vec(any::<u32>(), 0..512),
        ops in proptest::collection::vec(host_op(), 0..6),
    ) {
        let descs: Vec<Vec<Desc>> =
            raw.into_iter().map(|t| t.into_iter().map(shape_desc).collect()).collect();
        let heads: Vec<Vec<u16>> = heads
            .into_iter()
            .map(|hs| hs.into_iter().map(|x| if x % 11 == 0 { x } else { x % 8 }).collect())
            .collect();
        let pfns: Vec<u32> = pfns.into_iter().map(shape_pfn).collect();
        run_case(&descs, &heads, &pfns, &ops)?;
    }
}
