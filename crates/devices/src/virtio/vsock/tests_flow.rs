//! virtio-vsock tests of flow control, limits, fd hygiene, reset and snapshot restore (the
//! harness is in `tests.rs`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::packet::{Header, op};
use super::tests::{BUF_ALLOC, EV_BASE, H, assert_eof, ghdr, read_exactly, reply};
use super::*;
use crate::persist::Persist;
use crate::virtio::{InterruptKind, VirtioDevice};

/// The socket inode behind each fd (`/proc/self/fd/N` → `socket:[inode]`).
fn inodes(fds: &[RawFd]) -> HashMap<RawFd, String> {
    fds.iter()
        .map(|&fd| {
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            (fd, link.to_string_lossy().into_owned())
        })
        .collect()
}

/// Every fd is closed (or now names a different file: the number was reused elsewhere).
fn assert_closed(before: &HashMap<RawFd, String>) {
    for (fd, link) in before {
        if let Ok(now) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            assert_ne!(&now.to_string_lossy(), link, "fd {fd} leaked");
        }
    }
}

fn pattern(from: usize, n: usize) -> Vec<u8> {
    (from..from + n)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect()
}

/// A guest-initiated connection from guest port `gp` to a host listener at port 52.
fn guest_conn(h: &mut H, l: &UnixListener, gp: u32, buf_alloc: u32) -> UnixStream {
    let mut req = ghdr(op::REQUEST, gp, 52);
    req.buf_alloc = buf_alloc;
    h.send(req, &[]);
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::RESPONSE);
    s
}

fn listener(h: &H) -> UnixListener {
    UnixListener::bind(h.dir.as_path().join("v.sock_52")).unwrap()
}

#[test]
fn test_slow_host_reader_is_bounded_and_recovers() {
    let mut h = H::new();
    let l = listener(&h);
    let mut s = guest_conn(&mut h, &l, 1000, BUF_ALLOC);
    // A guest that respects credit sends until it has none left: the host reads nothing, so
    // the device's buffer fills up to (never past) the credit it advertised.
    let mut sent = 0usize;
    let mut heard_fwd = 0usize;
    loop {
        let credit = TX_BUF_SIZE as usize - (sent - heard_fwd);
        if credit > 0 {
            let n = credit.min(60_000);
            h.send(ghdr(op::RW, 1000, 52), &pattern(sent, n));
            sent += n;
        }
        let buffered = h.dev().muxer.connection(52, 1000).unwrap().tx_buffered();
        assert!(buffered <= TX_BUF_SIZE as usize);
        let mut heard = false;
        for p in h.recv_pump() {
            assert_eq!(p.0.op, op::CREDIT_UPDATE);
            heard_fwd = p.0.fwd_cnt as usize;
            heard = true;
        }
        if credit == 0 && !heard {
            break;
        }
        assert!(sent < 10_000_000, "the host socket never filled up");
    }
    assert!(h.dev().muxer.connection(52, 1000).unwrap().tx_buffered() > 0);
    // The host drains: EPOLLOUT flushes the buffer and the guest is told about the space.
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..10_000 {
        match s.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        h.pump();
        if got.len() == sent {
            break;
        }
    }
    assert_eq!(got.len(), sent);
    assert!(got == pattern(0, sent), "bytes reordered or corrupted");
    assert_eq!(h.dev().muxer.connection(52, 1000).unwrap().tx_buffered(), 0);
    let pkts = h.recv_pump();
    let update = pkts.iter().find(|p| p.0.op == op::CREDIT_UPDATE).unwrap();
    assert_eq!(update.0.fwd_cnt as usize, sent);
    assert_eq!(update.0.buf_alloc, TX_BUF_SIZE);
}

#[test]
fn test_guest_ignoring_credit_gets_rst() {
    let mut h = H::new();
    let l = listener(&h);
    let mut s = guest_conn(&mut h, &l, 1000, BUF_ALLOC);
    let mut rst = false;
    for i in 0..200 {
        h.send(ghdr(op::RW, 1000, 52), &pattern(i, 65_536));
        if let Some(c) = h.dev().muxer.connection(52, 1000) {
            assert!(c.tx_buffered() <= TX_BUF_SIZE as usize);
        }
        let pkts = h.recv_pump();
        if pkts.iter().any(|p| p.0.op == op::RST) {
            rst = true;
            break;
        }
    }
    assert!(rst, "credit abuse never reset the connection");
    assert_eq!(h.dev().connection_count(), 0);
    // The host side is closed once what it had buffered is read.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).unwrap();
}

