//! virtio-vsock device tests: a fake guest driver ([`H`]) posts RX/TX chains through
//! `TestQueue`s, the device runs in a real `EventManager` through `VirtioSubscriber` (so event
//! source changes are applied as in the VMM), and the host side uses real Unix sockets in a
//! temporary directory. Flow-control, limit and lifecycle tests are in `tests_flow.rs`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::packet::{Header, op};
use super::*;
use crate::virtio::test_utils::{RecordingInterrupt, TestQueue, guest_memory, rd, wr};
use crate::virtio::{VirtioDevice, VirtioSubscriber};

pub(super) const MEM: usize = 0x40_0000;
pub(super) const QSIZE: u16 = 128;
const RX_BASE: u64 = 0x10_0000;
pub(super) const RX_SLOT: u64 = 0x2000;
const TX_BASE: u64 = 0x20_0000;
const TX_SLOT: u64 = 0x1_1000;
pub(super) const EV_BASE: u64 = 0x3F_0000;
pub(super) const GUEST_CID: u64 = 3;
pub(super) const BUF_ALLOC: u32 = 256 * 1024;

/// The fake guest driver plus the event loop.
pub(super) struct H {
    pub(super) mem: GuestMemoryMmap,
    pub(super) rxq: TestQueue,
    pub(super) txq: TestQueue,
    pub(super) evq: TestQueue,
    pub(super) dev: Arc<Mutex<Vsock>>,
    /// The interrupts the device raised since the last [`H::activate`].
    pub(super) irq: Arc<RecordingInterrupt>,
    em: EventManager<VirtioSubscriber<Vsock>>,
    pub(super) dir: TempDir,
    pub(super) uds: PathBuf,
    rx_heads: HashMap<u16, u64>,
    rx_slot: u64,
    rx_posted: u16,
    rx_seen: u16,
    tx_slot: u64,
}

