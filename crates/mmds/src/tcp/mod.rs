//! The MMDS TCP listener (Firecracker's `TcpIPv4Handler`, rewritten): demultiplexes guest
//! segments to at most [`MAX_CONNECTIONS`] connections keyed by (guest address, guest port),
//! opens connections on a bare `SYN`, evicts an idle one when full, answers stray segments with
//! `RST` (queued, at most [`MAX_PENDING_RESETS`]), and picks the next segment to send.
//!
//! Owned by one [`crate::MmdsNetworkStack`]; single-threaded; time is passed in.

pub mod connection;

use std::net::Ipv4Addr;

use connection::{Connection, Status};

use crate::metrics::{MmdsMetrics, inc};
use crate::wire::{
    ACK, IPV4_HDR_LEN, PROTOCOL_TCP, RST, SYN, TCP_HDR_LEN, TcpOut, TcpSegment, write_ipv4_header,
    write_tcp,
};

/// Concurrent connections (Firecracker's default).
pub const MAX_CONNECTIONS: usize = 30;
/// Queued `RST`s (Firecracker's default).
pub const MAX_PENDING_RESETS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tuple {
    addr: Ipv4Addr,
    port: u16,
}

#[derive(Debug, Clone, Copy)]
struct PendingRst {
    to: Tuple,
    seq: u32,
    ack: u32,
    flags: u8,
}

/// The listener.
#[derive(Debug)]
pub struct TcpHandler {
    local_addr: Ipv4Addr,
    local_port: u16,
    conns: Vec<(Tuple, Connection)>,
    rsts: Vec<PendingRst>,
    next_conn: usize,
    isn: u32,
}

impl TcpHandler {
    /// A listener on `local_addr:local_port`.
    pub fn new(local_addr: Ipv4Addr, local_port: u16) -> Self {
        let mut seed = [0u8; 4];
        // A failed random source only makes initial sequence numbers predictable.
        let _ = getrandom::fill(&mut seed);
        Self {
            local_addr,
            local_port,
            conns: Vec::with_capacity(MAX_CONNECTIONS),
            rsts: Vec::new(),
            next_conn: 0,
            isn: u32::from_le_bytes(seed),
        }
    }

