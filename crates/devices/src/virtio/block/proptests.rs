//! Property test: random descriptor tables and available rings against virtio-blk.
//!
//! Every case lays out a 16-entry queue in the first 4 KiB of a 16 KiB guest memory, fills the
//! descriptor table with random descriptors (addresses mostly in the data area, sometimes
//! anywhere; random lengths, `NEXT`/`WRITE` flags and `next` indices, so loops, chains longer than
//! the queue and wrong directions all occur), writes random request headers into the data area,
//! publishes random heads (some out of range, sometimes an impossible `avail.idx`), optionally
//! behind an ops rate limiter, and runs the device. The properties: no panic, no byte changes
//! outside device-writable descriptor buffers and the used ring, the used index never passes the
//! number of published heads, and every used entry names a descriptor inside the queue.
//!
//! `INDIRECT` is never set: an indirect table would live in the data area, which the device
//! itself rewrites, so the oracle would have to replay the device. Indirect chains are covered
//! by a unit test.
//!
//! The same property runs on both I/O engines. `Sync`: 100 000 cases by default
//! (`PROPTEST_CASES` overrides), about 10–15 s in a debug build. `Async` (io_uring, one ring per
//! case): 5 000 cases by default (`PROPTEST_ASYNC_CASES` overrides); completions are pumped like
//! the event loop does, and one case in four holds the submissions in the ring and resets the
//! device mid-flight, so the reset path (wait, discard, no status write) is held to the same
//! oracle. To keep it that fast, the strategies draw plain integers and the test shapes them (mostly-valid
//! addresses, lengths around the interesting sizes, ...) with cheap arithmetic; shrinking still
//! works on the raw integers.

use std::io::Write;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::request::{T_FLUSH, T_GET_ID, T_IN, T_OUT};
use super::tests::pump;
use super::*;
use crate::rate_limiter::{FakeClock, TokenBucket};
use crate::virtio::VirtioDevice;
use crate::virtio::test_utils::{
    F_NEXT, F_WRITE, RecordingInterrupt, TestQueue, changed_bytes, guest_memory,
};

