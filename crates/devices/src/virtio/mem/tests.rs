//! virtio-mem tests: a mock driver plugs and unplugs blocks; slots are mapped exactly while
//! they hold plugged blocks; Firecracker's request rules; unplugged memory is released;
//! persistence; and a property test over random request sequences (2 000 cases;
//! `SQUIB_PROPTEST_CASES` or `PROPTEST_CASES` overrides).

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use squib_config::schemas::hotplug_memory::HotplugMemoryStatus;
use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::request::{REQ_PLUG, REQ_STATE, REQ_UNPLUG, REQ_UNPLUG_ALL, encode};
use super::*;
use crate::persist::Persist;
use crate::virtio::test_utils::{RecordingInterrupt, TestQueue, rd, wr};

const REGION: u64 = 0x100_0000;
const BLOCK: u64 = 0x1_0000;
const SLOT: u64 = 0x10_0000;
const SIZE: u64 = 4 * SLOT;
const REQ: u64 = 0x4000;
const RESP: u64 = 0x5000;

#[derive(Debug, Default)]
struct Mapper {
    calls: Mutex<Vec<(usize, bool)>>,
    fail: Mutex<bool>,
}

impl SlotMapper for Mapper {
    fn set_slot(&self, index: usize, mapped: bool) -> Result<(), String> {
        if *self.fail.lock().unwrap() {
            return Err("no memslot".into());
        }
        self.calls.lock().unwrap().push((index, mapped));
        Ok(())
    }
}

fn geometry() -> MemGeometry {
    MemGeometry {
        addr: REGION,
        region_size: SIZE,
        block_size: BLOCK,
        slot_size: SLOT,
    }
}

struct H {
    mem: GuestMemoryMmap,
    q: TestQueue,
    dev: VirtioMem,
    mapper: Arc<Mapper>,
    irq: Arc<RecordingInterrupt>,
    seen: Arc<Mutex<Vec<HotplugMemoryStatus>>>,
}

impl H {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(REGION), usize::try_from(SIZE).unwrap()),
        ])
        .unwrap();
        let mapper = Arc::new(Mapper::default());
        let mut dev = VirtioMem::new(geometry(), mapper.clone()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        dev.set_status_sink(Arc::new(move |s| s2.lock().unwrap().push(s)));
        dev.ack_features(dev.avail_features());
        let q = TestQueue::new(&mem, 0, 16);
        let irq = RecordingInterrupt::new();
        dev.activate(mem.clone(), irq.clone(), vec![q.create_queue()])
            .unwrap();
        Self {
            mem,
            q,
            dev,
            mapper,
            irq,
            seen,
        }
    }

    /// Sends one request and returns (used length, response type, state).
    fn req(&mut self, kind: u16, addr: u64, nb: u16) -> (u32, u16, u16) {
        self.mem
            .write_slice(&encode(kind, addr, nb), GuestAddress(REQ))
            .unwrap();
        self.mem
            .write_slice(&[0xff; 10], GuestAddress(RESP))
            .unwrap();
        let before = self.q.used_idx();
        self.q.add_chain(&[rd(REQ, 24), wr(RESP, 10)]);
        self.dev.queue_events()[0].write(1).unwrap();
        self.dev.process_queue_event(0);
        assert_eq!(self.q.used_idx(), before.wrapping_add(1));
        let (_, len) = self.q.used_elem(before);
        let t: u16 = self.mem.read_obj(GuestAddress(RESP)).unwrap();
        let s: u16 = self.mem.read_obj(GuestAddress(RESP + 8)).unwrap();
        (len, t, s)
    }

    fn plugged_mib(&self) -> u64 {
        self.dev.status().plugged_size_mib
    }
}

const ACK: (u32, u16) = (10, 0);
const ERR: (u32, u16) = (10, 3);

fn ty((len, t, _): (u32, u16, u16)) -> (u32, u16) {
    (len, t)
}

#[test]
fn test_identity_config_and_activation_rule() {
    let mapper: Arc<dyn SlotMapper> = Arc::new(Mapper::default());
    let mut dev = VirtioMem::new(geometry(), Arc::clone(&mapper)).unwrap();
    assert_eq!(dev.device_type(), 24);
    assert_eq!(dev.avail_features(), (1 << 32) | (1 << 1));
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
    let q = TestQueue::new(&mem, 0, 16);
    dev.ack_features(1 << 32);
    let err = dev
        .activate(
            mem.clone(),
            RecordingInterrupt::new(),
            vec![q.create_queue()],
        )
        .unwrap_err();
    assert!(err.to_string().contains("UNPLUGGED_INACCESSIBLE"), "{err}");
    assert_eq!(dev.metrics().activate_fails.count(), 1);
    let mut cfg = [0u8; 56];
    dev.read_config(0, &mut cfg);
    let word = |at: usize| u64::from_le_bytes(cfg[at..at + 8].try_into().unwrap());
    assert_eq!(
        (word(0), word(16), word(24), word(32), word(40), word(48)),
        (BLOCK, REGION, SIZE, 0, 0, 0)
    );
    for bad in [
        MemGeometry {
            block_size: 3 << 12,
            ..geometry()
        },
        MemGeometry {
            slot_size: BLOCK / 2,
            ..geometry()
        },
        MemGeometry {
            region_size: SLOT + 1,
            ..geometry()
        },
        MemGeometry {
            addr: REGION + 1,
            ..geometry()
        },
    ] {
        assert!(VirtioMem::new(bad, Arc::clone(&mapper)).is_err(), "{bad:?}");
    }
}

