//! One vsock connection: a guest `AF_VSOCK` stream bridged to a host `AF_UNIX` stream.
//!
//! A [`Connection`] is a state machine ([`ConnState`]) driven from three directions: guest
//! packets ([`Connection::send_pkt`]), host socket readiness ([`Connection::notify`]) and RX
//! buffers the driver offers ([`Connection::recv_pkt`], which yields the next packet the
//! connection owes the guest). Packets owed are a small set of flags, so a connection never
//! queues more than one of each kind.
//!
//! Flow control is virtio-vsock's credit scheme. Every packet to the guest advertises
//! `buf_alloc` = [`TX_BUF_SIZE`] and `fwd_cnt` = bytes written to the host socket; the guest may
//! have at most `buf_alloc` bytes in flight, which is exactly what the TX buffer holds, so a
//! guest that ignores credit overflows the buffer and gets an RST. In the other direction the
//! connection reads from the host socket no more than the guest's advertised free space
//! (`peer_buf_alloc - (rx_cnt - peer_fwd_cnt)`), stops polling the socket while that is zero,
//! and asks with `CREDIT_REQUEST`. A `CREDIT_UPDATE` is sent proactively once the guest's view of
//! our free space falls under 4 KiB. Timeouts: a host-initiated request not answered, or a
//! shutdown not completed, within 2 s gets the connection killed by the muxer's kill queue.
//!
//! The protocol follows Firecracker's `csm/connection.rs`. Threading: owned by the muxer on the
//! VMM thread; the host socket is nonblocking.

use std::io::{self, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use event_manager::EventSet;

use super::metrics::VsockMetrics;
use super::packet::{HOST_CID, Header, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, op};
use super::txbuf::{TX_BUF_SIZE, TxBuf};
use crate::log::RateLimitedLog;
use crate::metrics::len_u64;
use crate::{rl_info, rl_warn};

/// Below this much free space (as the guest last heard), send a credit update.
pub const CREDIT_UPDATE_THRESHOLD: u32 = 4 * 1024;
/// How long a host-initiated request may wait for the guest's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a shutdown may take before the connection is reset.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection states (Firecracker's `ConnState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated, waiting for the guest's RESPONSE.
    LocalInit,
    /// Guest-initiated, our RESPONSE not yet delivered.
    PeerInit,
    /// Data flows both ways.
    Established,
    /// The host socket reached EOF; SHUTDOWN sent to the guest.
    LocalClosed,
    /// The guest sent SHUTDOWN: (will not receive, will not send).
    PeerClosed(bool, bool),
    /// To be reset as soon as an RX buffer is available.
    Killed,
}

/// Packets a connection owes the guest (bit set).
mod pending {
    pub(super) const REQUEST: u8 = 1;
    pub(super) const RESPONSE: u8 = 2;
    pub(super) const RST: u8 = 4;
    pub(super) const RW: u8 = 8;
    pub(super) const CREDIT_UPDATE: u8 = 16;
}

/// Shared context of connection operations.
pub(crate) struct Ctx<'a> {
    pub(crate) metrics: &'a VsockMetrics,
    pub(crate) log: &'a RateLimitedLog,
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// One connection (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Connection {
    state: ConnState,
    pub(crate) local_port: u32,
    pub(crate) peer_port: u32,
    peer_cid: u64,
    pub(crate) stream: UnixStream,
    tx_buf: TxBuf,
    fwd_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    last_fwd_cnt_to_peer: Wrapping<u32>,
    pending: u8,
    expiry: Option<Instant>,
    /// The event-loop token of `stream`.
    pub(crate) token: u32,
    /// The interest set `stream` is registered with (empty: not registered).
    pub(crate) registered: EventSet,
}