const QSIZE: u16 = 16;
const RING_END: u64 = 0x1000;
const MEM: usize = 0x4000;
const MEM_END: u64 = MEM as u64;
const SECTORS: u64 = 8;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn async_cases() -> u32 {
    std::env::var("PROPTEST_ASYNC_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// A raw descriptor (address, length, flags, next) shaped from random integers.
fn shape_desc((a, l, f, n): (u64, u32, u16, u16)) -> (u64, u32, u16, u16) {
    let addr = match a % 18 {
        0 => a,
        1 => MEM_END - 0x100 + (a >> 8) % 0x200,
        _ => RING_END + (a >> 8) % (MEM_END - RING_END),
    };
    let len = match l % 17 {
        0..=3 => 16,
        4..=7 => 1,
        8..=11 => [512, 1024, 20, 513, 1025][(l >> 8) as usize % 5],
        12..=15 => (l >> 8) % 0x1200,
        _ => l,
    };
    let next = if n % 9 == 0 { n } else { n % QSIZE };
    (addr, len, f & (F_NEXT | F_WRITE), next)
}

/// A request header (address, type, sector) shaped from random integers.
fn shape_header((at, t, sector): (u64, u32, u64)) -> (u64, u32, u64) {
    let at = RING_END + at % (MEM_END - RING_END - 16);
    let t = [T_IN, T_OUT, T_FLUSH, T_GET_ID, t][t as usize % 5];
    let sector = if sector % 5 == 0 {
        sector
    } else {
        sector % (SECTORS + 2)
    };
    (at, t, sector)
}

/// Rewrites the table into five header/data/status chains (heads 0, 3, ..., 12) that are mostly
/// well-formed, so the valid paths get exercised too; about one descriptor in eight keeps its
/// random value.
fn structure(
    descs: &mut [(u64, u32, u16, u16)],
    raw: &[(u64, u32, u16, u16)],
    headers: &[(u64, u32, u64)],
    heads: &mut [u16],
) {
    for k in 0..5u16 {
        let i = usize::from(3 * k);
        let (ra, rl, rf, _) = raw[i + 1];
        let (hdr, t) = headers
            .get(usize::from(k))
            .map_or((RING_END + ra % 0x2000, T_IN), |h| (h.0, h.1));
        let write = match t {
            T_IN | T_GET_ID => rf % 8 != 0,
            _ => rf % 8 == 0,
        };
        let chain = [
            (hdr, 16, F_NEXT, 3 * k + 1),
            (
                RING_END + (ra >> 4) % (MEM_END - RING_END - 0x400),
                [512, 1024, 20, 0][rl as usize % 4],
                F_NEXT | if write { F_WRITE } else { 0 },
                3 * k + 2,
            ),
            (RING_END + (ra >> 20) % (MEM_END - RING_END), 1, F_WRITE, 0),
        ];
        for (j, d) in chain.into_iter().enumerate() {
            if raw[i + j].2 % 8 != 7 {
                descs[i + j] = d;
            }
        }
    }
    for h in heads.iter_mut() {
        if *h % 4 != 3 {
            *h = 3 * (*h % 5);
        }
    }
}

fn disk() -> &'static TempFile {
    static DISK: std::sync::OnceLock<TempFile> = std::sync::OnceLock::new();
    DISK.get_or_init(|| {
        let tmp = TempFile::new().unwrap();
        tmp.as_file()
            .write_all(&vec![0x3c; usize::try_from(SECTORS * 512).unwrap()])
            .unwrap();
        tmp
    })
}

/// One case of the property on `engine` (see the module docs).
fn check(
    engine: IoEngine,
    raw_descs: &[(u64, u32, u16, u16)],
    raw_headers: Vec<(u64, u32, u64)>,
    raw_heads: &[u16],
    knobs: (u8, bool, u8, u16),
) -> Result<(), TestCaseError> {
    let (broken_idx, read_only, ops_limit, structured) = knobs;
    let headers: Vec<_> = raw_headers.into_iter().map(shape_header).collect();
    let mut descs: Vec<_> = raw_descs.iter().copied().map(shape_desc).collect();
    let mut heads: Vec<u16> = raw_heads
        .iter()
        .map(|&h| {
            if h % 9 == 0 {
                QSIZE + h % 48
            } else {
                h % QSIZE
            }
        })
        .collect();
    if structured % 2 == 0 {
        structure(&mut descs, raw_descs, &headers, &mut heads);
    }
    let mem = guest_memory(MEM);
    let q = TestQueue::new(&mem, 0, QSIZE);
    for &(at, t, sector) in &headers {
        mem.write_obj(t, GuestAddress(at)).unwrap();
        mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }
    for (i, &(a, l, f, n)) in descs.iter().enumerate() {
        q.write_desc(u16::try_from(i).unwrap(), a, l, f, n);
    }
    for &h in &heads {
        q.publish(h);
    }
    if broken_idx % 20 == 0 {
        q.set_avail_idx(u16::try_from(heads.len()).unwrap() + QSIZE + 1);
    }
    let mut before = vec![0u8; MEM];
    mem.read_slice(&mut before, GuestAddress(0)).unwrap();

    let clock = Arc::new(FakeClock::new());
    let ops = (ops_limit % 4 == 0)
        .then(|| TokenBucket::with_clock(1 + u64::from(ops_limit % 3), 0, 1000, clock.clone()))
        .flatten();
    let mut dev = Block::new(BlockConfig {
        id: "fuzz".into(),
        path: disk().as_path().to_path_buf(),
        read_only,
        root: false,
        partuuid: None,
        // Writeback flushes are io_uring fsyncs on the Async engine.
        cache_type: if engine == IoEngine::Async && structured % 3 == 0 {
            CacheType::Writeback
        } else {
            CacheType::Unsafe
        },
        io_engine: engine,
        rate_limiter: RateLimiter::with_clock(None, ops, clock.clone()),
    })
    .unwrap();
    dev.activate(
        mem.clone(),
        RecordingInterrupt::new(),
        vec![q.create_queue()],
    )
    .unwrap();
    let reset_mid_flight = engine == IoEngine::Async && structured % 4 == 1;
    if reset_mid_flight && let Some(e) = dev.engine_mut().as_mut() {
        e.hold = true;
    }
    dev.process_queue_event(0);
    if reset_mid_flight {
        dev.reset();
        prop_assert_eq!(dev.in_flight(), 0);
    } else {
        pump(&mut dev);
        // Drain whatever the limiter held back.
        for _ in 0..heads.len() {
            if !dev.rate_limiter().is_blocked() {
                break;
            }
            clock.advance(std::time::Duration::from_secs(1));
            dev.process_timer(0);
            pump(&mut dev);
        }
        prop_assert_eq!(dev.in_flight(), 0);
    }

    let mut after = vec![0u8; MEM];
    mem.read_slice(&mut after, GuestAddress(0)).unwrap();
    let used = q.used_addr().0..q.end();
    for addr in changed_bytes(&before, &after) {
        let writable = descs
            .iter()
            .any(|&(a, l, f, _)| f & F_WRITE != 0 && addr >= a && addr - a < u64::from(l));
        prop_assert!(
            used.contains(&addr) || writable,
            "byte {addr:#x} changed outside writable buffers"
        );
    }
    let n_used = q.used_idx();
    prop_assert!(usize::from(n_used) <= heads.len());
    for i in 0..n_used {
        let (id, _) = q.used_elem(i);
        prop_assert!(id < u32::from(QSIZE));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_block_never_panics_and_writes_only_writable_buffers(
        raw_descs in prop::collection::vec(any::<(u64, u32, u16, u16)>(), QSIZE as usize),
        raw_headers in prop::collection::vec(any::<(u64, u32, u64)>(), 0..6),
        raw_heads in prop::collection::vec(any::<u16>(), 0..20),
        knobs in any::<(u8, bool, u8, u16)>(),
    ) {
        check(IoEngine::Sync, &raw_descs, raw_headers, &raw_heads, knobs)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: async_cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_async_block_never_panics_and_writes_only_writable_buffers(
        raw_descs in prop::collection::vec(any::<(u64, u32, u16, u16)>(), QSIZE as usize),
        raw_headers in prop::collection::vec(any::<(u64, u32, u64)>(), 0..6),
        raw_heads in prop::collection::vec(any::<u16>(), 0..20),
        knobs in any::<(u8, bool, u8, u16)>(),
    ) {
        check(IoEngine::Async, &raw_descs, raw_headers, &raw_heads, knobs)?;
    }
}
