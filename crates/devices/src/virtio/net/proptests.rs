//! Property test: random RX and TX descriptor tables, available rings and tap frames against
//! virtio-net (on the fake backend).
//!
//! Each case lays out a 16-entry RX queue at 0 and a 16-entry TX queue at 0x800 in a 16 KiB
//! guest memory, fills both descriptor tables with random descriptors (addresses mostly in the
//! data area, sometimes anywhere; random lengths, `NEXT`/`WRITE` flags and `next` indices, so
//! loops, over-long chains and wrong directions all occur), publishes random heads (some out of
//! range, sometimes an impossible `avail.idx`), queues random tap frames, negotiates
//! `MRG_RXBUF` or not, and runs TX, RX and tap events. The properties: no panic; no byte changes
//! outside device-writable descriptor buffers and the two used rings; the used indices never
//! pass the number of published heads, and every used RX element names a descriptor inside the
//! queue; every frame written to the tap carries a virtio header and is at most
//! `MAX_BUFFER_SIZE` bytes.
//!
//! `INDIRECT` is never set (the oracle would have to follow tables in the data area the device
//! rewrites). Cases: 3 000 by default, `SQUIB_PROPTEST_CASES` overrides (≥ 100 000 for a long
//! run).

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

use super::tests::{FakeBackend, config, frame};
use super::*;
use crate::rate_limiter::RateLimiter;
use crate::virtio::VirtioDevice;
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::test_utils::{
    F_NEXT, F_WRITE, RecordingInterrupt, TestQueue, changed_bytes, guest_memory,
};

const QSIZE: u16 = 16;
const DATA_START: u64 = 0x1000;
const MEM: usize = 0x4000;

fn cases() -> u32 {
    std::env::var("SQUIB_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// A raw descriptor (address, length, flags, next) shaped from random integers.
fn shape((a, l, f, n): (u64, u32, u16, u16)) -> (u64, u32, u16, u16) {
    let addr = match a % 16 {
        0 => a,
        _ => DATA_START + (a >> 8) % (MEM as u64 - DATA_START),
    };
    let len = match l % 8 {
        0 => l,
        1 => 12,
        2 => l % 16,
        _ => (l >> 4) % 0x800,
    };
    let next = if n % 9 == 0 { n } else { n % QSIZE };
    (addr, len, f & (F_NEXT | F_WRITE), next)
}

fn table() -> impl Strategy<Value = Vec<(u64, u32, u16, u16)>> {
    proptest::collection::vec(any::<(u64, u32, u16, u16)>(), QSIZE as usize)
        .prop_map(|v| v.into_iter().map(shape).collect())
}

fn heads() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(0u16..QSIZE + 3, 0..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn prop_net_writes_only_into_writable_buffers(
        rx_descs in table(),
        tx_descs in table(),
        rx_heads in heads(),
        tx_heads in heads(),
        frames in proptest::collection::vec(0usize..5000, 0..6),
        mergeable in any::<bool>(),
        broken in 0u8..8,
    ) {
        let mem = guest_memory(MEM);
        let rxq = TestQueue::new(&mem, 0, QSIZE);
        let txq = TestQueue::new(&mem, 0x800, QSIZE);
        for (q, descs, hs) in [(&rxq, &rx_descs, &rx_heads), (&txq, &tx_descs, &tx_heads)] {
            for (i, &(a, l, f, n)) in descs.iter().enumerate() {
                q.write_desc(u16::try_from(i).unwrap(), a, l, f, n);
            }
            for &h in hs {
                q.publish(h);
            }
        }
        if broken == 0 {
            rxq.set_avail_idx(u16::try_from(rx_heads.len()).unwrap() + QSIZE + 1);
        } else if broken == 1 {
            txq.set_avail_idx(u16::try_from(tx_heads.len()).unwrap() + QSIZE + 1);
        }
        let mut before = vec![0u8; MEM];
        mem.read_slice(&mut before, GuestAddress(0)).unwrap();

        let (backend, fake) = FakeBackend::new(true);
        for (i, &len) in frames.iter().enumerate() {
            fake.lock().unwrap().incoming.push_back(frame(len.max(12), u8::try_from(i).unwrap()));
        }
        let mut dev = Net::with_backend(
            config(RateLimiter::default(), RateLimiter::default()),
            Box::new(backend),
        ).unwrap();
        let mut acked = bit(VERSION_1);
        if mergeable {
            acked |= bit(features::MRG_RXBUF);
        }
        dev.ack_features(acked);
        dev.activate(mem.clone(), RecordingInterrupt::new(), vec![rxq.create_queue(), txq.create_queue()]).unwrap();
        dev.process_queue_event(TX_INDEX);
        dev.process_host_event(TAP_TOKEN, event_manager::EventSet::IN);
        dev.process_queue_event(RX_INDEX);

        let mut after = vec![0u8; MEM];
        mem.read_slice(&mut after, GuestAddress(0)).unwrap();
        let writable = |addr: u64| {
            rx_descs.iter().chain(tx_descs.iter()).any(|&(a, l, f, _)| {
                f & F_WRITE != 0 && addr >= a && addr - a < u64::from(l)
            })
        };
        for addr in changed_bytes(&before, &after) {
            let ring = (rxq.used_addr().0..rxq.end()).contains(&addr)
                || (txq.used_addr().0..txq.end()).contains(&addr);
            prop_assert!(ring || writable(addr), "write outside writable buffers at {addr:#x}");
        }
        prop_assert!(rxq.used_idx() <= u16::try_from(rx_heads.len()).unwrap());
        prop_assert!(txq.used_idx() <= u16::try_from(tx_heads.len()).unwrap());
        for w in &fake.lock().unwrap().written {
            prop_assert!(w.len() >= VNET_HDR_LEN && w.len() <= MAX_BUFFER_SIZE);
        }
        for i in 0..rxq.used_idx() {
            prop_assert!(rxq.used_elem(i).0 < u32::from(QSIZE));
        }
    }
}
