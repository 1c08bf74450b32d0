//! The hybrid Unix-socket backend: connection multiplexer between guest vsock ports and host
//! `AF_UNIX` sockets (Firecracker's `VsockMuxer`, `docs/vsock.md`).
//!
//! - Host-initiated: a client connects to `uds_path` and writes `CONNECT <port>\n` (at most 32
//!   bytes; the command word is case-insensitive). The muxer allocates a host port from
//!   `[1 << 30, 1 << 31)` round-robin, sends REQUEST to the guest and, on RESPONSE, writes
//!   `OK <host port>\n` to the client; then bytes stream. A guest RST (nobody listening)
//!   closes the client; so does an unanswered request after 2 s. A malformed command closes it.
//! - Guest-initiated: REQUEST to host port `P` connects to `<uds_path>_<P>`: RESPONSE on
//!   success, RST if nobody listens.
//! - Packets to a CID other than the host's are dropped; a non-stream type, or a packet matching
//!   no connection (other than REQUEST), is answered with RST.
//!
//! At most [`MAX_CONNECTIONS`] connections (Firecracker's 1023) plus pending `CONNECT`
//! handshakes exist at once; beyond that, new clients are accepted and closed and guest requests
//! get RST. Packets owed to the guest wait in the bounded [`RxQueue`]; connections with a
//! timeout in the bounded [`KillQueue`], swept by a timer fd (Firecracker only sweeps when a
//! connection is added; the timer makes the 2 s timeouts hold when the device is idle).
//!
//! Every host socket is an [`EventSource`] of the device: the listener is registered for the
//! device's life (token [`LISTENER_TOKEN`]), handshake and connection sockets come and go
//! through [`EventSourceChange`]s, and follow each connection's interest (IN while it may read,
//! OUT while its TX buffer holds data, unregistered when it wants neither). A closed socket is
//! kept open until the event loop has applied its `Remove` ([`Muxer::changes_applied`]), so an
//! fd number is never reused while the loop still watches it.
//!
//! Threading: owned by the device, used on the VMM thread only.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::VsockUnixBackendError;
use super::connection::{ConnState, Connection, Ctx, REQUEST_TIMEOUT, SHUTDOWN_TIMEOUT};
use super::metrics::VsockMetrics;
use super::packet::{HOST_CID, Header, TYPE_STREAM, op};
use super::queues::{ConnKey, KillQueue, RxItem, RxQueue};
use crate::log::RateLimitedLog;
use crate::virtio::{EventSource, EventSourceChange, MAX_HOST_TOKEN};
use crate::{rl_info, rl_warn};

/// Most connections at once (Firecracker's `MAX_CONNECTIONS`).
pub const MAX_CONNECTIONS: usize = 1023;
/// Longest `CONNECT <port>\n` line read from a host client.
pub const CONNECT_LINE_MAX: usize = 32;
/// Event-source token of the listening socket.
pub const LISTENER_TOKEN: u32 = 0;
/// The first host port handed to host-initiated connections.
const LOCAL_PORT_BASE: u32 = 1 << 30;

/// A host client that has not finished its `CONNECT` line.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    line: [u8; CONNECT_LINE_MAX],
    len: usize,
}

/// The connection multiplexer (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Muxer {
    cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    listening: bool,
    conns: HashMap<ConnKey, Connection>,
    by_token: HashMap<u32, ConnKey>,
    handshakes: HashMap<u32, Handshake>,
    rxq: RxQueue,
    killq: KillQueue,
    local_ports: HashSet<u32>,
    pub(crate) local_port_last: u32,
    next_token: u32,
    changes: Vec<EventSourceChange>,
    graveyard: Vec<UnixStream>,
    timer: [TimerFd; 1],
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    metrics: Arc<VsockMetrics>,
    log: RateLimitedLog,
}

/// Parses `CONNECT <port>` (Firecracker: first word case-insensitive, then a decimal `u32`).
pub(crate) fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("connect") {
        return None;
    }
    words.next()?.parse().ok()
}

