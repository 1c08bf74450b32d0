//! Property test: arbitrary descriptor tables, chains and packet headers on the TX and RX
//! queues never panic the device and never make it write outside device-writable RX buffers
//! and the used rings (TX chains are only ever read).
//!
//! Each case lays out a 16-entry RX queue and TX queue in the first 2 KiB of 32 KiB of guest
//! memory, fills both descriptor tables with random descriptors (addresses mostly in the data
//! area, sometimes anywhere; random lengths and `NEXT`/`WRITE` flags, so loops, wrong
//! directions and short chains occur), writes random vsock headers (mostly addressed to the
//! host, random ops, lengths around 0, small, 64 KiB and beyond) at random data addresses,
//! publishes random heads and runs the TX then the RX queue. Guest connection requests find no
//! host listener and are answered with RST, so the RX path is exercised too. One device per test
//! thread is reused (reset and reactivated per case) to keep cases cheap. 3 000 cases by default;
//! `SQUIB_PROPTEST_CASES` (or `PROPTEST_CASES`) overrides (≥ 100 000 for a long run).

use std::cell::RefCell;

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::packet::{HDR_SIZE, Header};
use super::*;
use crate::virtio::VirtioDevice;
use crate::virtio::test_utils::{
    F_NEXT, F_WRITE, RecordingInterrupt, TestQueue, changed_bytes, guest_memory,
};

const QSIZE: u16 = 16;
const DATA: u64 = 0x800;
const MEM: usize = 0x8000;
const MEM_END: u64 = MEM as u64;

thread_local! {
    static DEV: RefCell<Option<(TempDir, Vsock)>> = const { RefCell::new(None) };
}

fn shape_desc((a, l, f, n): (u64, u32, u16, u16)) -> (u64, u32, u16, u16) {
    let addr = match a % 16 {
        0 => a,
        1 => MEM_END - 0x40 + (a >> 8) % 0x80,
        _ => DATA + (a >> 8) % (MEM_END - DATA),
    };
    let len = match l % 12 {
        0..=3 => 44,
        4 => 0,
        5 => 43,
        6..=9 => 44 + (l >> 8) % 0x200,
        10 => (l >> 8) % 0x3000,
        _ => l,
    };
    let next = if n % 9 == 0 { n } else { n % QSIZE };
    (addr, len, f & (F_NEXT | F_WRITE), next)
}

fn shape_header((at, cid, op, len, ports): (u64, u8, u16, u32, u32)) -> (u64, Header) {
    let hdr = Header {
        src_cid: 3,
        dst_cid: if cid % 8 == 0 { u64::from(cid) } else { 2 },
        src_port: ports & 0xff,
        dst_port: (ports >> 8) & 0x3,
        len: match len % 6 {
            0 => 0,
            1 => len % 64,
            2 => MAX_PKT_BUF_SIZE,
            3 => MAX_PKT_BUF_SIZE + 1,
            4 => len % 0x400,
            _ => len,
        },
        type_: if cid % 16 == 1 { 2 } else { 1 },
        op: op % 9,
        flags: ports >> 24,
        buf_alloc: ports >> 4,
        fwd_cnt: 0,
    };
    (DATA + (at % (MEM_END - DATA - HDR_SIZE as u64)), hdr)
}

fn desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (any::<u64>(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(shape_desc)
}

fn header() -> impl Strategy<Value = (u64, Header)> {
    (
        any::<u64>(),
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(shape_header)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(3_000)))]

    #[test]
    fn prop_vsock_never_writes_outside_writable_rx_buffers(
        tx_descs in proptest::collection::vec(desc(), QSIZE as usize),
        rx_descs in proptest::collection::vec(desc(), QSIZE as usize),
        headers in proptest::collection::vec(header(), 0..8),
        tx_heads in proptest::collection::vec(0u16..QSIZE + 2, 0..20),
        rx_heads in proptest::collection::vec(0u16..QSIZE + 2, 0..20),
        broken in 0u8..8,
    ) {
        let mem = guest_memory(MEM);
        let rxq = TestQueue::new(&mem, 0, QSIZE);
        let txq = TestQueue::new(&mem, 0x200, QSIZE);
        let evq = TestQueue::new(&mem, 0x400, 4);
        for (i, &(a, l, f, n)) in tx_descs.iter().enumerate() {
            txq.write_desc(u16::try_from(i).unwrap(), a, l, f, n);
        }
        for (i, &(a, l, f, n)) in rx_descs.iter().enumerate() {
            rxq.write_desc(u16::try_from(i).unwrap(), a, l, f, n);
        }
        for (at, h) in &headers {
            mem.write_slice(&h.to_bytes(), GuestAddress(*at)).unwrap();
        }
        for &h in &tx_heads {
            txq.publish(h);
        }
        for &h in &rx_heads {
            rxq.publish(h);
        }
        if broken == 0 {
            txq.set_avail_idx(u16::try_from(tx_heads.len()).unwrap() + QSIZE + 1);
        }
        let mut before = vec![0u8; MEM];
        mem.read_slice(&mut before, GuestAddress(0)).unwrap();

        DEV.with(|cell| {
            let mut slot = cell.borrow_mut();
            let (_, dev) = slot.get_or_insert_with(|| {
                let dir = TempDir::new_with_prefix("/tmp/squib-vsock-prop-").unwrap();
                let uds = dir.as_path().join("v.sock");
                let dev = Vsock::new(&VsockConfig { guest_cid: 3, uds_path: uds }).unwrap();
                (dir, dev)
            });
            dev.reset();
            dev.activate(
                mem.clone(),
                RecordingInterrupt::new(),
                vec![rxq.create_queue(), txq.create_queue(), evq.create_queue()],
            )
            .unwrap();
            dev.process_queue_event(TXQ_INDEX);
            dev.process_queue_event(RXQ_INDEX);
            dev.process_queue_event(EVQ_INDEX);
        });

        let mut after = vec![0u8; MEM];
        mem.read_slice(&mut after, GuestAddress(0)).unwrap();
        for addr in changed_bytes(&before, &after) {
            let allowed = (rxq.used_addr().0..rxq.end()).contains(&addr)
                || (txq.used_addr().0..txq.end()).contains(&addr)
                || rx_descs.iter().any(|&(a, l, f, _)| {
                    f & F_WRITE != 0 && addr >= a && addr - a < u64::from(l)
                });
            prop_assert!(allowed, "write outside writable RX buffers at {addr:#x}");
        }
        prop_assert!(txq.used_idx() <= u16::try_from(tx_heads.len()).unwrap());
        prop_assert!(rxq.used_idx() <= u16::try_from(rx_heads.len()).unwrap());
    }
}