#[test]
fn test_requested_size_rules() {
    let mut dev = VirtioMem::new(geometry(), Arc::new(Mapper::default())).unwrap();
    assert_eq!(
        dev.update_requested_size(1),
        Err(VirtioMemError::DeviceNotActive)
    );
    let mut h = H::new();
    assert_eq!(
        h.dev.update_requested_size(5),
        Err(VirtioMemError::InvalidSize(5 << 20))
    );
    assert_eq!(
        VirtioMemError::InvalidSize(5 << 20).to_string(),
        "Size 5242880 is invalid: it must be a multiple of block size and less than the total size"
    );
    h.dev.update_requested_size(2).unwrap();
    assert_eq!(h.irq.kinds().last(), Some(&InterruptKind::Config));
    assert_eq!(h.dev.config_generation(), 1);
    let mut b = [0u8; 8];
    h.dev.read_config(32, &mut b);
    assert_eq!(
        u64::from_le_bytes(b),
        2 * SLOT,
        "usable grows to whole slots"
    );
    assert_eq!(h.seen.lock().unwrap().last().unwrap().requested_size_mib, 2);
}

#[test]
fn test_plug_unplug_map_slots_and_release_memory() {
    let mut h = H::new();
    h.dev.update_requested_size(2).unwrap();
    // 20 blocks = 1.25 MiB: slots 0 and 1 mapped.
    assert_eq!(ty(h.req(REQ_PLUG, REGION, 20)), ACK);
    assert_eq!(h.plugged_mib(), 1);
    assert_eq!(*h.mapper.calls.lock().unwrap(), vec![(0, true), (1, true)]);
    assert!(h.dev.slot_mapped(0) && h.dev.slot_mapped(1) && !h.dev.slot_mapped(2));
    // Over the requested size, already plugged, outside the usable region, misaligned, empty.
    assert_eq!(ty(h.req(REQ_PLUG, REGION + 20 * BLOCK, 13)), ERR);
    assert_eq!(ty(h.req(REQ_PLUG, REGION, 1)), ERR);
    assert_eq!(ty(h.req(REQ_PLUG, REGION + 2 * SLOT, 1)), ERR);
    assert_eq!(ty(h.req(REQ_PLUG, REGION + 1, 1)), ERR);
    assert_eq!(ty(h.req(REQ_PLUG, REGION + 20 * BLOCK, 0)), ERR);
    assert_eq!(ty(h.req(REQ_PLUG, u64::MAX - BLOCK + 1, 2)), ERR);
    assert_eq!(h.dev.metrics().plug_fails.count(), 6);
    // State.
    assert_eq!(h.req(REQ_STATE, REGION, 20), (10, 0, 0));
    assert_eq!(h.req(REQ_STATE, REGION + 16 * BLOCK, 8), (10, 0, 2));
    assert_eq!(h.req(REQ_STATE, REGION + 20 * BLOCK, 4), (10, 0, 1));
    // Unplug the blocks of slot 1: their memory is released and the slot unmapped.
    let s1 = REGION + SLOT;
    h.mem
        .write_slice(&[0xab; 0x1000], GuestAddress(s1))
        .unwrap();
    h.mem
        .write_slice(&[0xcd; 0x1000], GuestAddress(REGION))
        .unwrap();
    assert_eq!(ty(h.req(REQ_UNPLUG, s1, 4)), ACK);
    assert_eq!(h.mapper.calls.lock().unwrap().last(), Some(&(1, false)));
    let b: u8 = h.mem.read_obj(GuestAddress(s1)).unwrap();
    assert_eq!(b, 0, "released");
    let b: u8 = h.mem.read_obj(GuestAddress(REGION)).unwrap();
    assert_eq!(b, 0xcd, "still plugged");
    assert_eq!(ty(h.req(REQ_UNPLUG, s1, 1)), ERR, "not plugged");
    assert_eq!(h.plugged_mib(), 1);
    // Unplug all: everything unmapped, usable region back to 0.
    assert_eq!(ty(h.req(REQ_UNPLUG_ALL, 0, 0)), ACK);
    assert_eq!(h.dev.plugged_size(), 0);
    assert!(!h.dev.slot_mapped(0));
    let mut u = [0u8; 8];
    h.dev.read_config(32, &mut u);
    assert_eq!(u64::from_le_bytes(u), 0);
    assert_eq!(
        ty(h.req(REQ_PLUG, REGION, 1)),
        ERR,
        "nothing usable until requested"
    );
    assert_eq!(ty(h.req(9, REGION, 1)), ERR, "unknown type");
    let last = h.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.plugged_size_mib, last.requested_size_mib), (0, 2));
}

