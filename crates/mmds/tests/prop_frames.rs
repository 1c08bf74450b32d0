//! Property tests: arbitrary and structurally valid but mutated guest frames into
//! `detour_frame`, then draining `write_next_frame` into buffers of arbitrary size, never panic,
//! never report a length beyond the buffer, and always produce well-formed frames.
//!
//! Cases: 4 096 by default; `SQUIB_PROPTEST_CASES=100000` for a long run.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::json;
use squib_mmds::wire::{ACK, ETH_HDR_LEN, FIN, PSH, RST, SYN, parse_eth};
use squib_mmds::{DEFAULT_IPV4_ADDR, Mmds, MmdsNetworkStack, MmdsVersion};

fn cases() -> u32 {
    std::env::var("SQUIB_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

fn stack(v2: bool) -> (MmdsNetworkStack, squib_mmds::ManualClock) {
    let mut m = Mmds::new(4096).unwrap();
    m.put(json!({"latest": {"meta-data": {"a": "b"}}, "n": 1, "s": "x".repeat(3000)}))
        .unwrap();
    if v2 {
        m.set_version(MmdsVersion::V2);
    }
    let (s, c, _) = stack_with(m);
    (s, c)
}

/// Drains with buffers of the given sizes (cycled); checks bounds and frame shape.
fn drain_checked(stack: &mut MmdsNetworkStack, sizes: &[usize]) -> Result<(), TestCaseError> {
    for i in 0..4000 {
        let size = sizes[i % sizes.len()];
        let mut buf = vec![0xAAu8; size + 16];
        let Some(n) = stack.write_next_frame(&mut buf[..size]) else {
            return Ok(());
        };
        prop_assert!(n <= size, "wrote {n} into {size}");
        prop_assert!(
            buf[size..].iter().all(|&b| b == 0xAA),
            "wrote past the buffer"
        );
        prop_assert!(parse_eth(&buf[..n]).is_some());
    }
    prop_assert!(false, "stack never ran out of frames");
    Ok(())
}

fn flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(SYN),
        Just(ACK),
        Just(ACK | PSH),
        Just(FIN | ACK),
        Just(RST),
        Just(RST | ACK),
        any::<u8>()
    ]
}

fn http_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        Just(b"GET /s HTTP/1.1\r\nAccept: application/json\r\n\r\n".to_vec()),
        Just(
            b"PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n".to_vec()
        ),
        Just(b"PATCH / HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..1600),
        "[ -~\r\n]{0,300}".prop_map(String::into_bytes),
    ]
}

#[derive(Debug, Clone)]
enum Action {
    Raw(Vec<u8>),
    Arp(Vec<(usize, u8)>, usize),
    Tcp {
        port: u16,
        seq_delta: u32,
        ack: Option<u32>,
        flags: u8,
        window: u16,
        mss: Option<u16>,
        payload: Vec<u8>,
        mutations: Vec<(usize, u8)>,
        cut: usize,
    },
    Advance(u64),
    Drain(Vec<usize>),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Action::Raw),
        (
            proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
            0usize..80
        )
            .prop_map(|(m, c)| Action::Arp(m, c)),
        (
            prop_oneof![Just(40000u16), Just(40001u16), any::<u16>()],
            prop_oneof![Just(0u32), 0u32..3000, any::<u32>()],
            proptest::option::of(any::<u32>()),
            flags(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            http_payload(),
            proptest::collection::vec((0usize..80, any::<u8>()), 0..3),
            any::<usize>(),
        )
            .prop_map(
                |(port, seq_delta, ack, flags, window, mss, payload, mutations, cut)| Action::Tcp {
                    port,
                    seq_delta,
                    ack,
                    flags,
                    window,
                    mss,
                    payload,
                    mutations,
                    cut,
                }
            ),
        (0u64..20_000).prop_map(Action::Advance),
        proptest::collection::vec(0usize..2000, 1..4).prop_map(Action::Drain),
    ]
}

fn mutate(frame: &mut [u8], mutations: &[(usize, u8)]) {
    for &(i, v) in mutations {
        if let Some(b) = frame.get_mut(i) {
            *b = v;
        }
    }
}

fn run(actions: Vec<Action>, v2: bool) -> Result<(), TestCaseError> {
    let (mut st, clock) = stack(v2);
    // Track a plausible sequence number per port so some segments land in-window.
    let mut c = Client::new(40000);
    c.connect(&mut st);
    for a in actions {
        match a {
            Action::Raw(bytes) => {
                st.detour_frame(&bytes);
            }
            Action::Arp(m, cut) => {
                let mut f = arp_request(DEFAULT_IPV4_ADDR);
                mutate(&mut f, &m);
                f.truncate(cut);
                st.detour_frame(&f);
            }
            Action::Tcp {
                port,
                seq_delta,
                ack,
                flags,
                window,
                mss,
                payload,
                mutations,
                cut,
            } => {
                let seq = c.seq.wrapping_add(seq_delta);
                let mut f = tcp_frame(
                    port,
                    80,
                    seq,
                    ack.unwrap_or(c.rcv_nxt),
                    flags,
                    window,
                    mss,
                    &payload,
                );
                if seq_delta == 0
                    && port == c.port
                    && flags & (SYN | RST) == 0
                    && mutations.is_empty()
                {
                    c.seq = c.seq.wrapping_add(u32::try_from(payload.len()).unwrap());
                }
                mutate(&mut f, &mutations);
                if cut % 4 == 0 {
                    let keep = cut % (f.len() + 1);
                    f.truncate(keep.max(ETH_HDR_LEN.min(f.len())));
                }
                st.detour_frame(&f);
            }
            Action::Advance(ms) => clock.advance(ms),
            Action::Drain(sizes) => {
                drain_checked(&mut st, &sizes)?;
            }
        }
        prop_assert!(st.connection_count() <= 30);
    }
    drain_checked(&mut st, &[1514])?;
    // The stack still works after whatever happened.
    let mut fresh = Client::new(45000);
    fresh.connect(&mut st);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), size in 0usize..2000) {
        let (mut st, _) = stack(false);
        st.detour_frame(&bytes);
        drain_checked(&mut st, &[size, 1514])?;
    }

    #[test]
    fn mutated_sessions_never_panic(actions in proptest::collection::vec(action(), 1..24), v2 in any::<bool>()) {
        run(actions, v2)?;
    }
}
