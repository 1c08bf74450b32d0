//! End-to-end: hand-built guest frames through `MmdsNetworkStack` (ARP, handshake, HTTP
//! requests and responses parsed back out of the frames the stack writes).

mod common;

use common::*;
use serde_json::json;
use squib_mmds::wire::{ACK, ARP_LEN, ETH_HDR_LEN, ETHERTYPE_ARP, FIN, PSH, RST, SYN, parse_eth};
use squib_mmds::{DEFAULT_IPV4_ADDR, DEFAULT_MAC_ADDR, Mmds, MmdsVersion};

fn populated() -> Mmds {
    let mut m = Mmds::new(51200).unwrap();
    m.put(json!({"latest": {"meta-data": {"ami-id": "ami-123", "tags": {"a": "b"}}}, "user-data": "hello"})).unwrap();
    m
}

#[test]
fn arp_reply() {
    let (mut stack, _, _) = stack_with(populated());
    assert!(
        !stack.detour_frame(&arp_request("10.0.0.1".parse().unwrap())),
        "not for MMDS: tap"
    );
    assert!(!stack.has_pending_frames());
    assert!(stack.detour_frame(&arp_request(DEFAULT_IPV4_ADDR)));
    assert!(stack.has_pending_frames());
    let mut small = [0u8; 41];
    assert_eq!(
        stack.write_next_frame(&mut small),
        None,
        "too small, kept for later"
    );
    let mut buf = [0u8; 128];
    let n = stack.write_next_frame(&mut buf).unwrap();
    assert_eq!(n, ETH_HDR_LEN + ARP_LEN);
    let e = parse_eth(&buf[..n]).unwrap();
    assert_eq!(
        (e.dst, e.src, e.ethertype),
        (GUEST_MAC, DEFAULT_MAC_ADDR, ETHERTYPE_ARP)
    );
    let p = e.payload;
    assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 2]);
    assert_eq!(&p[8..14], &DEFAULT_MAC_ADDR);
    assert_eq!(&p[14..18], &DEFAULT_IPV4_ADDR.octets());
    assert_eq!(&p[18..24], &GUEST_MAC);
    assert_eq!(&p[24..28], &GUEST_IP.octets());
    assert_eq!(stack.write_next_frame(&mut buf), None);
    let m = stack.metrics().snapshot();
    assert_eq!((m.rx_accepted, m.tx_frames, m.tx_bytes), (1, 1, 42));
}

#[test]
fn v1_get_end_to_end() {
    let (mut stack, _, _) = stack_with(populated());
    assert!(stack.detour_frame(&arp_request(DEFAULT_IPV4_ADDR)));
    let mut buf = [0u8; 64];
    assert!(stack.write_next_frame(&mut buf).is_some());

    let mut c = Client::new(40000);
    c.connect(&mut stack);
    assert_eq!(stack.connection_count(), 1);
    let resp = c.request(
        &mut stack,
        "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    );
    assert_eq!(
        resp,
        "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nami-id\ntags/"
    );
    // Keep-alive: a second request on the same connection.
    let resp = c.request(
        &mut stack,
        "GET /latest/meta-data/tags HTTP/1.1\r\nAccept: application/json\r\n\r\n",
    );
    assert!(resp.contains("Content-Type: application/json\r\n"));
    assert_eq!(body(&resp), r#"{"a":"b"}"#);
    let resp = c.request(&mut stack, "GET /nope HTTP/1.0\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.0 404 \r\n"));
    assert_eq!(body(&resp), "Resource not found: /nope.");
    let resp = c.request(&mut stack, "DELETE / HTTP/1.1\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 405 \r\n") && resp.contains("Allow: GET, PUT\r\n"));

    // The guest closes: FIN → our FIN → guest ACK → gone.
    assert!(c.send(&mut stack, FIN | ACK, &[]));
    c.seq = c.seq.wrapping_add(1);
    let segs = c.pump(&mut stack);
    assert!(segs.iter().any(|s| s.flags & FIN != 0), "{segs:?}");
    assert!(c.fin_received);
    assert_eq!(stack.connection_count(), 0);
    let m = stack.metrics().snapshot();
    assert_eq!((m.connections_created, m.connections_destroyed), (1, 1));
    assert_eq!(m.rx_no_token, 3);
}

#[test]
fn v2_token_put_and_get_end_to_end() {
    let mut m = populated();
    m.set_version(MmdsVersion::V2);
    let (mut stack, _, shared) = stack_with(m);
    let mut c = Client::new(40001);
    c.connect(&mut stack);
    let resp = c.request(&mut stack, "GET /user-data HTTP/1.1\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 401 \r\n"));
    assert_eq!(
        body(&resp),
        "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token."
    );
    let resp = c.request(
        &mut stack,
        "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200 \r\n"));
    assert!(resp.contains("X-metadata-token-ttl-seconds: 60\r\n"));
    let token = body(&resp).to_owned();
    let resp = c.request(
        &mut stack,
        &format!("GET /user-data HTTP/1.1\r\nX-metadata-token: {token}\r\n\r\n"),
    );
    assert_eq!(body(&resp), "hello");
    let resp = c.request(
        &mut stack,
        "GET /user-data HTTP/1.1\r\nX-metadata-token: AAAA\r\n\r\n",
    );
    assert_eq!(body(&resp), "MMDS token not valid.");

    // Tokens survive a snapshot/restore of the token authority into a fresh store.
    let state = shared.lock().unwrap().token_state();
    let mut fresh = populated();
    fresh.set_version(MmdsVersion::V2);
    fresh.restore_token_state(&state).unwrap();
    let (mut stack2, _, _) = stack_with(fresh);
    let mut c2 = Client::new(40002);
    c2.connect(&mut stack2);
    let resp = c2.request(
        &mut stack2,
        &format!("GET /user-data HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"),
    );
    assert_eq!(body(&resp), "hello");
}