#[test]
fn test_host_to_guest_respects_guest_credit() {
    let mut h = H::new();
    let l = listener(&h);
    let mut s = guest_conn(&mut h, &l, 1000, 8);
    s.write_all(&pattern(0, 20)).unwrap();
    h.pump();
    let pkts = h.recv_pump();
    let ops: Vec<_> = pkts.iter().map(|p| (p.0.op, p.1.len())).collect();
    assert_eq!(ops, vec![(op::RW, 8), (op::CREDIT_REQUEST, 0)]);
    assert_eq!(pkts[0].1, pattern(0, 8));
    let mut upd = ghdr(op::CREDIT_UPDATE, 1000, 52);
    upd.buf_alloc = 8;
    upd.fwd_cnt = 8;
    h.send(upd, &[]);
    let pkts = h.recv_pump();
    assert_eq!(pkts[0].0.op, op::RW);
    assert_eq!(pkts[0].1, pattern(8, 8));
    upd.fwd_cnt = 16;
    h.send(upd, &[]);
    let pkts = h.recv_pump();
    assert_eq!(pkts[0].1, pattern(16, 4));
    // A credit request is answered with an update.
    h.send(ghdr(op::CREDIT_REQUEST, 1000, 52), &[]);
    let pkts = h.recv_pump();
    assert_eq!(pkts.last().unwrap().0.op, op::CREDIT_UPDATE);
}

#[test]
fn test_max_connections_then_all_closed_without_fd_leaks() {
    let mut h = H::new();
    let l = listener(&h);
    let mut hosts = Vec::new();
    for i in 0..u32::try_from(MAX_CONNECTIONS).unwrap() {
        hosts.push(guest_conn(&mut h, &l, 10_000 + i, BUF_ALLOC));
    }
    assert_eq!(h.dev().connection_count(), MAX_CONNECTIONS);
    // One more is refused with RST.
    h.send(ghdr(op::REQUEST, 9, 52), &[]);
    let pkts = h.recv_pump();
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (op::RST, 9));
    // ... and so is a host client.
    let mut refused = UnixStream::connect(&h.uds).unwrap();
    h.pump();
    assert_eof(&mut refused);
    let fds = h.dev().muxer.socket_fds();
    assert_eq!(fds.len(), MAX_CONNECTIONS);
    let before = inodes(&fds);
    for i in 0..u32::try_from(MAX_CONNECTIONS).unwrap() {
        h.send(ghdr(op::RST, 10_000 + i, 52), &[]);
    }
    assert_eq!(h.dev().connection_count(), 0);
    assert_closed(&before);
    for s in &mut hosts {
        assert_eof(s);
    }
    let m = h.dev().metrics().clone();
    assert_eq!(m.conns_added.count(), MAX_CONNECTIONS as u64);
    assert_eq!(m.conns_removed.count(), MAX_CONNECTIONS as u64);
}

#[test]
fn test_reset_drops_everything() {
    let mut h = H::new();
    let l = listener(&h);
    let (mut c1, _) = h.host_connect(52, 0);
    let mut s1 = guest_conn(&mut h, &l, 1000, BUF_ALLOC);
    let mut pending = UnixStream::connect(&h.uds).unwrap();
    pending.write_all(b"CONN").unwrap();
    h.pump();
    assert_eq!(h.dev().handshake_count(), 1);
    let before = inodes(&h.dev().muxer.socket_fds());
    assert_eq!(before.len(), 3);
    h.dev().reset();
    h.pump();
    assert!(!h.dev().is_activated());
    assert_eq!(h.dev().connection_count(), 0);
    assert_eq!(h.dev().handshake_count(), 0);
    assert_closed(&before);
    assert_eof(&mut c1);
    assert_eof(&mut s1);
    assert_eof(&mut pending);
    // While inactive, new clients wait in the backlog.
    let _waiting = UnixStream::connect(&h.uds).unwrap();
    h.pump();
    assert_eq!(h.dev().handshake_count(), 0);
}

/// The event queue's first buffer holds TRANSPORT_RESET.
fn assert_reset_event(h: &H) {
    let ev: u32 = h.mem.read_obj(GuestAddress(EV_BASE)).unwrap();
    assert_eq!(ev, EVENT_TRANSPORT_RESET);
}

/// `CONNECT 52` from a new host client is held (RX gated) until the driver notifies the event
/// queue, then arrives as a REQUEST; returns its header.
fn request_waits_for_the_ack(h: &mut H, c: &mut UnixStream) -> Header {
    c.write_all(b"CONNECT 52\n").unwrap();
    h.pump();
    assert!(h.recv_pump().is_empty(), "RX must wait for the reset's ack");
    h.notify(EVQ_INDEX);
    let pkts = h.recv_pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, op::REQUEST);
    pkts[0].0
}

