//! A scripted guest for driving `MmdsNetworkStack` with hand-built frames.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use squib_mmds::wire::{
    ACK, ETH_HDR_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, IPV4_HDR_LEN, PROTOCOL_TCP, SYN, TcpOut,
    parse_eth, parse_ipv4, parse_tcp, tcp_checksum_ok, write_ipv4_header, write_tcp,
};
use squib_mmds::{DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR, ManualClock, Mmds, MmdsNetworkStack};

pub const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

pub fn stack_with(mmds: Mmds) -> (MmdsNetworkStack, ManualClock, Arc<Mutex<Mmds>>) {
    let clock = ManualClock::new(1_000);
    let shared = Arc::new(Mutex::new(mmds));
    let stack = MmdsNetworkStack::new_with_defaults(None, shared.clone())
        .with_clock(Arc::new(clock.clone()));
    (stack, clock, shared)
}

pub fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HDR_LEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn arp_request(tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    p.extend_from_slice(&GUEST_MAC);
    p.extend_from_slice(&GUEST_IP.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa.octets());
    eth([0xff; 6], ETHERTYPE_ARP, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; ETH_HDR_LEN + IPV4_HDR_LEN + 24 + payload.len()];
    let seg = TcpOut {
        src: GUEST_IP,
        dst: DEFAULT_IPV4_ADDR,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        mss,
        payload,
    };
    let n = write_tcp(&mut buf[ETH_HDR_LEN + IPV4_HDR_LEN..], &seg).unwrap();
    write_ipv4_header(
        &mut buf[ETH_HDR_LEN..],
        GUEST_IP,
        DEFAULT_IPV4_ADDR,
        PROTOCOL_TCP,
        n,
    )
    .unwrap();
    buf.truncate(ETH_HDR_LEN + IPV4_HDR_LEN + n);
    let mut f = eth(DEFAULT_MAC_ADDR, ETHERTYPE_IPV4, &[]);
    f.extend_from_slice(&buf[ETH_HDR_LEN..]);
    f
}

#[derive(Debug, Clone)]
pub struct Seg {
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub payload: Vec<u8>,
}

/// Parses a frame the stack sent; checks addresses and checksums.
pub fn parse_out(frame: &[u8]) -> Seg {
    let e = parse_eth(frame).unwrap();
    assert_eq!(e.dst, GUEST_MAC);
    assert_eq!(e.src, DEFAULT_MAC_ADDR);
    assert_eq!(e.ethertype, ETHERTYPE_IPV4);
    let ip = parse_ipv4(e.payload).unwrap();
    assert_eq!(
        squib_mmds::wire::checksum(&e.payload[..IPV4_HDR_LEN], 0),
        0,
        "IPv4 checksum"
    );
    assert_eq!((ip.src, ip.dst), (DEFAULT_IPV4_ADDR, GUEST_IP));
    assert!(tcp_checksum_ok(ip.src, ip.dst, ip.payload), "TCP checksum");
    let s = parse_tcp(ip.payload).unwrap();
    assert_eq!(s.src_port, 80);
    Seg {
        dst_port: s.dst_port,
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        window: s.window,
        mss: s.mss.unwrap(),
        payload: s.payload.to_vec(),
    }
}

pub fn drain(stack: &mut MmdsNetworkStack) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(n) = stack.write_next_frame(&mut buf) {
        out.push(parse_out(&buf[..n]));
        assert!(out.len() < 10_000, "runaway");
    }
    out
}

/// A guest TCP client with a simple in-order receiver.
pub struct Client {
    pub port: u16,
    pub seq: u32,
    pub rcv_nxt: u32,
    pub window: u16,
    pub received: Vec<u8>,
    pub fin_received: bool,
}

impl Client {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            seq: 1_000_000,
            rcv_nxt: 0,
            window: 65535,
            received: Vec::new(),
            fin_received: false,
        }
    }

    pub fn send(&self, stack: &mut MmdsNetworkStack, flags: u8, payload: &[u8]) -> bool {
        stack.detour_frame(&tcp_frame(
            self.port,
            80,
            self.seq,
            self.rcv_nxt,
            flags,
            self.window,
            None,
            payload,
        ))
    }

    pub fn connect(&mut self, stack: &mut MmdsNetworkStack) {
        assert!(stack.detour_frame(&tcp_frame(
            self.port,
            80,
            self.seq,
            0,
            SYN,
            self.window,
            Some(1460),
            &[]
        )));
        let segs = drain(stack);
        assert_eq!(segs.len(), 1);
        let synack = &segs[0];
        assert_eq!(synack.flags, SYN | ACK);
        assert_eq!(synack.ack, self.seq.wrapping_add(1));
        assert_eq!(synack.mss, Some(1460));
        self.seq = self.seq.wrapping_add(1);
        self.rcv_nxt = synack.seq.wrapping_add(1);
        assert!(self.send(stack, ACK, &[]));
    }

    /// Takes the stack's segments, keeps in-order data, ACKs what arrived. Returns the segments.
    pub fn pump(&mut self, stack: &mut MmdsNetworkStack) -> Vec<Seg> {
        let segs = drain(stack);
        let mut got = false;
        for s in &segs {
            if s.dst_port != self.port {
                continue;
            }
            if s.seq == self.rcv_nxt && !s.payload.is_empty() {
                self.received.extend_from_slice(&s.payload);
                self.rcv_nxt = self
                    .rcv_nxt
                    .wrapping_add(u32::try_from(s.payload.len()).unwrap());
                got = true;
            }
            if s.flags & squib_mmds::wire::FIN != 0
                && s.seq.wrapping_add(u32::try_from(s.payload.len()).unwrap()) == self.rcv_nxt
            {
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                self.fin_received = true;
                got = true;
            }
        }
        if got {
            self.send(stack, ACK, &[]);
        }
        segs
    }

    /// Sends a request and pumps until a complete response (by Content-Length) arrived.
    pub fn request(&mut self, stack: &mut MmdsNetworkStack, req: &str) -> String {
        assert!(self.send(stack, ACK | squib_mmds::wire::PSH, req.as_bytes()));
        self.seq = self.seq.wrapping_add(u32::try_from(req.len()).unwrap());
        for _ in 0..1000 {
            self.pump(stack);
            if let Some(resp) = take_response(&mut self.received) {
                return resp;
            }
        }
        panic!(
            "no complete response; got {:?}",
            String::from_utf8_lossy(&self.received)
        );
    }
}

/// Removes one complete HTTP response from `buf`.
pub fn take_response(buf: &mut Vec<u8>) -> Option<String> {
    let text = String::from_utf8_lossy(buf).into_owned();
    let head_end = text.find("\r\n\r\n")? + 4;
    let len: usize = text[..head_end]
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    if buf.len() < head_end + len {
        return None;
    }
    let resp = String::from_utf8(buf.drain(..head_end + len).collect()).unwrap();
    Some(resp)
}

pub fn body(resp: &str) -> &str {
    &resp[resp.find("\r\n\r\n").unwrap() + 4..]
}