#[test]
fn large_response_respects_mss_window_and_buffer() {
    let mut m = Mmds::new(100_000).unwrap();
    let big = "x".repeat(20_000);
    m.put(json!({ "big": big })).unwrap();
    let (mut stack, _, _) = stack_with(m);
    let mut c = Client::new(40003);
    c.window = 3000;
    c.connect(&mut stack);
    let resp = c.request(&mut stack, "GET /big HTTP/1.1\r\n\r\n");
    assert_eq!(body(&resp).len(), 20_000);
    // Small output buffers: segments are cut to fit.
    let mut c2 = Client::new(40004);
    c2.connect(&mut stack);
    assert!(c2.send(&mut stack, ACK | PSH, b"GET /big HTTP/1.1\r\n\r\n"));
    let mut buf = [0u8; 200];
    let n = stack.write_next_frame(&mut buf).unwrap();
    assert!(n <= 200);
    let s = parse_out(&buf[..n]);
    assert!(!s.payload.is_empty() && s.payload.len() <= 200 - 54);
}

#[test]
fn retransmission_on_rto_and_reset_after_max() {
    let (mut stack, clock, _) = stack_with(populated());
    let mut c = Client::new(40005);
    c.connect(&mut stack);
    assert!(c.send(&mut stack, ACK | PSH, b"GET /user-data HTTP/1.1\r\n\r\n"));
    c.seq = c.seq.wrapping_add(27);
    let first = drain(&mut stack);
    let data: Vec<_> = first.iter().filter(|s| !s.payload.is_empty()).collect();
    assert_eq!(data.len(), 1);
    // The guest loses it; nothing until the RTO fires.
    assert!(!stack.has_pending_frames());
    let deadline = stack.next_timer_deadline_ms().unwrap();
    assert!(stack.next_timer_in().unwrap() > std::time::Duration::ZERO);
    clock.set(deadline);
    assert!(stack.has_pending_frames());
    let again = drain(&mut stack);
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].seq, &again[0].payload),
        (data[0].seq, &data[0].payload)
    );
    // Keep losing: after 15 retransmissions the connection resets itself.
    let mut rst = false;
    for _ in 0..20 {
        clock.advance(1_000);
        for s in drain(&mut stack) {
            rst |= s.flags & RST != 0;
        }
    }
    assert!(rst);
    assert_eq!(stack.connection_count(), 0);
}

#[test]
fn oversized_request_resets_and_strays_get_rst() {
    let (mut stack, _, _) = stack_with(populated());
    let mut c = Client::new(40006);
    c.connect(&mut stack);
    let junk = vec![b'a'; 1400];
    for _ in 0..2 {
        assert!(c.send(&mut stack, ACK, &junk));
        c.seq = c.seq.wrapping_add(1400);
        c.pump(&mut stack);
    }
    assert_eq!(
        stack.connection_count(),
        0,
        "request head over 2500 bytes resets"
    );
    // A stray ACK to no connection gets a RST with seq = its ack.
    assert!(stack.detour_frame(&tcp_frame(40007, 80, 5, 777, ACK, 100, None, &[])));
    let segs = drain(&mut stack);
    assert_eq!((segs.len(), segs[0].flags, segs[0].seq), (1, RST, 777));
    // Another port: consumed, counted as an error, no answer.
    assert!(stack.detour_frame(&tcp_frame(40008, 81, 5, 0, SYN, 100, None, &[])));
    assert!(drain(&mut stack).is_empty());
    assert!(stack.metrics().snapshot().rx_accepted_err >= 1);
}

#[test]
fn connection_limit_and_eviction() {
    let (mut stack, clock, _) = stack_with(populated());
    for p in 0..30u16 {
        Client::new(50000 + p).connect(&mut stack);
    }
    assert_eq!(stack.connection_count(), 30);
    // Full and nobody idle: the new SYN is refused with a RST.
    assert!(stack.detour_frame(&tcp_frame(51000, 80, 9, 0, SYN, 100, None, &[])));
    let segs = drain(&mut stack);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags, RST | ACK);
    // After the idle threshold one is evicted (RST) for the newcomer (SYN-ACK).
    clock.advance(10_001);
    assert!(stack.detour_frame(&tcp_frame(51000, 80, 9, 0, SYN, 100, None, &[])));
    let segs = drain(&mut stack);
    assert!(
        segs.iter()
            .any(|s| s.flags & RST != 0 && s.dst_port != 51000)
    );
    assert!(
        segs.iter()
            .any(|s| s.flags == SYN | ACK && s.dst_port == 51000)
    );
    assert_eq!(stack.connection_count(), 30);
}

#[test]
fn non_mmds_traffic_goes_to_tap() {
    let (mut stack, _, _) = stack_with(populated());
    assert!(!stack.detour_frame(&[]));
    assert!(!stack.detour_frame(&[0u8; 13]));
    assert_eq!(stack.metrics().snapshot().rx_bad_eth, 2);
    // IPv4 to elsewhere.
    let mut f = tcp_frame(1, 80, 0, 0, SYN, 0, None, &[]);
    f[ETH_HDR_LEN + 16..ETH_HDR_LEN + 20].copy_from_slice(&[8, 8, 8, 8]);
    assert!(!stack.detour_frame(&f));
    // UDP to MMDS: consumed, unusual.
    let mut u = tcp_frame(1, 80, 0, 0, SYN, 0, None, &[]);
    u[ETH_HDR_LEN + 9] = 17;
    assert!(stack.detour_frame(&u));
    assert_eq!(stack.metrics().snapshot().rx_accepted_unusual, 1);
    assert!(!stack.has_pending_frames());
}