    /// The listening port.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Changes the local address.
    pub fn set_local_addr(&mut self, addr: Ipv4Addr) {
        self.local_addr = addr;
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn next_isn(&mut self) -> u32 {
        // Spread connections far apart in sequence space; xorshift for unpredictability-lite.
        let mut x = self.isn;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.isn = x;
        x
    }

    fn queue_rst(&mut self, to: Tuple, seq: u32, ack: u32, flags: u8) {
        if self.rsts.len() < MAX_PENDING_RESETS {
            self.rsts.push(PendingRst {
                to,
                seq,
                ack,
                flags,
            });
        }
    }

    fn queue_rst_for(&mut self, to: Tuple, s: &TcpSegment<'_>) {
        if s.flags & ACK != 0 {
            self.queue_rst(to, s.ack, 0, RST);
        } else {
            self.queue_rst(to, 0, s.seq.wrapping_add(s.seq_len()), RST | ACK);
        }
    }

    /// Handles a segment from `src` (already checked to be for our address). Returns `false`
    /// for a segment to another port (counted as an error by the caller).
    pub fn receive(
        &mut self,
        src: Ipv4Addr,
        s: &TcpSegment<'_>,
        now: u64,
        respond: &mut dyn FnMut(&[u8]) -> Vec<u8>,
        metrics: &MmdsMetrics,
    ) -> bool {
        if s.dst_port != self.local_port {
            return false;
        }
        let tuple = Tuple {
            addr: src,
            port: s.src_port,
        };
        if let Some(i) = self.conns.iter().position(|(t, _)| *t == tuple) {
            let outcome = self.conns[i].1.receive(s, now, respond);
            if outcome.unusual {
                inc(&metrics.rx_accepted_unusual);
            }
            if self.conns[i].1.is_done() {
                self.conns.remove(i);
                inc(&metrics.connections_destroyed);
            }
            return true;
        }
        if s.flags & (SYN | ACK | RST | crate::wire::FIN) == SYN {
            let isn = self.next_isn();
            let Some(conn) = Connection::passive_open(s, isn, now) else {
                inc(&metrics.rx_accepted_unusual);
                return true;
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                let Some(victim) = self.conns.iter().position(|(_, c)| c.is_evictable(now)) else {
                    self.queue_rst_for(tuple, s);
                    inc(&metrics.rx_accepted_unusual);
                    return true;
                };
                let (t, old) = self.conns.remove(victim);
                let (seq, ack, flags) = old.rst_fields();
                self.queue_rst(t, seq, ack, flags);
                inc(&metrics.connections_destroyed);
            }
            self.conns.push((tuple, conn));
            inc(&metrics.connections_created);
        } else if s.flags & RST == 0 {
            self.queue_rst_for(tuple, s);
            inc(&metrics.rx_accepted_unusual);
        }
        true
    }

    /// Whether a segment can be written now.
    pub fn has_pending(&self, now: u64) -> bool {
        !self.rsts.is_empty()
            || self
                .conns
                .iter()
                .any(|(_, c)| c.status(now) == Status::Available)
    }

    /// The earliest timer among connections waiting for one.
    pub fn next_deadline(&self) -> Option<u64> {
        self.conns
            .iter()
            .filter_map(|(_, c)| match c.status(0) {
                Status::Timeout(d) => Some(d),
                _ => None,
            })
            .min()
    }

    /// Writes the next IPv4 packet into `buf` (`RST`s first, then connections round-robin).
    /// Returns its length, or `None` if nothing is due or `buf` cannot hold even a header.
    pub fn write_next(&mut self, buf: &mut [u8], now: u64, metrics: &MmdsMetrics) -> Option<usize> {
        // 20 bytes IPv4, 24 bytes TCP with the SYN-ACK's MSS option.
        let max_payload = buf.len().checked_sub(IPV4_HDR_LEN + TCP_HDR_LEN + 4)?;
        if let Some(r) = self.rsts.pop() {
            let seg = TcpOut {
                src: self.local_addr,
                dst: r.to.addr,
                src_port: self.local_port,
                dst_port: r.to.port,
                seq: r.seq,
                ack: r.ack,
                flags: r.flags,
                window: 0,
                mss: None,
                payload: &[],
            };
            return Self::write_packet(buf, &seg);
        }
        let n = self.conns.len();
        for k in 0..n {
            let i = (self.next_conn + k) % n;
            if self.conns[i].1.status(now) != Status::Available {
                continue;
            }
            let (tuple, conn) = &mut self.conns[i];
            let tuple = *tuple;
            let Some(seg) = conn.next_segment(now, max_payload) else {
                continue;
            };
            let (a, b) = seg.payload;
            let out = TcpOut {
                src: self.local_addr,
                dst: tuple.addr,
                src_port: self.local_port,
                dst_port: tuple.port,
                seq: seg.seq,
                ack: seg.ack,
                flags: seg.flags,
                window: seg.window,
                mss: seg.mss,
                payload: conn.out_bytes().get(a..b).unwrap_or(&[]),
            };
            let len = Self::write_packet(buf, &out);
            if self.conns[i].1.is_done() {
                self.conns.remove(i);
                inc(&metrics.connections_destroyed);
            }
            self.next_conn = if n > 1 { (i + 1) % n } else { 0 };
            return len;
        }
        None
    }

    fn write_packet(buf: &mut [u8], seg: &TcpOut<'_>) -> Option<usize> {
        let tcp_len = write_tcp(buf.get_mut(IPV4_HDR_LEN..)?, seg)?;
        write_ipv4_header(buf, seg.src, seg.dst, PROTOCOL_TCP, tcp_len)?;
        Some(IPV4_HDR_LEN + tcp_len)
    }
}
