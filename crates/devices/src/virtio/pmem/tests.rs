//! virtio-pmem tests: the configuration space, FLUSH requests reaching the file, Firecracker's
//! request-shape rules, the rate limiter, the read-only window, persistence, and a property test
//! over random descriptor tables (3 000 cases; `SQUIB_PROPTEST_CASES` or `PROPTEST_CASES`
//! overrides).

use std::io::Write;
use std::path::PathBuf;

use proptest::prelude::*;
use squib_core::GuestMemoryMmap;
use squib_sys::pmem::PmemMapping;
use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};

use super::*;
use crate::persist::Persist;
use crate::rate_limiter::TokenBucket;
use crate::virtio::test_utils::{
    F_NEXT, F_WRITE, RecordingInterrupt, TestQueue, changed_bytes, guest_memory, rd, wr,
};

const MEM: usize = 0x1_0000;
const DATA: u64 = 0x4000;
const WINDOW: u64 = 512 << 30;

fn backing(tag: &str, len: usize) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "squib-pmem-test-{}-{tag}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(&vec![0x11u8; len]).unwrap();
    p
}

struct H {
    mem: GuestMemoryMmap,
    q: TestQueue,
    dev: Pmem,
    path: PathBuf,
}

impl H {
    fn new(tag: &str, read_only: bool, limiter: RateLimiter) -> Self {
        let path = backing(tag, 8192);
        let mapping = PmemMapping::open(&path, read_only, GuestAddress(WINDOW)).unwrap();
        let mut dev = Pmem::new(
            PmemDeviceConfig {
                id: "pmem0".into(),
                path_on_host: path.display().to_string(),
                root_device: true,
            },
            mapping,
            limiter,
        )
        .unwrap();
        let mem = guest_memory(MEM);
        let q = TestQueue::new(&mem, 0, 16);
        dev.activate(
            mem.clone(),
            RecordingInterrupt::new(),
            vec![q.create_queue()],
        )
        .unwrap();
        Self { mem, q, dev, path }
    }

    fn kick(&mut self) {
        self.dev.queue_events()[0].write(1).unwrap();
        self.dev.process_queue_event(0);
    }

    fn flush_chain(&mut self, req: u64, status: u64) {
        self.mem
            .write_obj(REQ_TYPE_FLUSH, GuestAddress(req))
            .unwrap();
        self.mem
            .write_obj(0x7777_7777u32, GuestAddress(status))
            .unwrap();
        self.q.add_chain(&[rd(req, 4), wr(status, 4)]);
    }

    fn status(&self, addr: u64) -> i32 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }
}

impl Drop for H {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn test_identity_and_config_space() {
    let h = H::new("id", false, RateLimiter::default());
    assert_eq!(h.dev.device_type(), 27);
    assert_eq!(h.dev.queue_max_sizes(), &[256]);
    assert_eq!(h.dev.avail_features(), 1 << 32);
    let mut b = [0u8; 16];
    h.dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), WINDOW);
    assert_eq!(u64::from_le_bytes(b[8..].try_into().unwrap()), 2 << 20);
    let mut hi = [0u8; 4];
    h.dev.read_config(12, &mut hi);
    assert_eq!(u32::from_le_bytes(hi), 0, "upper half of the size");
    let mut out = [0xaau8; 8];
    h.dev.read_config(12, &mut out);
    assert_eq!(out, [0xaa; 8], "straddling read copies nothing");
    assert_eq!(h.dev.metrics().cfg_fails.count(), 1);
}

#[test]
fn test_flush_writes_the_guest_changes_to_the_file() {
    let mut h = H::new("flush", false, RateLimiter::default());
    h.dev
        .mapping()
        .region()
        .write_slice(b"pmem!", MemoryRegionAddress(4000))
        .unwrap();
    h.flush_chain(DATA, DATA + 0x100);
    h.flush_chain(DATA + 0x10, DATA + 0x110);
    h.kick();
    assert_eq!(h.q.used_idx(), 2);
    assert_eq!(h.q.used_elem(0).1, 4);
    assert_eq!((h.status(DATA + 0x100), h.status(DATA + 0x110)), (0, 0));
    let file = std::fs::read(&h.path).unwrap();
    assert_eq!(&file[4000..4005], b"pmem!");
    assert_eq!(file.len(), 8192);
    h.dev.write_config(0, &[0u8]);
    assert_eq!(h.dev.metrics().cfg_fails.count(), 1);
    assert_eq!(h.dev.metrics().queue_event_count.count(), 1);
}

#[test]
fn test_malformed_requests_are_returned_empty_and_counted() {
    let mut h = H::new("bad", false, RateLimiter::default());
    let st = DATA + 0x200;
    h.mem.write_obj(1u32, GuestAddress(DATA)).unwrap(); // unknown type
    h.mem.write_obj(0u32, GuestAddress(DATA + 0x10)).unwrap();
    h.mem.write_obj(0x5555_5555u32, GuestAddress(st)).unwrap();
    let chains: [&[_]; 6] = [
        &[rd(DATA, 4), wr(st, 4)],                            // type 1
        &[rd(DATA + 0x10, 8), wr(st, 4)],                     // head of 8 bytes
        &[rd(DATA + 0x10, 4)],                                // no status
        &[rd(DATA + 0x10, 4), wr(st, 8)],                     // status of 8 bytes
        &[wr(DATA + 0x10, 4), wr(st, 4)],                     // writable head
        &[rd(DATA + 0x10, 2), rd(DATA + 0x12, 2), wr(st, 4)], // split head
    ];
    for c in chains {
        h.q.add_chain(c);
    }
    h.kick();
    assert_eq!(h.q.used_idx(), 6);
    for i in 0..6 {
        assert_eq!(h.q.used_elem(i).1, 0, "chain {i}");
    }
    assert_eq!(h.status(st), 0x5555_5555, "no status written");
    assert_eq!(h.dev.metrics().event_fails.count(), 6);
}