fn change_fd(change: &EventSourceChange) -> std::os::fd::RawFd {
    match change {
        EventSourceChange::Add(s) | EventSourceChange::Modify(s) | EventSourceChange::Remove(s) => {
            s.fd
        }
    }
}

fn source(fd: &impl AsRawFd, events: EventSet, token: u32) -> EventSource {
    EventSource {
        fd: fd.as_raw_fd(),
        events,
        token,
    }
}

impl Muxer {
    /// Binds the listening socket at `uds_path` (nonblocking).
    pub(crate) fn new(
        cid: u64,
        uds_path: &Path,
        metrics: Arc<VsockMetrics>,
    ) -> Result<Self, VsockUnixBackendError> {
        let listener = UnixListener::bind(uds_path)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(VsockUnixBackendError::UnixBind)?;
        Ok(Self {
            cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            listening: true,
            conns: HashMap::new(),
            by_token: HashMap::new(),
            handshakes: HashMap::new(),
            rxq: RxQueue::default(),
            killq: KillQueue::default(),
            local_ports: HashSet::new(),
            local_port_last: LOCAL_PORT_BASE - 1,
            next_token: LISTENER_TOKEN,
            changes: Vec::new(),
            graveyard: Vec::new(),
            timer: [TimerFd::new().map_err(|e| VsockUnixBackendError::Timer(e.into()))?],
            request_timeout: REQUEST_TIMEOUT,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            metrics,
            log: RateLimitedLog::default(),
        })
    }

    pub(crate) fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    pub(crate) fn timer_fds(&self) -> &[TimerFd] {
        &self.timer
    }

    pub(crate) fn listener_source(&self) -> EventSource {
        source(&self.listener, EventSet::IN, LISTENER_TOKEN)
    }

    /// Connections currently in the table.
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Host clients still sending their `CONNECT` line.
    pub(crate) fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    #[cfg(test)]
    pub(crate) fn connection(&self, local_port: u32, peer_port: u32) -> Option<&Connection> {
        self.conns.get(&ConnKey {
            local_port,
            peer_port,
        })
    }