/// As Firecracker (`prepare_save`): creating a snapshot writes TRANSPORT_RESET into the event
/// queue and interrupts the driver, so the source VM drops its connections when resumed; the
/// snapshot carries the unacknowledged event; a restored device does not write a second one
/// but interrupts the event queue again on activation and holds RX until the ack.
#[test]
fn test_snapshot_round_trip_and_transport_reset() {
    let mut h = H::new();
    let (_c, port) = h.host_connect(52, 0);
    assert_eq!(port, 1 << 30);
    h.mem
        .write_slice(&[0xff; 8], GuestAddress(EV_BASE))
        .unwrap();
    let irqs = h.irq.kinds().len();
    h.dev().prepare_save();
    assert_eq!(h.evq.used_idx(), 1);
    assert_eq!(h.evq.used_elem(0).1, 4);
    assert_reset_event(&h);
    assert!(h.irq.kinds()[irqs..].contains(&InterruptKind::Queue(2)));
    let state = h.dev().save();
    assert_eq!(state.guest_cid, 3);
    assert_eq!(state.uds_path, h.uds);
    assert_eq!(state.acked_features, 0);
    assert!(state.pending_event_ack && !state.reset_event_pending);
    let json = serde_json::to_string(&state).unwrap();
    let back: VsockState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    // The resumed source: RX is held until its driver acknowledges the reset.
    let mut c = UnixStream::connect(&h.uds).unwrap();
    let req = request_waits_for_the_ack(&mut h, &mut c);
    assert_eq!(req.src_port, (1 << 30) + 1);
    // The source still holds its socket: restoring at the same path fails like Firecracker.
    let err = Vsock::restore(VsockConstructorArgs::default(), &back).unwrap_err();
    assert!(err.to_string().contains("Address already in use"), "{err}");
    // vsock_override.
    let dir = TempDir::new_with_prefix("/tmp/squib-vsock-").unwrap();
    let uds2 = dir.as_path().join("v2.sock");
    let mut restored = Vsock::restore(
        VsockConstructorArgs {
            uds_path_override: Some(uds2.clone()),
        },
        &back,
    )
    .unwrap();
    assert!(!restored.is_activated());
    restored.ack_features(1 << 32);
    let mut again = restored.save();
    assert_eq!(again.uds_path, uds2);
    again.uds_path = state.uds_path.clone();
    again.acked_features = 0;
    assert_eq!(again, state);
    // Activation after the restore: the event is already in the (restored) guest memory, so
    // nothing new is written; the event queue is interrupted again.
    let mut h2 = H::with_device(restored, dir, uds2.clone(), false);
    h2.activate();
    assert_eq!(h2.evq.used_idx(), 0, "no second reset event");
    assert_eq!(h2.irq.kinds(), vec![InterruptKind::Queue(2)]);
    let mut c = UnixStream::connect(&uds2).unwrap();
    let req = request_waits_for_the_ack(&mut h2, &mut c);
    assert_eq!(req.src_port, (1 << 30) + 1, "host ports continue");
    h2.send(reply(&req, op::RESPONSE), &[]);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_exactly(&mut c, 14), b"OK 1073741825\n");
    // Acknowledged: a later snapshot of the restored VM announces a new reset.
    assert!(!h2.dev().save().pending_event_ack);
    let _ = Header::default();
}

/// A snapshot created while the driver has no free event buffer: the reset waits (RX gated),
/// travels in the snapshot, and the restored device delivers it into the first buffer on
/// activation. An inactive device announces nothing.
#[test]
fn test_transport_reset_without_an_event_buffer_waits_and_survives_a_snapshot() {
    let mut h = H::new();
    h.dev().prepare_save(); // takes the only event buffer
    h.notify(EVQ_INDEX); // acknowledged
    h.dev().prepare_save(); // no buffer left
    let state = h.dev().save();
    assert!(state.reset_event_pending && !state.pending_event_ack);
    assert_eq!(h.evq.used_idx(), 1);
    let dir = TempDir::new_with_prefix("/tmp/squib-vsock-").unwrap();
    let uds2 = dir.as_path().join("v2.sock");
    let args = VsockConstructorArgs {
        uds_path_override: Some(uds2.clone()),
    };
    let restored = Vsock::restore(args, &state).unwrap();
    let mut h2 = H::with_device(restored, dir, uds2.clone(), false);
    h2.mem
        .write_slice(&[0xff; 8], GuestAddress(EV_BASE))
        .unwrap();
    h2.activate(); // posts one event buffer first
    assert_eq!(h2.evq.used_idx(), 1);
    assert_reset_event(&h2);
    let saved = h2.dev().save();
    assert!(saved.pending_event_ack && !saved.reset_event_pending);
    let mut c = UnixStream::connect(&uds2).unwrap();
    let _ = request_waits_for_the_ack(&mut h2, &mut c);

    let dir = TempDir::new_with_prefix("/tmp/squib-vsock-").unwrap();
    let uds3 = dir.as_path().join("v3.sock");
    let mut idle = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path: uds3,
    })
    .unwrap();
    idle.prepare_save();
    let s = idle.save();
    assert!(!s.pending_event_ack && !s.reset_event_pending);
}
