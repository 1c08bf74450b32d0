//! virtio-net with the real MMDS network stack (`squib-mmds`) as its frame interceptor, driven
//! by the real event loop (`event-manager` + [`VirtioSubscriber`]) on the real clock: the
//! interceptor timer makes MMDS retransmit a response segment the guest never acknowledged,
//! with no further guest traffic.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::EventManager;
use squib_mmds::wire::{
    ACK, ETH_HDR_LEN, ETHERTYPE_IPV4, IPV4_HDR_LEN, PROTOCOL_TCP, PSH, SYN, TcpOut, parse_eth,
    parse_ipv4, parse_tcp, write_eth_header, write_ipv4_header, write_tcp,
};
use squib_mmds::{DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR, Mmds, MmdsNetworkStack, MmdsVersion};
use vm_memory::{Bytes, GuestAddress};

use super::tests::{FakeBackend, MAC, activate_in_event_manager, config};
use super::*;
use crate::rate_limiter::RateLimiter;
use crate::virtio::test_utils::{TestQueue, guest_memory, rd, wr};
use crate::virtio::{VirtioDevice, VirtioSubscriber};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
const GUEST_PORT: u16 = 40_000;
const TX_BUF: u64 = 0x2_0000;
const RX_BUF: u64 = 0x4_0000;

/// The stack as a [`FrameInterceptor`] (what the VMM's `SharedStack` does).
struct Stack(Arc<Mutex<MmdsNetworkStack>>);

impl FrameInterceptor for Stack {
    fn detour_frame(&mut self, frame: &[u8]) -> bool {
        self.0.lock().unwrap().detour_frame(frame)
    }

    fn write_next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.0.lock().unwrap().write_next_frame(buf)
    }

    fn has_pending_frames(&self) -> bool {
        self.0.lock().unwrap().has_pending_frames()
    }

    fn next_timer(&self) -> Option<(u64, Duration)> {
        let s = self.0.lock().unwrap();
        Some((s.next_timer_deadline_ms()?, s.next_timer_in()?))
    }
}

/// A guest TCP segment to MMDS, virtio header in front.
fn guest_segment(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN + ETH_HDR_LEN + IPV4_HDR_LEN + 24 + payload.len()];
    let eth = &mut f[VNET_HDR_LEN..];
    write_eth_header(eth, DEFAULT_MAC_ADDR, MAC, ETHERTYPE_IPV4).unwrap();
    let seg = TcpOut {
        src: GUEST_IP,
        dst: DEFAULT_IPV4_ADDR,
        src_port: GUEST_PORT,
        dst_port: 80,
        seq,
        ack,
        flags,
        window: 8192,
        mss: (flags & SYN != 0).then_some(1460),
        payload,
    };
    let n = write_tcp(&mut eth[ETH_HDR_LEN + IPV4_HDR_LEN..], &seg).unwrap();
    write_ipv4_header(
        &mut eth[ETH_HDR_LEN..],
        GUEST_IP,
        DEFAULT_IPV4_ADDR,
        PROTOCOL_TCP,
        n,
    )
    .unwrap();
    f.truncate(VNET_HDR_LEN + ETH_HDR_LEN + IPV4_HDR_LEN + n);
    f
}

/// (seq, flags, payload) of the MMDS segment in RX used element `i`.
fn rx_segment(mem: &squib_core::GuestMemoryMmap, rxq: &TestQueue, i: u16) -> (u32, u8, Vec<u8>) {
    let (head, len) = rxq.used_elem(i);
    let mut f = vec![0u8; len as usize];
    mem.read_slice(&mut f, GuestAddress(RX_BUF + u64::from(head) * 0x1000))
        .unwrap();
    let eth = parse_eth(&f[VNET_HDR_LEN..]).unwrap();
    assert_eq!(eth.dst, MAC);
    let ip = parse_ipv4(eth.payload).unwrap();
    let s = parse_tcp(ip.payload).unwrap();
    assert_eq!(s.dst_port, GUEST_PORT);
    (s.seq, s.flags, s.payload.to_vec())
}