impl H {
    pub(super) fn new() -> Self {
        let dir = TempDir::new_with_prefix("/tmp/squib-vsock-").unwrap();
        let uds = dir.as_path().join("v.sock");
        let dev = Vsock::new(&VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: uds.clone(),
        })
        .unwrap();
        Self::with_device(dev, dir, uds, true)
    }

    pub(super) fn with_device(dev: Vsock, dir: TempDir, uds: PathBuf, activate: bool) -> Self {
        let mem = guest_memory(MEM);
        let rxq = TestQueue::new(&mem, 0, QSIZE);
        let txq = TestQueue::new(&mem, 0x1000, QSIZE);
        let evq = TestQueue::new(&mem, 0x2000, 4);
        let dev = Arc::new(Mutex::new(dev));
        let mut em = EventManager::<VirtioSubscriber<Vsock>>::new().unwrap();
        em.add_subscriber(VirtioSubscriber::new(dev.clone()));
        let mut h = Self {
            mem,
            rxq,
            txq,
            evq,
            dev,
            irq: RecordingInterrupt::new(),
            em,
            dir,
            uds,
            rx_heads: HashMap::new(),
            rx_slot: 0,
            rx_posted: 0,
            rx_seen: 0,
            tx_slot: 0,
        };
        if activate {
            h.activate();
        }
        h
    }

    pub(super) fn activate(&mut self) {
        let queues = vec![
            self.rxq.create_queue(),
            self.txq.create_queue(),
            self.evq.create_queue(),
        ];
        self.evq.add_chain(&[wr(EV_BASE, 8)]);
        self.irq = RecordingInterrupt::new();
        let irq = self.irq.clone();
        self.dev().activate(self.mem.clone(), irq, queues).unwrap();
        self.pump();
    }

    pub(super) fn dev(&self) -> MutexGuard<'_, Vsock> {
        self.dev.lock().unwrap()
    }

    /// Runs the event loop until it is idle.
    pub(super) fn pump(&mut self) {
        for _ in 0..100_000 {
            if self.em.run_with_timeout(2).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop never idle");
    }

    /// Runs the event loop for `d`.
    pub(super) fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.em.run_with_timeout(5).unwrap();
        }
        self.pump();
    }

    pub(super) fn notify(&mut self, q: usize) {
        self.dev().queue_events()[q].write(1).unwrap();
        self.pump();
    }

    /// Keeps `n` RX buffers available to the device.
    pub(super) fn post_rx(&mut self, n: u16) {
        while self.rx_posted.wrapping_sub(self.rx_seen) < n.min(QSIZE) {
            let addr = RX_BASE + (self.rx_slot % u64::from(QSIZE)) * RX_SLOT;
            self.rx_slot += 1;
            let head = self
                .rxq
                .add_chain(&[wr(addr, u32::try_from(RX_SLOT).unwrap())]);
            self.rx_heads.insert(head, addr);
            self.rx_posted = self.rx_posted.wrapping_add(1);
        }
        self.notify(RXQ_INDEX);
    }

    /// Packets the device put in the RX queue since the last call.
    pub(super) fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while self.rx_seen != self.rxq.used_idx() {
            let (id, len) = self.rxq.used_elem(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let addr = self.rx_heads[&u16::try_from(id).unwrap()];
            let mut raw = [0u8; HDR_SIZE];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(len as usize, HDR_SIZE + hdr.len as usize);
            let mut data = vec![0u8; hdr.len as usize];
            self.mem
                .read_slice(&mut data, GuestAddress(addr + HDR_SIZE as u64))
                .unwrap();
            out.push((hdr, data));
        }
        out
    }

    /// Posts RX buffers, runs the loop and returns what arrived.
    pub(super) fn recv_pump(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.post_rx(QSIZE);
        self.recv()
    }

    /// The guest transmits one packet.
    pub(super) fn send(&mut self, mut hdr: Header, data: &[u8]) {
        hdr.len = u32::try_from(data.len()).unwrap();
        let addr = TX_BASE + (self.tx_slot % 16) * TX_SLOT;
        self.tx_slot += 1;
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(data, GuestAddress(addr + HDR_SIZE as u64))
            .unwrap();
        let len = u32::try_from(HDR_SIZE + data.len()).unwrap();
        self.txq.add_chain(&[rd(addr, len)]);
        self.notify(TXQ_INDEX);
    }

    /// The host connects to guest port `port`; the guest accepts. Returns the client and the
    /// host port the device allocated.
    pub(super) fn host_connect(&mut self, port: u32, guest_port: u32) -> (UnixStream, u32) {
        let mut c = UnixStream::connect(&self.uds).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        self.pump();
        let pkts = self.recv_pump();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let req = pkts[0].0;
        assert_eq!(req.op, op::REQUEST);
        assert_eq!(
            (req.src_cid, req.dst_cid, req.dst_port),
            (2, GUEST_CID, port)
        );
        let _ = guest_port;
        self.send(reply(&req, op::RESPONSE), &[]);
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            c.read_exact(&mut b).unwrap();
            line.push(b[0]);
        }
        assert_eq!(line, format!("OK {}\n", req.src_port).into_bytes());
        (c, req.src_port)
    }
}

/// A guest packet from `src_port` to host port `dst_port`.
pub(super) fn ghdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: 2,
        src_port,
        dst_port,
        type_: packet::TYPE_STREAM,
        op,
        buf_alloc: BUF_ALLOC,
        ..Header::default()
    }
}

/// The guest's answer to a device packet.
pub(super) fn reply(to: &Header, op: u16) -> Header {
    ghdr(op, to.dst_port, to.src_port)
}

pub(super) fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

pub(super) fn assert_eof(s: &mut UnixStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF, got {other:?}"),
    }
}

#[test]
fn test_identity_and_config() {
    let h = H::new();
    let mut dev = h.dev();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(dev.avail_features(), (1 << 32) | (1 << 35) | (1 << 29));
    let mut b = [0u8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), GUEST_CID);
    let mut b = [0u8; 4];
    dev.read_config(4, &mut b);
    assert_eq!(b, [0; 4]);
    dev.write_config(0, &[1]);
    assert_eq!(dev.metrics().cfg_fails.count(), 1);
    assert_eq!(dev.cid(), GUEST_CID);
    assert_eq!(dev.queues().len(), 3);
}

#[test]
fn test_bind_errors_have_firecracker_texts() {
    let h = H::new();
    let err = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: h.uds.clone(),
    })
    .unwrap_err();
    assert_eq!(
        format!("Vsock config error: {err}"),
        "Vsock config error: Cannot create backend for vsock device: Error binding to the \
         host-side Unix socket: Address already in use (os error 98)"
    );
    let err = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: h.dir.as_path().join("nodir/x.sock"),
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot create backend for vsock device: Error binding to the host-side Unix socket: \
         No such file or directory (os error 2)"
    );
}