    /// The host sockets of every connection and handshake (tests: fd-leak checks).
    #[cfg(test)]
    pub(crate) fn socket_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.conns
            .values()
            .map(|c| c.stream.as_raw_fd())
            .chain(self.handshakes.values().map(|h| h.stream.as_raw_fd()))
            .collect()
    }

    /// Polls the listener (active device) or leaves clients in its backlog (inactive).
    pub(crate) fn set_listening(&mut self, on: bool) {
        if self.listening != on {
            self.listening = on;
            let events = if on { EventSet::IN } else { EventSet::empty() };
            self.changes.push(EventSourceChange::Modify(source(
                &self.listener,
                events,
                LISTENER_TOKEN,
            )));
        }
    }

    pub(crate) fn take_changes(&mut self) -> Vec<EventSourceChange> {
        std::mem::take(&mut self.changes)
    }

    /// The event loop applied every change taken so far: closed sockets may now be closed.
    pub(crate) fn changes_applied(&mut self) {
        self.graveyard.clear();
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            self.next_token = if self.next_token + 1 >= MAX_HOST_TOKEN {
                LISTENER_TOKEN + 1
            } else {
                self.next_token + 1
            };
            let t = self.next_token;
            if !self.by_token.contains_key(&t) && !self.handshakes.contains_key(&t) {
                return t;
            }
        }
    }

    fn allocate_local_port(&mut self) -> u32 {
        loop {
            self.local_port_last =
                ((self.local_port_last.wrapping_add(1)) & !(1 << 31)) | (1 << 30);
            if self.local_ports.insert(self.local_port_last) {
                return self.local_port_last;
            }
        }
    }

    /// A host socket is ready.
    pub(crate) fn handle_event(&mut self, token: u32, events: EventSet) {
        if token == LISTENER_TOKEN {
            self.accept();
        } else if let Some(&key) = self.by_token.get(&token) {
            self.mutate(key, |c, ctx| c.notify(events, ctx));
        } else if self.handshakes.contains_key(&token) {
            self.read_handshake(token);
        } else {
            // A source closed earlier in the same batch of events.
            self.metrics.muxer_event_fails.inc();
        }
    }

    fn accept(&mut self) {
        let (stream, _) = match self.listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.metrics.muxer_event_fails.inc();
                rl_warn!(self.log, "vsock: unable to accept local connection: {e}");
                return;
            }
        };
        if self.conns.len() + self.handshakes.len() >= MAX_CONNECTIONS {
            rl_warn!(
                self.log,
                "vsock: connection limit reached; refusing new host connection"
            );
            return;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            self.metrics.muxer_event_fails.inc();
            rl_warn!(self.log, "vsock: unable to accept local connection: {e}");
            return;
        }
        let token = self.alloc_token();
        self.changes
            .push(EventSourceChange::Add(source(&stream, EventSet::IN, token)));
        self.handshakes.insert(
            token,
            Handshake {
                stream,
                line: [0; CONNECT_LINE_MAX],
                len: 0,
            },
        );
    }

    fn close_handshake(&mut self, token: u32) {
        if let Some(h) = self.handshakes.remove(&token) {
            self.changes.push(EventSourceChange::Remove(source(
                &h.stream,
                EventSet::IN,
                token,
            )));
            self.graveyard.push(h.stream);
        }
    }

    /// Reads the `CONNECT` line one byte at a time, so that bytes after it stay in the socket
    /// for the guest.
    fn read_handshake(&mut self, token: u32) {
        let Some(h) = self.handshakes.get_mut(&token) else {
            return;
        };
        let complete = loop {
            let mut b = [0u8; 1];
            match h.stream.read(&mut b) {
                Ok(0) => break false,
                Ok(_) => {
                    h.line[h.len] = b[0];
                    h.len += 1;
                    if b[0] == b'\n' || h.len == CONNECT_LINE_MAX {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        let port = if complete {
            parse_connect(&h.line[..h.len])
        } else {
            None
        };
        let Some(peer_port) = port else {
            rl_info!(self.log, "vsock: invalid host connection request");
            self.close_handshake(token);
            return;
        };
        self.sweep_killq();
        if self.conns.len() >= MAX_CONNECTIONS {
            rl_info!(
                self.log,
                "vsock: muxer connection limit reached ({MAX_CONNECTIONS})"
            );
            self.close_handshake(token);
            return;
        }
        let Some(h) = self.handshakes.remove(&token) else {
            return;
        };
        let local_port = self.allocate_local_port();
        let mut conn = Connection::new_local_init(h.stream, self.cid, local_port, peer_port, token);
        // The socket stays registered under the same token.
        conn.registered = EventSet::IN;
        self.insert_connection(conn);
    }

    fn insert_connection(&mut self, conn: Connection) {
        let key = ConnKey {
            local_port: conn.local_port,
            peer_port: conn.peer_port,
        };
        self.by_token.insert(conn.token, key);
        let pending = conn.has_pending_rx();
        self.conns.insert(key, conn);
        self.metrics.conns_added.inc();
        if pending {
            self.rxq.push(RxItem::Conn(key));
        }
        self.mutate(key, |_, _| ());
    }

    fn remove_connection(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            self.by_token.remove(&conn.token);
            if !conn.registered.is_empty() {
                self.changes.push(EventSourceChange::Remove(source(
                    &conn.stream,
                    conn.registered,
                    conn.token,
                )));
            }
            // A `Remove` may also be pending from an earlier interest change in this batch:
            // keep the socket open until the loop has applied it.
            let fd = conn.stream.as_raw_fd();
            if self.changes.iter().any(|c| change_fd(c) == fd) {
                self.graveyard.push(conn.stream);
            }
            self.metrics.conns_removed.inc();
        }
        self.local_ports.remove(&key.local_port);
    }

    fn kill_connection(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(&key) {
            self.metrics.conns_killed.inc();
            let had_rx = conn.has_pending_rx();
            conn.kill();
            if !had_rx {
                self.rxq.push(RxItem::Conn(key));
            }
            self.mutate(key, |_, _| ());
        }
    }

    /// Runs `f` on a connection, then does the bookkeeping its state change calls for: the
    /// `OK <port>` ack, RX and kill scheduling, socket interest.
    fn mutate<R>(
        &mut self,
        key: ConnKey,
        f: impl FnOnce(&mut Connection, &Ctx<'_>) -> R,
    ) -> Option<R> {
        let ctx = Ctx {
            metrics: &self.metrics,
            log: &self.log,
            request_timeout: self.request_timeout,
            shutdown_timeout: self.shutdown_timeout,
        };
        let conn = self.conns.get_mut(&key)?;
        let now = Instant::now();
        let had_rx = conn.has_pending_rx();
        let was_expiring = conn.will_expire(now);
        let prev = conn.state();
        let out = f(conn, &ctx);
        if prev == ConnState::LocalInit && conn.state() == ConnState::Established {
            let msg = format!("OK {}\n", key.local_port);
            match conn.send_raw(msg.as_bytes()) {
                Ok(n) if n == msg.len() => {}
                Ok(_) => {
                    rl_warn!(self.log, "vsock: unable to fully write connection ack msg.");
                    conn.kill();
                }
                Err(e) => {
                    rl_warn!(self.log, "vsock: unable to ack host connection: {e}");
                    conn.kill();
                }
            }
        }
        if !had_rx && conn.has_pending_rx() {
            self.rxq.push(RxItem::Conn(key));
        }
        if !was_expiring
            && conn.will_expire(now)
            && let Some(at) = conn.expiry()
        {
            self.killq.push(key, at);
            self.rearm_timer();
        }
        let conn = self.conns.get_mut(&key)?;
        let want = conn.polled_events();
        if want != conn.registered {
            let change = if conn.registered.is_empty() {
                EventSourceChange::Add(source(&conn.stream, want, conn.token))
            } else if want.is_empty() {
                EventSourceChange::Remove(source(&conn.stream, conn.registered, conn.token))
            } else {
                EventSourceChange::Modify(source(&conn.stream, want, conn.token))
            };
            self.changes.push(change);
            conn.registered = want;
        }
        Some(out)
    }

    /// Whether [`recv_pkt`](Self::recv_pkt) may have a packet.
    pub(crate) fn has_pending_rx(&self) -> bool {
        !self.rxq.is_empty() || !self.rxq.is_synced()
    }

    /// The next packet for the guest, with up to `room` payload bytes in `data`.
    pub(crate) fn recv_pkt(&mut self, room: u32, data: &mut [u8]) -> Option<(Header, usize)> {
        if self.rxq.is_empty() && !self.rxq.is_synced() {
            self.rxq = RxQueue::from_conns(&self.conns);
        }
        // Each item is looked at most twice (one that cannot use this buffer goes to the back).
        for _ in 0..2 * super::queues::RXQ_SIZE {
            let item = self.rxq.peek()?;
            match item {
                RxItem::Rst {
                    local_port,
                    peer_port,
                } => {
                    self.rxq.pop();
                    let hdr = Header {
                        src_cid: HOST_CID,
                        dst_cid: self.cid,
                        src_port: local_port,
                        dst_port: peer_port,
                        type_: TYPE_STREAM,
                        op: op::RST,
                        ..Header::default()
                    };
                    return Some((hdr, 0));
                }
                RxItem::Conn(key) => {
                    let got = self
                        .mutate(key, |c, ctx| c.recv_pkt(room, data, ctx))
                        .flatten();
                    let still = self.conns.get(&key).is_some_and(Connection::has_pending_rx);
                    self.rxq.pop();
                    if let Some((hdr, n)) = got {
                        if still {
                            self.rxq.push(RxItem::Conn(key));
                        }
                        if hdr.op == op::RST {
                            self.remove_connection(key);
                        }
                        return Some((hdr, n));
                    }
                    if still {
                        self.rxq.push(RxItem::Conn(key));
                    }
                }
            }
        }
        None
    }

    fn enq_rst(&mut self, local_port: u32, peer_port: u32) {
        if !self.rxq.push(RxItem::Rst {
            local_port,
            peer_port,
        }) {
            rl_warn!(
                self.log,
                "vsock: muxer.rxq full; dropping RST packet for lp={local_port}, pp={peer_port}"
            );
        }
    }

    /// Delivers a guest packet (its payload already copied out of guest memory).
    pub(crate) fn send_pkt(&mut self, hdr: &Header, data: &[u8]) {
        if hdr.type_ != TYPE_STREAM {
            self.enq_rst(hdr.dst_port, hdr.src_port);
            return;
        }
        if hdr.dst_cid != HOST_CID {
            rl_info!(
                self.log,
                "vsock: dropping guest packet for unknown CID: {}",
                hdr.dst_cid
            );
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if !self.conns.contains_key(&key) {
            if hdr.op == op::REQUEST {
                self.handle_peer_request(hdr);
            } else {
                self.enq_rst(hdr.dst_port, hdr.src_port);
            }
            return;
        }
        if hdr.op == op::RST {
            self.remove_connection(key);
            return;
        }
        self.mutate(key, |c, ctx| c.send_pkt(hdr, data, ctx));
    }

    /// `<uds_path>_<port>`.
    pub(crate) fn port_path(&self, port: u32) -> PathBuf {
        let mut p = OsString::from(self.uds_path.as_os_str());
        p.push(format!("_{port}"));
        PathBuf::from(p)
    }

    fn handle_peer_request(&mut self, hdr: &Header) {
        self.sweep_killq();
        if self.conns.len() >= MAX_CONNECTIONS {
            rl_info!(
                self.log,
                "vsock: muxer connection limit reached ({MAX_CONNECTIONS})"
            );
            self.enq_rst(hdr.dst_port, hdr.src_port);
            return;
        }
        // Like Firecracker, a blocking connect: a Unix-socket connect completes at once unless
        // the listener's backlog is full.
        let stream = UnixStream::connect(self.port_path(hdr.dst_port))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        match stream {
            Ok(stream) => {
                let token = self.alloc_token();
                let conn = Connection::new_peer_init(stream, hdr, self.cid, token);
                self.insert_connection(conn);
            }
            Err(e) => {
                rl_info!(
                    self.log,
                    "vsock: no host listener for guest connection to port {}: {e}",
                    hdr.dst_port
                );
                self.enq_rst(hdr.dst_port, hdr.src_port);
            }
        }
    }

    /// The kill timer fired.
    pub(crate) fn on_timer(&mut self) {
        let _ = self.timer[0].clear();
        self.sweep_killq();
        self.rearm_timer();
    }

    fn sweep_killq(&mut self) {
        loop {
            let now = Instant::now();
            while let Some(key) = self.killq.pop_expired(now) {
                if self.conns.get(&key).is_some_and(|c| c.has_expired(now)) {
                    self.kill_connection(key);
                }
            }
            if self.killq.is_empty() && !self.killq.is_synced() {
                self.killq = KillQueue::from_conns(&self.conns, now);
                self.metrics.killq_resync.inc();
                continue;
            }
            break;
        }
    }

    fn rearm_timer(&mut self) {
        let result = match self.killq.next_deadline() {
            Some(at) => {
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                self.timer[0].reset(wait, None)
            }
            None => self.timer[0].clear(),
        };
        if let Err(e) = result {
            self.metrics.muxer_event_fails.inc();
            rl_warn!(self.log, "vsock: failed to arm the kill timer: {e}");
        }
    }

    /// Drops every connection and handshake (device reset); the listener stays bound.
    pub(crate) fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_connection(key);
        }
        let tokens: Vec<u32> = self.handshakes.keys().copied().collect();
        for token in tokens {
            self.close_handshake(token);
        }
        self.rxq = RxQueue::default();
        self.killq = KillQueue::default();
        self.local_ports.clear();
        self.local_port_last = LOCAL_PORT_BASE - 1;
        let _ = self.timer[0].clear();
    }
}