impl Connection {
    fn new(
        stream: UnixStream,
        peer_cid: u64,
        local_port: u32,
        peer_port: u32,
        token: u32,
        state: ConnState,
    ) -> Self {
        Self {
            state,
            local_port,
            peer_port,
            peer_cid,
            stream,
            tx_buf: TxBuf::default(),
            fwd_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            pending: if state == ConnState::LocalInit {
                pending::REQUEST
            } else {
                pending::RESPONSE
            },
            expiry: None,
            token,
            registered: EventSet::empty(),
        }
    }

    /// A guest-initiated connection (the guest sent REQUEST; RESPONSE is owed).
    pub(crate) fn new_peer_init(
        stream: UnixStream,
        hdr: &Header,
        peer_cid: u64,
        token: u32,
    ) -> Self {
        let mut c = Self::new(
            stream,
            peer_cid,
            hdr.dst_port,
            hdr.src_port,
            token,
            ConnState::PeerInit,
        );
        c.peer_buf_alloc = hdr.buf_alloc;
        c.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        c
    }

    /// A host-initiated connection (REQUEST owed to the guest).
    pub(crate) fn new_local_init(
        stream: UnixStream,
        peer_cid: u64,
        local_port: u32,
        peer_port: u32,
        token: u32,
    ) -> Self {
        Self::new(
            stream,
            peer_cid,
            local_port,
            peer_port,
            token,
            ConnState::LocalInit,
        )
    }

    pub(crate) fn state(&self) -> ConnState {
        self.state
    }

    pub(crate) fn has_pending_rx(&self) -> bool {
        self.pending != 0
    }

    pub(crate) fn expiry(&self) -> Option<Instant> {
        self.expiry
    }