#[test]
fn test_host_initiated_connect_and_echo_both_ways() {
    let mut h = H::new();
    let mut c = UnixStream::connect(&h.uds).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The line may arrive in pieces; bytes after it are stream data.
    c.write_all(b"conn").unwrap();
    h.pump();
    assert_eq!(h.dev().handshake_count(), 1);
    c.write_all(b"ect 52\nearly").unwrap();
    h.pump();
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    let req = pkts[0].0;
    assert_eq!(req.op, op::REQUEST);
    assert_eq!(req.src_port, 1 << 30);
    assert_eq!(req.dst_port, 52);
    assert_eq!(req.buf_alloc, TX_BUF_SIZE);
    h.send(reply(&req, op::RESPONSE), &[]);
    assert_eq!(read_exactly(&mut c, 14), b"OK 1073741824\n");
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RW);
    assert_eq!(pkts[0].1, b"early");
    c.write_all(b"hello").unwrap();
    h.pump();
    let pkts = h.recv_pump();
    assert_eq!(
        (pkts[0].0.op, pkts[0].1.as_slice()),
        (op::RW, &b"hello"[..])
    );
    h.send(reply(&req, op::RW), b"world");
    assert_eq!(read_exactly(&mut c, 5), b"world");
    let m = h.dev().metrics().clone();
    assert_eq!(m.rx_bytes_count.count(), 10);
    assert_eq!(m.tx_bytes_count.count(), 5);
    assert_eq!(m.conns_added.count(), 1);
    // A second connection gets the next host port.
    let (_c2, port2) = h.host_connect(53, 0);
    assert_eq!(port2, (1 << 30) + 1);
    assert_eq!(h.dev().connection_count(), 2);
}

#[test]
fn test_host_connect_without_guest_listener_closes_client() {
    let mut h = H::new();
    let mut c = UnixStream::connect(&h.uds).unwrap();
    c.write_all(b"CONNECT 99\n").unwrap();
    h.pump();
    let pkts = h.recv_pump();
    h.send(reply(&pkts[0].0, op::RST), &[]);
    assert_eq!(h.dev().connection_count(), 0);
    assert_eof(&mut c);
}

#[test]
fn test_bad_connect_lines_close_client() {
    let mut h = H::new();
    for line in [
        &b"HELLO 5\n"[..],
        b"CONNECT\n",
        b"CONNECT -1\n",
        b"CONNECT 99999999999\n",
        b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    ] {
        let mut c = UnixStream::connect(&h.uds).unwrap();
        c.write_all(line).unwrap();
        h.pump();
        if line.len() < CONNECT_LINE_MAX && !line.ends_with(b"\n") {
            drop(c);
            continue;
        }
        assert_eof(&mut c);
    }
    // A client that hangs up mid-line is dropped too.
    let c = UnixStream::connect(&h.uds).unwrap();
    (&c).write_all(b"CONN").unwrap();
    h.pump();
    drop(c);
    h.pump();
    assert_eq!(h.dev().handshake_count(), 0);
    assert_eq!(h.dev().connection_count(), 0);
    assert!(h.recv_pump().is_empty());
    assert_eq!(super::muxer::parse_connect(b"connect 7\n"), Some(7));
    assert_eq!(super::muxer::parse_connect(b"CoNnEcT   8 extra\n"), Some(8));
}

#[test]
fn test_guest_initiated_connect_and_data() {
    let mut h = H::new();
    let listener = UnixListener::bind(h.dir.as_path().join("v.sock_52")).unwrap();
    h.send(ghdr(op::REQUEST, 1234, 52), &[]);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    let resp = pkts[0].0;
    assert_eq!(resp.op, op::RESPONSE);
    assert_eq!((resp.src_port, resp.dst_port), (52, 1234));
    assert_eq!((resp.src_cid, resp.dst_cid), (2, GUEST_CID));
    h.send(ghdr(op::RW, 1234, 52), b"ping");
    assert_eq!(read_exactly(&mut s, 4), b"ping");
    s.write_all(b"pong").unwrap();
    h.pump();
    let pkts = h.recv_pump();
    assert_eq!((pkts[0].0.op, pkts[0].1.as_slice()), (op::RW, &b"pong"[..]));
    assert_eq!(
        pkts[0].0.fwd_cnt, 4,
        "fwd_cnt counts bytes written to the host"
    );
}

