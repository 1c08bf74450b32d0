//! MMDS guest frames: raw Ethernet frames and well-formed ARP/TCP segments (checksums right,
//! sequence numbers near the stack's) carrying HTTP requests, against `MmdsNetworkStack` on a
//! manual clock (V1 or V2, `imds_compat` or not). Every frame the stack produces is drained.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use squib_mmds::wire::{
    ETH_HDR_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, IPV4_HDR_LEN, PROTOCOL_TCP, TcpOut, parse_eth,
    parse_ipv4, parse_tcp, write_ipv4_header, write_tcp,
};
use squib_mmds::{
    DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR, ManualClock, Mmds, MmdsNetworkStack, MmdsVersion,
};

const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

#[derive(Arbitrary, Debug)]
enum Op {
    /// Any bytes as a frame.
    Raw(Vec<u8>),
    /// An ARP request for `target` (MMDS's address when `mmds`).
    Arp { mmds: bool, target: u32 },
    /// A TCP segment from client port `port % 4` with checksums right; `seq`/`ack` relative to
    /// what this client sent and what the stack sent.
    Tcp {
        port: u8,
        flags: u8,
        seq_delta: i16,
        ack_delta: i16,
        window: u16,
        mss: Option<u16>,
        payload: Vec<u8>,
    },
    /// An HTTP request line + headers on an established connection (the common case, spelled
    /// out so the fuzzer reaches the HTTP layer quickly).
    Http {
        port: u8,
        path: String,
        token: Option<String>,
        put_token: bool,
    },
    /// Time passes (retransmissions, token expiry).
    Advance(u16),
}

#[derive(Arbitrary, Debug)]
struct Case {
    v2: bool,
    imds_compat: bool,
    ops: Vec<Op>,
}

#[derive(Default, Clone, Copy)]
struct Client {
    next_seq: u32,
    server_next: u32,
}

fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HDR_LEN + payload.len());
    f.extend_from_slice(&DEFAULT_MAC_ADDR);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; IPV4_HDR_LEN + 24 + payload.len()];
    let out = TcpOut {
        src: GUEST_IP,
        dst: DEFAULT_IPV4_ADDR,
        src_port: port,
        dst_port: 80,
        seq,
        ack,
        flags,
        window,
        mss,
        payload,
    };
    let Some(n) = write_tcp(&mut buf[IPV4_HDR_LEN..], &out) else {
        return Vec::new();
    };
    let _ = write_ipv4_header(&mut buf, GUEST_IP, DEFAULT_IPV4_ADDR, PROTOCOL_TCP, n);
    buf.truncate(IPV4_HDR_LEN + n);
    frame(ETHERTYPE_IPV4, &buf)
}

fn drain(stack: &mut MmdsNetworkStack, clients: &mut [Client; 4]) {
    let mut buf = [0u8; 2048];
    for _ in 0..64 {
        let Some(n) = stack.write_next_frame(&mut buf) else {
            return;
        };
        assert!(n <= buf.len());
        let Some(eth) = parse_eth(&buf[..n]) else {
            continue;
        };
        let Some(ip) = parse_ipv4(eth.payload) else {
            continue;
        };
        let Some(seg) = parse_tcp(ip.payload) else {
            continue;
        };
        let c = &mut clients[usize::from(seg.dst_port % 4)];
        c.server_next = seg.seq.wrapping_add(seg.seq_len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let Ok(mut mmds) = Mmds::new(4096) else {
        return;
    };
    mmds.set_version(if case.v2 {
        MmdsVersion::V2
    } else {
        MmdsVersion::V1
    });
    mmds.set_imds_compat(case.imds_compat);
    let _ = mmds.put(serde_json::json!({"latest": {"meta-data": {"ami-id": "ami-1", "list": [1, "two", {"k": null}]}}}));
    let clock = ManualClock::new(1_000);
    let mut stack = MmdsNetworkStack::new_with_defaults(None, Arc::new(Mutex::new(mmds)))
        .with_clock(Arc::new(clock.clone()));
    let mut clients = [Client::default(); 4];
    for op in case.ops.iter().take(128) {
        let f = match op {
            Op::Raw(bytes) => bytes.clone(),
            Op::Arp { mmds, target } => {
                let tpa = if *mmds {
                    DEFAULT_IPV4_ADDR
                } else {
                    Ipv4Addr::from(*target)
                };
                let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
                p.extend_from_slice(&GUEST_MAC);
                p.extend_from_slice(&GUEST_IP.octets());
                p.extend_from_slice(&[0; 6]);
                p.extend_from_slice(&tpa.octets());
                frame(ETHERTYPE_ARP, &p)
            }
            Op::Tcp {
                port,
                flags,
                seq_delta,
                ack_delta,
                window,
                mss,
                payload,
            } => {
                let c = &mut clients[usize::from(port % 4)];
                let seq = c.next_seq.wrapping_add_signed(i32::from(*seq_delta));
                let ack = c.server_next.wrapping_add_signed(i32::from(*ack_delta));
                let payload = &payload[..payload.len().min(1600)];
                c.next_seq = seq
                    .wrapping_add(u32::try_from(payload.len()).unwrap_or(0))
                    .wrapping_add(u32::from(flags & 0x03 != 0));
                tcp(
                    1000 + u16::from(port % 4),
                    seq,
                    ack,
                    *flags,
                    *window,
                    *mss,
                    payload,
                )
            }
            Op::Http {
                port,
                path,
                token,
                put_token,
            } => {
                let c = &mut clients[usize::from(port % 4)];
                let mut req = if *put_token {
                    "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n"
                        .to_owned()
                } else {
                    format!("GET /{path} HTTP/1.1\r\nAccept: application/json\r\n")
                };
                if let Some(t) = token {
                    req.push_str("X-metadata-token: ");
                    req.push_str(t);
                    req.push_str("\r\n");
                }
                req.push_str("\r\n");
                let seq = c.next_seq;
                c.next_seq = seq.wrapping_add(u32::try_from(req.len()).unwrap_or(0));
                tcp(
                    1000 + u16::from(port % 4),
                    seq,
                    c.server_next,
                    0x18,
                    65535,
                    None,
                    req.as_bytes(),
                )
            }
            Op::Advance(ms) => {
                clock.advance(u64::from(*ms));
                drain(&mut stack, &mut clients);
                continue;
            }
        };
        let _ = stack.detour_frame(&f);
        drain(&mut stack, &mut clients);
    }
});