    /// A kill timer is armed and still in the future.
    pub(crate) fn will_expire(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|t| t > now)
    }

    /// The kill timer has fired.
    pub(crate) fn has_expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|t| t <= now)
    }

    /// Schedules an RST; anything still buffered for the host is dropped.
    pub(crate) fn kill(&mut self) {
        self.state = ConnState::Killed;
        self.pending |= pending::RST;
        self.tx_buf.clear();
    }

    /// Writes bytes straight to the host socket, outside flow control (the `OK <port>\n` ack).
    pub(crate) fn send_raw(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn take(&mut self, bit: u8) -> bool {
        let had = self.pending & bit != 0;
        self.pending &= !bit;
        had
    }

    fn header(&self, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.peer_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn peer_avail_credit(&self) -> u32 {
        (Wrapping(self.peer_buf_alloc) - (self.rx_cnt - self.peer_fwd_cnt)).0
    }

    fn peer_needs_credit_update(&self) -> bool {
        let seen_free = Wrapping(TX_BUF_SIZE) - (self.fwd_cnt - self.last_fwd_cnt_to_peer);
        seen_free < Wrapping(CREDIT_UPDATE_THRESHOLD)
    }

    /// The next packet owed to the guest, with up to `room` payload bytes read into `data`.
    pub(crate) fn recv_pkt(
        &mut self,
        room: u32,
        data: &mut [u8],
        ctx: &Ctx<'_>,
    ) -> Option<(Header, usize)> {
        let out = self.next_pkt(room, data, ctx);
        if out.is_some() {
            ctx.metrics.rx_packets_count.inc();
        }
        out
    }

    fn next_pkt(&mut self, room: u32, data: &mut [u8], ctx: &Ctx<'_>) -> Option<(Header, usize)> {
        if self.take(pending::RST) {
            return Some((self.header(op::RST), 0));
        }
        if self.take(pending::RESPONSE) {
            self.state = ConnState::Established;
            return Some((self.header(op::RESPONSE), 0));
        }
        if self.take(pending::REQUEST) {
            self.expiry = Some(Instant::now() + ctx.request_timeout);
            return Some((self.header(op::REQUEST), 0));
        }
        if self.pending & pending::RW != 0
            && let Some(pkt) = self.read_rw(room, data, ctx)
        {
            return Some(pkt);
        }
        // A credit update only when there is nothing else to say.
        if self.pending == pending::CREDIT_UPDATE {
            self.pending = 0;
            self.last_fwd_cnt_to_peer = self.fwd_cnt;
            return Some((self.header(op::CREDIT_UPDATE), 0));
        }
        None
    }

    fn read_rw(&mut self, room: u32, data: &mut [u8], ctx: &Ctx<'_>) -> Option<(Header, usize)> {
        if !matches!(
            self.state,
            ConnState::Established | ConnState::PeerClosed(false, _)
        ) {
            self.pending &= !pending::RW;
            return Some((self.header(op::RST), 0));
        }
        if self.peer_avail_credit() == 0 {
            self.pending &= !pending::RW;
            self.last_fwd_cnt_to_peer = self.fwd_cnt;
            return Some((self.header(op::CREDIT_REQUEST), 0));
        }
        let max = usize::try_from(room.min(self.peer_avail_credit()))
            .unwrap_or(usize::MAX)
            .min(data.len());
        if max == 0 {
            // No payload room in this RX buffer: keep the data for a bigger one.
            return None;
        }
        match self.stream.read(&mut data[..max]) {
            Ok(0) => {
                self.pending &= !pending::RW;
                self.state = ConnState::LocalClosed;
                self.expiry = Some(Instant::now() + ctx.shutdown_timeout);
                let mut h = self.header(op::SHUTDOWN);
                h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                self.last_fwd_cnt_to_peer = self.fwd_cnt;
                Some((h, 0))
            }
            Ok(n) => {
                // n <= max <= room, a u32.
                let len = u32::try_from(n).unwrap_or(u32::MAX);
                let mut h = self.header(op::RW);
                h.len = len;
                ctx.metrics.rx_bytes_count.add(len_u64(n));
                self.rx_cnt += Wrapping(len);
                self.last_fwd_cnt_to_peer = self.fwd_cnt;
                // More may be waiting: stay scheduled.
                Some((h, n))
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                self.pending &= !pending::RW;
                None
            }
            Err(e) => {
                self.pending &= !pending::RW;
                ctx.metrics.rx_read_fails.inc();
                rl_warn!(
                    ctx.log,
                    "vsock: error reading from backing stream: lp={}, pp={}, err={e}",
                    self.local_port,
                    self.peer_port
                );
                self.last_fwd_cnt_to_peer = self.fwd_cnt;
                Some((self.header(op::RST), 0))
            }
        }
    }

    /// Delivers a guest packet (routed here by the muxer; RST and REQUEST are the muxer's).
    pub(crate) fn send_pkt(&mut self, hdr: &Header, data: &[u8], ctx: &Ctx<'_>) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        ctx.metrics.tx_packets_count.inc();
        match (self.state, hdr.op) {
            (ConnState::Established | ConnState::PeerClosed(_, false), op::RW) => {
                if data.is_empty() {
                    return;
                }
                if let Err(err) = self.send_bytes(data, ctx) {
                    rl_warn!(
                        ctx.log,
                        "vsock: error writing to local stream (lp={}, pp={}): {err}",
                        self.local_port,
                        self.peer_port
                    );
                    self.kill();
                    return;
                }
                if self.peer_needs_credit_update() {
                    self.pending |= pending::CREDIT_UPDATE;
                }
            }
            (ConnState::LocalInit, op::RESPONSE) => {
                self.expiry = None;
                self.state = ConnState::Established;
            }
            (ConnState::Established, op::SHUTDOWN) => {
                let recv_off = hdr.flags & SHUTDOWN_RCV != 0;
                let send_off = hdr.flags & SHUTDOWN_SEND != 0;
                self.state = ConnState::PeerClosed(recv_off, send_off);
                if recv_off && send_off {
                    if self.tx_buf.is_empty() {
                        self.pending |= pending::RST;
                    } else {
                        self.expiry = Some(Instant::now() + ctx.shutdown_timeout);
                    }
                }
            }
            (ConnState::PeerClosed(r, s), op::SHUTDOWN) => {
                let recv_off = r || hdr.flags & SHUTDOWN_RCV != 0;
                let send_off = s || hdr.flags & SHUTDOWN_SEND != 0;
                self.state = ConnState::PeerClosed(recv_off, send_off);
                if recv_off && send_off && self.tx_buf.is_empty() {
                    self.pending |= pending::RST;
                }
            }
            (
                ConnState::Established | ConnState::PeerInit | ConnState::PeerClosed(false, _),
                op::CREDIT_UPDATE,
            ) => {}
            (
                ConnState::Established | ConnState::PeerInit | ConnState::PeerClosed(_, false),
                op::CREDIT_REQUEST,
            ) => {
                self.pending |= pending::CREDIT_UPDATE;
            }
            (state, op) => {
                rl_info!(
                    ctx.log,
                    "vsock: dropping invalid TX pkt for connection: state={state:?}, op={op}"
                );
            }
        }
    }

    fn send_bytes(&mut self, data: &[u8], ctx: &Ctx<'_>) -> Result<(), String> {
        if !self.tx_buf.is_empty() {
            // Already waiting for EPOLLOUT: keep the order.
            return self.tx_buf.push(data).map_err(|e| e.to_string());
        }
        let mut written = 0;
        while written < data.len() {
            match self.stream.write(&data[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    ctx.metrics.tx_write_fails.inc();
                    return Err(e.to_string());
                }
            }
        }
        self.fwd_cnt += Wrapping(u32::try_from(written).unwrap_or(u32::MAX));
        ctx.metrics.tx_bytes_count.add(len_u64(written));
        self.tx_buf
            .push(&data[written..])
            .map_err(|e| e.to_string())
    }

    /// The host socket is ready with `events`.
    pub(crate) fn notify(&mut self, events: EventSet, ctx: &Ctx<'_>) {
        let mut handled = false;
        // Events for an interest already dropped can still arrive in the same epoll batch.
        if events.contains(EventSet::IN) && self.registered.contains(EventSet::IN) {
            handled = true;
            self.pending |= pending::RW;
        }
        if events.contains(EventSet::OUT) {
            handled = true;
            if self.tx_buf.is_empty() {
                ctx.metrics.conn_event_fails.inc();
                rl_info!(
                    ctx.log,
                    "vsock: connection received unexpected EPOLLOUT event"
                );
            } else {
                match self.tx_buf.flush_to(&mut self.stream) {
                    Ok(n) => {
                        self.fwd_cnt += Wrapping(u32::try_from(n).unwrap_or(u32::MAX));
                        ctx.metrics.tx_bytes_count.add(len_u64(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        ctx.metrics.tx_flush_fails.inc();
                        rl_warn!(
                            ctx.log,
                            "vsock: error flushing TX buf for (lp={}, pp={}): {e}",
                            self.local_port,
                            self.peer_port
                        );
                        self.kill();
                        return;
                    }
                }
                if self.state == ConnState::PeerClosed(true, true) && self.tx_buf.is_empty() {
                    self.pending |= pending::RST;
                } else if self.peer_needs_credit_update() {
                    self.pending |= pending::CREDIT_UPDATE;
                }
            }
        }
        if !handled
            && !self.registered.is_empty()
            && events.intersects(EventSet::ERROR | EventSet::HANG_UP)
        {
            // An error or hang-up we are not polling for data on: nothing more can flow.
            ctx.metrics.conn_event_fails.inc();
            self.kill();
        }
    }

    /// The readiness this connection wants from its host socket.
    pub(crate) fn polled_events(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        let reads = !matches!(
            self.state,
            ConnState::Killed | ConnState::LocalClosed | ConnState::PeerClosed(true, _)
        ) && self.peer_avail_credit() != 0
            && self.pending & pending::RW == 0;
        if reads {
            ev |= EventSet::IN;
        }
        ev
    }

    /// Bytes waiting in the TX buffer (tests).
    #[cfg(test)]
    pub(crate) fn tx_buffered(&self) -> usize {
        self.tx_buf.len()
    }
}