#[test]
fn test_rate_limiter_defers_the_next_batch() {
    let ops = TokenBucket::new(1, 0, 1000);
    let mut h = H::new("rl", false, RateLimiter::new(None, ops));
    h.flush_chain(DATA, DATA + 0x100);
    h.kick();
    assert_eq!(h.q.used_idx(), 1);
    h.flush_chain(DATA, DATA + 0x100);
    h.kick();
    assert_eq!(h.q.used_idx(), 1, "throttled");
    assert!(h.dev.metrics().rate_limiter_throttled_events.count() >= 1);
    assert_eq!(h.dev.timer_events().len(), 1);
    h.dev
        .update_rate_limiter(BucketUpdate::None, BucketUpdate::Disabled);
    h.dev.process_timer(0);
    assert_eq!(h.q.used_idx(), 2);
    assert_eq!(h.dev.metrics().rate_limiter_event_count.count(), 1);
}

#[test]
fn test_read_only_window_drops_writes_and_flush_succeeds() {
    let mut h = H::new("ro", true, RateLimiter::default());
    let mut win = h.dev.read_only_window();
    win.write(0x10, &[1, 2, 3, 4]);
    let mut b = [9u8; 2];
    win.read(0, &mut b);
    assert_eq!(b, [0, 0]);
    assert_eq!(h.dev.metrics().read_only_writes.count(), 1);
    h.flush_chain(DATA, DATA + 0x100);
    h.kick();
    assert_eq!(h.status(DATA + 0x100), 0);
    assert!(std::fs::read(&h.path).unwrap().iter().all(|&x| x == 0x11));
}

#[test]
fn test_persist_round_trip_and_mismatches() {
    let h = H::new(
        "persist",
        true,
        RateLimiter::new(None, TokenBucket::new(5, 0, 100)),
    );
    let state = h.dev.save();
    assert_eq!(
        (
            state.guest_addr,
            state.size,
            state.read_only,
            state.root_device
        ),
        (WINDOW, 2 << 20, true, true)
    );
    let json = serde_json::to_string(&state).unwrap();
    let back: PmemState = serde_json::from_str(&json).unwrap();
    let mapping = PmemMapping::open(&h.path, true, GuestAddress(WINDOW)).unwrap();
    let dev = Pmem::restore(mapping, &back).unwrap();
    assert_eq!(dev.save(), state);
    let moved = PmemMapping::open(&h.path, true, GuestAddress(WINDOW + (2 << 20))).unwrap();
    assert!(matches!(
        Pmem::restore(moved, &back),
        Err(PmemRestoreError::AddressMismatch { .. })
    ));
    let rw = PmemMapping::open(&h.path, false, GuestAddress(WINDOW)).unwrap();
    assert!(matches!(
        Pmem::restore(rw, &back),
        Err(PmemRestoreError::ModeMismatch(true))
    ));
    let bigger = PmemState {
        size: 4 << 20,
        ..back
    };
    let mapping = PmemMapping::open(&h.path, true, GuestAddress(WINDOW)).unwrap();
    assert_eq!(
        Pmem::restore(mapping, &bigger).unwrap_err().to_string(),
        "Restored pmem size 4194304 does not match backing file mapping size 2097152"
    );
}

fn cases() -> u32 {
    ["SQUIB_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(3_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random descriptor tables: no panic, nothing written outside the used ring and the
    /// 4-byte device-writable descriptors, used entries in range, never more than published.
    #[test]
    fn prop_pmem_requests_never_write_outside_status_buffers(
        descs in proptest::collection::vec(any::<(u64, u32, u16, u16)>(), 1..10),
        heads in proptest::collection::vec(any::<u16>(), 0..8),
        words in proptest::collection::vec(any::<u32>(), 16),
    ) {
        let mut h = H::new("prop", false, RateLimiter::default());
        for (i, w) in words.iter().enumerate() {
            let v = if w % 3 == 0 { 0 } else { *w };
            h.mem.write_obj(v, GuestAddress(DATA + 4 * i as u64)).unwrap();
        }
        let mut writable = Vec::new();
        for (i, &(a, l, f, n)) in descs.iter().enumerate() {
            let addr = if a % 8 == 0 { a } else { DATA + (a >> 8) % 0x100 };
            let len = if l % 4 == 0 { l } else { [4, 4, 8, 2][(l as usize >> 4) % 4] };
            let flags = f & (F_NEXT | F_WRITE);
            let next = if n % 7 == 0 { n } else { n % 16 };
            h.q.write_desc(u16::try_from(i).unwrap(), addr, len, flags, next);
            if flags & F_WRITE != 0 && len == 4 {
                writable.push(addr);
            }
        }
        let mut published = 0u16;
        for head in &heads {
            h.q.publish(if head % 9 == 0 { *head } else { head % 16 });
            published += 1;
        }
        let before = { let mut v = vec![0u8; MEM]; h.mem.read_slice(&mut v, GuestAddress(0)).unwrap(); v };
        h.kick();
        let after = { let mut v = vec![0u8; MEM]; h.mem.read_slice(&mut v, GuestAddress(0)).unwrap(); v };
        let used_start = h.q.used_addr().0;
        for addr in changed_bytes(&before, &after) {
            let in_used = addr >= used_start && addr < h.q.end();
            let in_status = writable.iter().any(|&w| addr >= w && addr < w + 4);
            prop_assert!(in_used || in_status, "byte {:#x} changed", addr);
        }
        let used = h.q.used_idx();
        prop_assert!(used <= published);
        for i in 0..used {
            prop_assert!(h.q.used_elem(i).0 < 16);
        }
    }
}