#[test]
fn test_guest_connect_without_host_listener_gets_rst() {
    let mut h = H::new();
    h.send(ghdr(op::REQUEST, 1234, 77), &[]);
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (77, 1234));
    assert_eq!(h.dev().connection_count(), 0);
}

#[test]
fn test_unroutable_packets() {
    let mut h = H::new();
    // Another destination CID: dropped silently.
    let mut p = ghdr(op::REQUEST, 1, 2);
    p.dst_cid = 7;
    h.send(p, &[]);
    // Not a stream: RST.
    let mut p = ghdr(op::REQUEST, 1, 3);
    p.type_ = 2;
    h.send(p, &[]);
    // Data for no connection: RST.
    h.send(ghdr(op::RW, 1, 4), b"x");
    // A malformed chain (too short for a header) is returned unread.
    h.txq.add_chain(&[rd(TX_BASE, 10)]);
    h.notify(TXQ_INDEX);
    let pkts = h.recv_pump();
    let ports: Vec<_> = pkts.iter().map(|p| (p.0.op, p.0.src_port)).collect();
    assert_eq!(ports, vec![(op::RST, 3), (op::RST, 4)]);
    assert_eq!(h.txq.used_idx(), 4);
}

#[test]
fn test_shutdown_from_guest_and_from_host_reaps() {
    let mut h = H::new();
    // Guest shuts down both directions: RST to the guest, host sees EOF.
    let (mut c, port) = h.host_connect(52, 0);
    let mut sd = ghdr(op::SHUTDOWN, 52, port);
    sd.flags = packet::SHUTDOWN_RCV | packet::SHUTDOWN_SEND;
    h.send(sd, &[]);
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!(h.dev().connection_count(), 0);
    assert_eof(&mut c);
    // Host closes: SHUTDOWN to the guest; the guest's RST reaps.
    let (c, port) = h.host_connect(53, 0);
    drop(c);
    h.pump();
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::SHUTDOWN);
    assert_eq!(pkts[0].0.flags, 3);
    h.send(ghdr(op::RST, 53, port), &[]);
    assert_eq!(h.dev().connection_count(), 0);
    // Host closes and the guest never answers: the kill timer resets it.
    h.dev().muxer.shutdown_timeout = Duration::from_millis(50);
    let (c, _) = h.host_connect(54, 0);
    drop(c);
    h.pump();
    assert_eq!(h.recv_pump()[0].0.op, op::SHUTDOWN);
    h.pump_for(Duration::from_millis(120));
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!(h.dev().connection_count(), 0);
    assert_eq!(h.dev().metrics().conns_killed.count(), 1);
}

#[test]
fn test_unanswered_host_request_times_out() {
    let mut h = H::new();
    h.dev().muxer.request_timeout = Duration::from_millis(50);
    let mut c = UnixStream::connect(&h.uds).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    h.pump();
    assert_eq!(h.recv_pump()[0].0.op, op::REQUEST);
    h.pump_for(Duration::from_millis(120));
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RST);
    assert_eq!(h.dev().connection_count(), 0);
    assert_eof(&mut c);
}

/// A guest SHUTDOWN answered with RST in the same event-loop round (RX buffers already
/// posted) drops the connection's interest and the connection itself in one batch of
/// changes: its socket must stay open until the loop applied the `Remove`, or the loop
/// keeps the stale fd and refuses the next connection that reuses the number.
#[test]
fn test_connections_reaped_in_one_round_do_not_poison_reused_fds() {
    let mut h = H::new();
    let listener = UnixListener::bind(h.dir.as_path().join("v.sock_52")).unwrap();
    for gport in 1000..1004 {
        h.send(ghdr(op::REQUEST, gport, 52), &[]);
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(h.recv_pump()[0].0.op, op::RESPONSE);
        s.write_all(b"pong").unwrap();
        h.pump();
        let pkts = h.recv_pump();
        assert_eq!(
            (pkts[0].0.op, pkts[0].1.as_slice()),
            (op::RW, &b"pong"[..]),
            "connection from guest port {gport}"
        );
        let mut sd = ghdr(op::SHUTDOWN, gport, 52);
        sd.flags = packet::SHUTDOWN_RCV | packet::SHUTDOWN_SEND;
        h.send(sd, &[]);
        let pkts = h.recv();
        assert_eq!(pkts.len(), 1);
        assert_eq!(pkts[0].0.op, op::RST);
        assert_eq!(h.dev().connection_count(), 0);
        assert_eof(&mut s);
    }
}