#[test]
fn test_mapping_failure_keeps_the_state() {
    let mut h = H::new();
    h.dev.update_requested_size(4).unwrap();
    *h.mapper.fail.lock().unwrap() = true;
    assert_eq!(ty(h.req(REQ_PLUG, REGION, 16)), ERR);
    assert_eq!(h.dev.plugged_size(), 0);
    assert!(!h.dev.slot_mapped(0));
}

#[test]
fn test_malformed_chains_are_returned_empty() {
    let mut h = H::new();
    h.dev.update_requested_size(1).unwrap();
    h.mem
        .write_slice(&encode(REQ_PLUG, REGION, 1), GuestAddress(REQ))
        .unwrap();
    for chain in [
        vec![rd(REQ, 23), wr(RESP, 10)],
        vec![rd(REQ, 24), wr(RESP, 9)],
        vec![rd(REQ, 24)],
        vec![wr(REQ, 24), wr(RESP, 10)],
    ] {
        h.q.add_chain(&chain);
    }
    h.q.add_chain(&[rd(REQ, 10), rd(REQ + 10, 14), wr(RESP, 16)]);
    h.dev.queue_events()[0].write(1).unwrap();
    h.dev.process_queue_event(0);
    assert_eq!(h.q.used_idx(), 5);
    for i in 0..4 {
        assert_eq!(h.q.used_elem(i).1, 0);
    }
    assert_eq!(
        h.q.used_elem(4).1,
        10,
        "a request split across descriptors is fine"
    );
    assert_eq!(h.dev.plugged_size(), BLOCK);
}

#[test]
fn test_persist_round_trip_maps_plugged_slots() {
    let mut h = H::new();
    h.dev.update_requested_size(3).unwrap();
    assert_eq!(ty(h.req(REQ_PLUG, REGION + SLOT, 16)), ACK);
    assert_eq!(ty(h.req(REQ_PLUG, REGION + 3 * SLOT - BLOCK, 1)), ACK);
    let state = h.dev.save();
    let json = serde_json::to_string(&state).unwrap();
    let back: VirtioMemState = serde_json::from_str(&json).unwrap();
    let mapper = Arc::new(Mapper::default());
    let dev = VirtioMem::restore(mapper.clone(), &back).unwrap();
    assert_eq!(dev.save(), state);
    assert_eq!(*mapper.calls.lock().unwrap(), vec![(1, true), (2, true)]);
    assert_eq!(dev.status(), h.dev.status());
    let bad = VirtioMemState {
        plugged_blocks: vec![],
        ..back.clone()
    };
    assert!(VirtioMem::restore(mapper.clone(), &bad).is_err());
    let bad = VirtioMemState {
        usable_region_size: SIZE + SLOT,
        ..back
    };
    assert!(VirtioMem::restore(mapper, &bad).is_err());
}

fn cases() -> u32 {
    ["SQUIB_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(2_000)
}

#[derive(Debug, Clone)]
enum Op {
    Request(u16, u64, u16),
    Resize(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..5, 0u64..70, 0u16..40, any::<u64>()).prop_map(|(k, b, n, raw)| {
            let addr = if raw % 13 == 0 { raw } else { REGION + b * BLOCK };
            Op::Request(k, addr, n)
        }),
        1 => (0u64..6).prop_map(Op::Resize),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any request sequence: every response is ACK or ERROR, a slot is mapped exactly while
    /// it holds a plugged block, plugs never push plugged_size past the requested size at
    /// the time, and the status agrees with the blocks.
    #[test]
    fn prop_slots_follow_plugged_blocks(ops in proptest::collection::vec(op(), 1..40)) {
        let mut h = H::new();
        for op in ops {
            match op {
                Op::Resize(mib) => { let _ = h.dev.update_requested_size(mib); }
                Op::Request(k, addr, n) => {
                    let requested = h.dev.requested_size;
                    let (len, t, _) = h.req(k, addr, n);
                    prop_assert_eq!(len, 10);
                    prop_assert!(t == 0 || t == 3);
                    if k == REQ_PLUG && t == 0 {
                        prop_assert!(h.dev.plugged_size() <= requested);
                    }
                }
            }
            let blocks = h.dev.plugged_blocks().to_vec();
            for slot in 0..4usize {
                let any = blocks[slot * 16..(slot + 1) * 16].iter().any(|&p| p);
                prop_assert_eq!(h.dev.slot_mapped(slot), any, "slot {}", slot);
            }
            let n = blocks.iter().filter(|&&p| p).count() as u64;
            prop_assert_eq!(h.dev.plugged_size(), n * BLOCK);
        }
    }
}
