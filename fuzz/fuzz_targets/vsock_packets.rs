//! vsock packets: well-formed TX chains (header + payload) with fuzzer-chosen header fields
//! (ops REQUEST/RESPONSE/RST/SHUTDOWN/RW/CREDIT_UPDATE/CREDIT_REQUEST and garbage, ports,
//! lengths that lie, credit), RX chains for the answers, and a host side: a listener on
//! `<uds>_52` (so guest connections to port 52 succeed) whose accepted streams receive and send
//! bytes, and host clients speaking the hybrid `CONNECT <port>` protocol to `<uds>`.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use squib_devices::virtio::vsock::packet::Header;
use squib_devices::virtio::vsock::{RXQ_INDEX, TXQ_INDEX};
use squib_devices::virtio::{Vsock, VsockConfig};
use squib_fuzz::{Op, VirtioCase, guest_memory, run_virtio_case};

#[allow(clippy::cast_possible_truncation)]
const TXQ: u8 = TXQ_INDEX as u8;
#[allow(clippy::cast_possible_truncation)]
const RXQ: u8 = RXQ_INDEX as u8;

#[derive(Arbitrary, Debug)]
enum Step {
    /// A guest packet.
    Packet {
        op: u8,
        src_port: u16,
        dst_port: u8,
        len_lie: Option<u32>,
        type_: bool,
        flags: u8,
        buf_alloc: u32,
        fwd_cnt: u32,
        payload: Vec<u8>,
    },
    /// RX buffers for the device's answers, then an RX notify.
    Rx(u8),
    /// Host-side bytes: to the host clients/accepted streams, or a new `CONNECT` client.
    Host(Vec<u8>),
    /// Anything else of the generic driver (timers, host events, raw pokes, MMIO).
    Raw(Op),
}

fuzz_target!(|data: &[u8]| {
    let Ok(steps) = Vec::<Step>::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("squib-fuzz-vsock-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let uds = dir.join("v.sock");
    let _ = std::fs::remove_file(&uds);
    let peer_path = dir.join("v.sock_52");
    let _ = std::fs::remove_file(&peer_path);
    let Ok(peer) = UnixListener::bind(&peer_path) else {
        return;
    };
    let _ = peer.set_nonblocking(true);
    let Ok(dev) = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    }) else {
        return;
    };
    let mut ops = Vec::new();
    for step in steps.into_iter().take(64) {
        match step {
            Step::Packet {
                op,
                src_port,
                dst_port,
                len_lie,
                type_,
                flags,
                buf_alloc,
                fwd_cnt,
                payload,
            } => {
                let payload: Vec<u8> = payload.into_iter().take(4096).collect();
                let hdr = Header {
                    src_cid: 3,
                    dst_cid: 2,
                    src_port: u32::from(src_port),
                    dst_port: if dst_port < 200 {
                        52
                    } else {
                        u32::from(dst_port)
                    },
                    len: len_lie.unwrap_or(u32::try_from(payload.len()).unwrap_or(0)),
                    type_: if type_ { 1 } else { 2 },
                    op: u16::from(op % 9),
                    flags: u32::from(flags % 4),
                    buf_alloc,
                    fwd_cnt,
                };
                let mut bufs = vec![(false, hdr.to_bytes().to_vec())];
                if !payload.is_empty() {
                    bufs.push((false, payload));
                }
                ops.push(Op::Buffers { queue: TXQ, bufs });
                ops.push(Op::Notify { queue: TXQ });
            }
            Step::Rx(n) => {
                for _ in 0..=(n % 4) {
                    ops.push(Op::Buffers {
                        queue: RXQ,
                        bufs: vec![(true, vec![0; 44]), (true, vec![0; 256])],
                    });
                }
                ops.push(Op::Notify { queue: RXQ });
            }
            Step::Host(bytes) => ops.push(Op::Input(bytes)),
            Step::Raw(op) => ops.push(op),
        }
    }
    let case = VirtioCase {
        feature_mask: u64::MAX,
        queue_size: 8,
        ops,
    };
    let mut streams: Vec<UnixStream> = Vec::new();
    let mut host = |_dev: &mut Vsock, bytes: &[u8]| {
        while let Ok((s, _)) = peer.accept() {
            let _ = s.set_nonblocking(true);
            streams.push(s);
        }
        match bytes.first() {
            Some(0) if streams.len() < 8 => {
                if let Ok(mut s) = UnixStream::connect(&uds) {
                    let _ = s.set_nonblocking(true);
                    let _ = s.write_all(&bytes[1..]);
                    streams.push(s);
                }
            }
            Some(&i) if !streams.is_empty() => {
                let n = streams.len();
                let s = &mut streams[usize::from(i) % n];
                let _ = s.write_all(&bytes[1..]);
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
            }
            _ => {}
        }
    };
    run_virtio_case(dev, &guest_memory(&[]), &mut host, &case);
});