/// Runs the event loop until `done`; fails after 20 s (the RTO is 300 ms).
fn run_until(em: &mut EventManager<VirtioSubscriber<Net>>, what: &str, done: &dyn Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: never happened"
        );
        em.run_with_timeout(50).unwrap();
    }
}

#[test]
fn test_mmds_retransmits_a_dropped_response_segment_on_its_timer() {
    let mut mmds = Mmds::new(51_200).unwrap();
    mmds.set_version(MmdsVersion::V1);
    mmds.put(serde_json::json!({"latest": {"ami-id": "ami-12345678"}}))
        .unwrap();
    let stack = MmdsNetworkStack::new_with_defaults(None, Arc::new(Mutex::new(mmds)));
    let (backend, fake) = FakeBackend::new(true);
    let mut dev = Net::with_backend(
        config(RateLimiter::default(), RateLimiter::default()),
        Box::new(backend),
    )
    .unwrap();
    dev.set_interceptor(Some(Box::new(Stack(Arc::new(Mutex::new(stack))))));
    let mem = guest_memory(0x10_0000);
    let mut rxq = TestQueue::new(&mem, 0, 16);
    let mut txq = TestQueue::new(&mem, 0x1000, 16);
    for i in 0..8 {
        rxq.add_chain(&[wr(RX_BUF + i * 0x1000, 2048)]);
    }
    let (dev, mut em) = activate_in_event_manager(dev, &mem, &rxq, &txq);
    let mut tx_at = TX_BUF;
    let mut send = |txq: &mut TestQueue, seg: Vec<u8>| {
        mem.write_slice(&seg, GuestAddress(tx_at)).unwrap();
        txq.add_chain(&[rd(tx_at, u32::try_from(seg.len()).unwrap())]);
        tx_at += 0x1000;
        dev.lock().unwrap().queue_events()[TX_INDEX]
            .write(1)
            .unwrap();
    };

    // Handshake.
    let iss = 1000u32;
    send(&mut txq, guest_segment(iss, 0, SYN, &[]));
    run_until(&mut em, "SYN-ACK", &|| rxq.used_idx() >= 1);
    let (server_iss, flags, _) = rx_segment(&mem, &rxq, 0);
    assert_eq!(flags, SYN | ACK);
    // ACK + request in one segment.
    let request = b"GET /latest/ami-id HTTP/1.1\r\n\r\n";
    send(
        &mut txq,
        guest_segment(iss + 1, server_iss.wrapping_add(1), ACK | PSH, request),
    );
    run_until(&mut em, "response", &|| rxq.used_idx() >= 2);
    let (seq, _, first) = rx_segment(&mem, &rxq, 1);
    let text = String::from_utf8_lossy(&first).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ami-12345678"), "{text}");
    // The guest "drops" that segment: it never acknowledges it and sends nothing more. The
    // device armed its interceptor timer for the stack's retransmission deadline.
    assert!(
        dev.lock().unwrap().timer_events()[INTERCEPTOR_TIMER]
            .is_armed()
            .unwrap(),
        "the MMDS timer is not armed"
    );
    run_until(&mut em, "retransmission", &|| rxq.used_idx() >= 3);
    let (again_seq, _, again) = rx_segment(&mem, &rxq, 2);
    assert_eq!(again_seq, seq, "the same segment, retransmitted");
    assert_eq!(again, first, "the whole body again");
    // Acknowledged now: no more retransmissions, and nothing ever went to the tap.
    let acked = seq.wrapping_add(u32::try_from(again.len()).unwrap());
    let request_end = iss + 1 + u32::try_from(request.len()).unwrap();
    send(&mut txq, guest_segment(request_end, acked, ACK, &[]));
    run_until(&mut em, "ACK consumed", &|| txq.used_idx() == 3);
    assert!(fake.lock().unwrap().written.is_empty());
    assert!(
        !dev.lock().unwrap().timer_events()[INTERCEPTOR_TIMER]
            .is_armed()
            .unwrap(),
        "nothing left to retransmit"
    );
}
