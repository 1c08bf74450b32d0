//! One passive-open TCP connection carrying HTTP requests to the MMDS (Firecracker's
//! `Connection` + `Endpoint`, rewritten).
//!
//! The connection is created from the guest's `SYN`, answers with `SYN-ACK`, accepts in-order
//! data into a fixed 2 500-byte receive buffer (the advertised window is its free space; a request
//! head that does not fit resets the connection, as Firecracker), answers one complete request at
//! a time (the next one is parsed once the previous response is fully acknowledged), honours the
//! peer's MSS and window, retransmits go-back-N on a fixed RTO (reset after 15 in a row), probes
//! a zero window, closes after the peer's `FIN` once its responses are acknowledged, and dies on
//! an in-window `RST`. Sequence comparisons are modulo 2^32.
//!
//! Owned by [`super::TcpHandler`]; single-threaded; time is passed in (milliseconds).

use crate::wire::{ACK, FIN, PSH, RST, SYN, TcpSegment};

/// Receive buffer size: one plus the largest request head accepted (Firecracker's value).
pub const RCV_BUF_SIZE: usize = 2500;
/// Retransmission timeout.
pub const RTO_MS: u64 = 300;
/// Consecutive retransmission timeouts before the connection resets itself.
pub const RTO_COUNT_MAX: u16 = 15;
/// Idle time after which a connection may be evicted for a new one.
pub const EVICTION_THRESHOLD_MS: u64 = 10_000;
/// MSS assumed when the SYN carries none.
pub const MSS_DEFAULT: u16 = 536;
/// Smallest MSS honoured (smaller advertisements are raised to it, bounding segment counts).
pub const MSS_MIN: u16 = 64;
/// The MSS we advertise.
pub const MSS_ADVERTISED: u16 = 1460;

/// What a connection wants to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A segment can be written now.
    Available,
    /// Nothing until this time (retransmission or probe timer).
    Timeout(u64),
    /// Nothing.
    Nothing,
}

/// A segment the connection wants written (addresses and ports are added by the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutSegment {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (0 without ACK).
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// MSS option.
    pub mss: Option<u16>,
    /// Payload range in the send buffer.
    pub payload: (usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SynReceived,
    Established,
}

/// Receive-side outcome flags, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecvOutcome {
    /// Something unusual (out of order, bad ACK, data after FIN...).
    pub unusual: bool,
}

/// A TCP connection with its HTTP endpoint buffers.
#[derive(Debug)]
pub struct Connection {
    state: State,
    irs: u32,
    rcv_nxt: u32,
    iss: u32,
    snd_una: u32,
    /// Response bytes not yet acknowledged; `out[0]` has sequence number `snd_una`.
    out: Vec<u8>,
    /// How many bytes of `out` have been sent (since the last go-back).
    sent: usize,
    /// The most bytes of `out` ever sent (ACKs up to here are valid after a go-back).
    sent_max: usize,
    peer_wnd: u32,
    mss: u16,
    rx: Vec<u8>,
    synack_due: bool,
    ack_due: bool,
    rst_due: bool,
    fin_received: bool,
    fin_wanted: bool,
    fin_sent: bool,
    fin_sent_ever: bool,
    fin_acked: bool,
    probe: bool,
    rto_deadline: Option<u64>,
    rto_count: u16,
    last_recv_ms: u64,
    done: bool,
}

/// `a - b` as a signed distance modulo 2^32.
fn diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b).cast_signed())
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Connection {
    /// A connection from a guest `SYN` (flags exactly `SYN`); `None` if the MSS option is
    /// malformed. `iss` is our initial sequence number.
    pub fn passive_open(syn: &TcpSegment<'_>, iss: u32, now: u64) -> Option<Self> {
        let mss = syn.mss.ok()?.unwrap_or(MSS_DEFAULT).max(MSS_MIN);
        let rcv_nxt = syn.seq.wrapping_add(1);
        Some(Self {
            state: State::SynReceived,
            irs: syn.seq,
            rcv_nxt,
            iss,
            snd_una: iss,
            out: Vec::new(),
            sent: 0,
            sent_max: 0,
            peer_wnd: u32::from(syn.window),
            mss,
            rx: Vec::with_capacity(RCV_BUF_SIZE),
            synack_due: true,
            ack_due: false,
            rst_due: false,
            fin_received: false,
            fin_wanted: false,
            fin_sent: false,
            fin_sent_ever: false,
            fin_acked: false,
            probe: false,
            rto_deadline: None,
            rto_count: 0,
            last_recv_ms: now,
            done: false,
        })
    }

    /// Whether the connection is finished and can be dropped.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether it has been idle long enough to be replaced by a new connection.
    pub fn is_evictable(&self, now: u64) -> bool {
        now.saturating_sub(self.last_recv_ms) > EVICTION_THRESHOLD_MS
    }

    /// The `RST` (seq, ack, flags) to send when this connection is evicted.
    pub fn rst_fields(&self) -> (u32, u32, u8) {
        (self.snd_nxt(), self.rcv_nxt, RST | ACK)
    }

    fn snd_nxt(&self) -> u32 {
        let syn = u32::from(self.state == State::SynReceived && !self.synack_due);
        self.snd_una
            .wrapping_add(syn)
            .wrapping_add(u32_len(self.sent))
            .wrapping_add(u32::from(self.fin_sent && !self.fin_acked))
    }

    fn window(&self) -> u16 {
        u16::try_from(RCV_BUF_SIZE.saturating_sub(self.rx.len())).unwrap_or(u16::MAX)
    }

    fn usable_window(&self) -> usize {
        let in_flight = u32_len(self.sent);
        usize::try_from(self.peer_wnd.saturating_sub(in_flight)).unwrap_or(usize::MAX)
    }

    /// The connection's status at `now`.
    pub fn status(&self, now: u64) -> Status {
        if self.done {
            return Status::Nothing;
        }
        let unsent = self.out.len() - self.sent;
        let can_send_data = self.state == State::Established
            && unsent > 0
            && (self.usable_window() > 0 || self.probe);
        let fin_ready =
            self.state == State::Established && self.fin_wanted && !self.fin_sent && unsent == 0;
        if self.rst_due || self.synack_due || self.ack_due || can_send_data || fin_ready {
            return Status::Available;
        }
        match self.rto_deadline {
            Some(d) if d <= now => Status::Available,
            Some(d) => Status::Timeout(d),
            None => Status::Nothing,
        }
    }

    /// Processes a guest segment. `respond` turns one request head into response bytes.
    pub fn receive(
        &mut self,
        s: &TcpSegment<'_>,
        now: u64,
        respond: &mut dyn FnMut(&[u8]) -> Vec<u8>,
    ) -> RecvOutcome {
        let mut outcome = RecvOutcome::default();
        if self.done || self.rst_due {
            return outcome;
        }
        self.last_recv_ms = now;
        let flags = s.flags;
        if flags & RST != 0 {
            // Accept a RST whose sequence number is inside the receive window.
            let d = diff(s.seq, self.rcv_nxt);
            if (0..=i64::from(self.window())).contains(&d) {
                self.done = true;
            } else {
                outcome.unusual = true;
            }
            return outcome;
        }
        if flags & SYN != 0 {
            if self.state == State::SynReceived && s.seq == self.irs {
                self.synack_due = true; // our SYN-ACK was lost
            } else {
                self.ack_due = true; // challenge ACK
                outcome.unusual = true;
            }
            return outcome;
        }
        if flags & ACK == 0 {
            outcome.unusual = true;
            return outcome;
        }
        if self.state == State::SynReceived {
            if self.synack_due || s.ack != self.iss.wrapping_add(1) {
                outcome.unusual = true;
                return outcome;
            }
            self.state = State::Established;
            self.snd_una = self.iss.wrapping_add(1);
            self.rto_deadline = None;
            self.rto_count = 0;
        }
        if !self.process_ack(s, now) {
            outcome.unusual = true;
            return outcome;
        }
        outcome.unusual |= self.process_data(s);
        self.serve(respond);
        if self.fin_received && self.fin_acked {
            self.done = true;
        }
        outcome
    }

    /// Returns false if the segment must be dropped (acknowledges data never sent).
    fn process_ack(&mut self, s: &TcpSegment<'_>, now: u64) -> bool {
        let acked = diff(s.ack, self.snd_una);
        let max =
            i64::from(u32_len(self.sent_max)) + i64::from(self.fin_sent_ever && !self.fin_acked);
        if acked < 0 {
            return true; // an old ACK: ignore it, keep the data
        }
        if acked > max {
            self.ack_due = true;
            return false;
        }
        let acked = usize::try_from(acked).unwrap_or(0);
        let data = acked.min(self.sent_max);
        self.out.drain(..data);
        self.sent = self.sent.saturating_sub(data);
        self.sent_max -= data;
        self.snd_una = self.snd_una.wrapping_add(u32_len(data));
        if acked > data {
            self.fin_acked = true;
            self.fin_sent = true;
            self.snd_una = self.snd_una.wrapping_add(1);
        }
        self.peer_wnd = u32::from(s.window);
        if acked > 0 {
            self.rto_count = 0;
            self.probe = false;
            let outstanding = self.sent_max > 0 || (self.fin_sent_ever && !self.fin_acked);
            self.rto_deadline = outstanding.then_some(now + RTO_MS);
        }
        if self.peer_wnd > 0 {
            self.probe = false;
        }
        true
    }

    /// In-order data and FIN. Returns whether something unusual happened.
    fn process_data(&mut self, s: &TcpSegment<'_>) -> bool {
        let has_fin = s.flags & FIN != 0;
        if s.payload.is_empty() && !has_fin {
            return false;
        }
        if self.fin_received {
            self.ack_due = true;
            return true;
        }
        let d = diff(self.rcv_nxt, s.seq);
        if d < 0 {
            self.ack_due = true; // out of order: dup ACK, drop
            return true;
        }
        let skip = usize::try_from(d).unwrap_or(usize::MAX);
        let new = s.payload.get(skip..).unwrap_or(&[]);
        let room = RCV_BUF_SIZE - self.rx.len();
        let take = new.len().min(room);
        self.rx.extend_from_slice(&new[..take]);
        self.rcv_nxt = self.rcv_nxt.wrapping_add(u32_len(take));
        self.ack_due = true;
        if has_fin && take == new.len() && skip <= s.payload.len() {
            self.fin_received = true;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
        take < new.len()
    }

    /// Answers the next complete request once the previous response is fully acknowledged.
    fn serve(&mut self, respond: &mut dyn FnMut(&[u8]) -> Vec<u8>) {
        if !self.out.is_empty() {
            return;
        }
        if let Some(end) = request_end(&self.rx) {
            let response = respond(&self.rx[..end]);
            self.out = response;
            self.sent = 0;
            self.sent_max = 0;
            self.rx.drain(..end);
            // The window grew: tell the peer.
            self.ack_due = true;
        } else if self.rx.len() >= RCV_BUF_SIZE {
            // A request head larger than the buffer: reset (Firecracker's bound).
            self.rst_due = true;
            return;
        }
        if self.fin_received && self.out.is_empty() {
            self.fin_wanted = true;
        }
    }

    /// Produces the next segment, if any, with at most `max_payload` bytes of data. `payload`
    /// in the result indexes [`Connection::out_bytes`].
    pub fn next_segment(&mut self, now: u64, max_payload: usize) -> Option<OutSegment> {
        if self.done {
            return None;
        }
        if self.rst_due {
            self.done = true;
            let (seq, ack, flags) = self.rst_fields();
            return Some(self.segment(seq, ack, flags));
        }
        if let Some(d) = self.rto_deadline
            && d <= now
        {
            self.rto_count += 1;
            if self.rto_count > RTO_COUNT_MAX {
                self.done = true;
                let (seq, ack, flags) = self.rst_fields();
                return Some(self.segment(seq, ack, flags));
            }
            self.rto_deadline = Some(now + RTO_MS);
            match self.state {
                State::SynReceived => self.synack_due = true,
                State::Established => {
                    if self.sent == 0 && !self.out.is_empty() && self.peer_wnd == 0 {
                        self.probe = true;
                    }
                    self.sent = 0;
                    if !self.fin_acked {
                        self.fin_sent = false;
                    }
                }
            }
        }
        if self.state == State::SynReceived {
            if !self.synack_due {
                return None;
            }
            self.synack_due = false;
            self.ack_due = false;
            self.rto_deadline.get_or_insert(now + RTO_MS);
            let mut seg = self.segment(self.iss, self.rcv_nxt, SYN | ACK);
            seg.mss = Some(MSS_ADVERTISED);
            return Some(seg);
        }
        let unsent = self.out.len() - self.sent;
        let window = if self.probe {
            self.usable_window().max(1)
        } else {
            self.usable_window()
        };
        let len = unsent
            .min(window)
            .min(usize::from(self.mss))
            .min(max_payload);
        if len > 0 {
            let mut seg = self.segment(self.snd_nxt(), self.rcv_nxt, ACK | PSH);
            seg.payload = (self.sent, self.sent + len);
            self.sent += len;
            self.sent_max = self.sent_max.max(self.sent);
            self.ack_due = false;
            self.rto_deadline.get_or_insert(now + RTO_MS);
            return Some(seg);
        }
        if unsent > 0 && window == 0 && self.sent == 0 {
            // Zero window: arm the probe timer.
            self.rto_deadline.get_or_insert(now + RTO_MS);
        }
        if self.fin_wanted && !self.fin_sent && unsent == 0 {
            let seg = self.segment(self.snd_nxt(), self.rcv_nxt, FIN | ACK);
            self.fin_sent = true;
            self.fin_sent_ever = true;
            self.ack_due = false;
            self.rto_deadline.get_or_insert(now + RTO_MS);
            return Some(seg);
        }
        if self.ack_due {
            self.ack_due = false;
            return Some(self.segment(self.snd_nxt(), self.rcv_nxt, ACK));
        }
        None
    }

    fn segment(&self, seq: u32, ack: u32, flags: u8) -> OutSegment {
        OutSegment {
            seq,
            ack,
            flags,
            window: self.window(),
            mss: None,
            payload: (0, 0),
        }
    }

    /// The send buffer that [`OutSegment::payload`] indexes.
    pub fn out_bytes(&self) -> &[u8] {
        &self.out
    }
}

/// The end (exclusive) of the first request head in `buf`: after `\n\n` or `\n\r\n`
/// (Firecracker's endpoint looks for exactly these).
pub fn request_end(buf: &[u8]) -> Option<usize> {
    if buf.len() <= 2 {
        return None;
    }
    (0..buf.len() - 1).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        if buf[i + 1] == b'\n' {
            Some(i + 2)
        } else if buf.get(i + 1..i + 3) == Some(b"\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: u32 = 5000;
    const IRS: u32 = u32::MAX - 10; // exercises sequence wrap-around

    fn seg(seq: u32, ack: u32, flags: u8, window: u16, payload: &[u8]) -> TcpSegment<'_> {
        TcpSegment {
            src_port: 1,
            dst_port: 80,
            seq,
            ack,
            flags,
            window,
            mss: Ok(None),
            payload,
        }
    }

    fn echo(req: &[u8]) -> Vec<u8> {
        let mut v = b"R:".to_vec();
        v.extend_from_slice(req);
        v
    }

    fn established() -> Connection {
        let mut c = Connection::passive_open(&seg(IRS, 0, SYN, 1000, &[]), ISS, 0).unwrap();
        let synack = c.next_segment(0, 1000).unwrap();
        assert_eq!(
            (synack.seq, synack.ack, synack.flags),
            (ISS, IRS.wrapping_add(1), SYN | ACK)
        );
        assert_eq!(synack.mss, Some(MSS_ADVERTISED));
        assert_eq!(synack.window, 2500);
        assert_eq!(c.status(0), Status::Timeout(RTO_MS));
        c.receive(
            &seg(IRS.wrapping_add(1), ISS + 1, ACK, 1000, &[]),
            1,
            &mut echo,
        );
        assert_eq!(c.status(1), Status::Nothing);
        c
    }

    #[test]
    fn handshake_synack_retransmit_and_bad_mss() {
        let mut c = Connection::passive_open(&seg(IRS, 0, SYN, 1000, &[]), ISS, 0).unwrap();
        assert_eq!(c.status(0), Status::Available);
        c.next_segment(0, 1000).unwrap();
        // A duplicate SYN (our SYN-ACK was lost) brings it back at once.
        c.receive(&seg(IRS, 0, SYN, 1000, &[]), 5, &mut echo);
        assert_eq!(c.next_segment(5, 1000).unwrap().flags, SYN | ACK);
        // And so does the RTO.
        assert!(c.next_segment(100, 1000).is_none());
        assert_eq!(c.next_segment(RTO_MS, 1000).unwrap().flags, SYN | ACK);
        // A wrong ACK does not establish.
        c.receive(
            &seg(IRS.wrapping_add(1), ISS + 7, ACK, 1000, &[]),
            1,
            &mut echo,
        );
        assert_eq!(c.state, State::SynReceived);
        let mut bad = seg(IRS, 0, SYN, 1000, &[]);
        bad.mss = Err(());
        assert!(Connection::passive_open(&bad, ISS, 0).is_none());
        bad.mss = Ok(Some(1));
        assert_eq!(Connection::passive_open(&bad, ISS, 0).unwrap().mss, MSS_MIN);
    }

    #[test]
    fn request_response_ack_and_fin() {
        let mut c = established();
        let rcv = IRS.wrapping_add(1);
        // Half a request: ACKed, no response yet.
        c.receive(&seg(rcv, ISS + 1, ACK, 1000, b"GET / HT"), 2, &mut echo);
        let a = c.next_segment(2, 1000).unwrap();
        assert_eq!((a.flags, a.ack, a.window), (ACK, rcv.wrapping_add(8), 2492));
        c.receive(
            &seg(rcv.wrapping_add(8), ISS + 1, ACK, 1000, b"TP/1.1\r\n\r\n"),
            3,
            &mut echo,
        );
        let d = c.next_segment(3, 1000).unwrap();
        assert_eq!((d.seq, d.flags), (ISS + 1, ACK | PSH));
        let sent = c.out_bytes()[d.payload.0..d.payload.1].to_vec();
        assert_eq!(sent, b"R:GET / HTTP/1.1\r\n\r\n");
        assert_eq!(d.window, 2500, "the request left the buffer");
        // The guest ACKs and closes.
        let end = ISS + 1 + u32::try_from(sent.len()).unwrap();
        let rcv2 = rcv.wrapping_add(8 + 10);
        c.receive(&seg(rcv2, end, FIN | ACK, 1000, &[]), 4, &mut echo);
        let f = c.next_segment(4, 1000).unwrap();
        assert_eq!(
            (f.seq, f.ack, f.flags),
            (end, rcv2.wrapping_add(1), FIN | ACK)
        );
        assert!(!c.is_done());
        c.receive(
            &seg(rcv2.wrapping_add(1), end + 1, ACK, 1000, &[]),
            5,
            &mut echo,
        );
        assert!(c.is_done());
    }

    #[test]
    fn out_of_order_dup_ack_and_retransmit_overlap() {
        let mut c = established();
        let rcv = IRS.wrapping_add(1);
        let out = c.receive(
            &seg(rcv.wrapping_add(5), ISS + 1, ACK, 1000, b"xyz"),
            2,
            &mut echo,
        );
        assert!(out.unusual);
        let a = c.next_segment(2, 1000).unwrap();
        assert_eq!(a.ack, rcv, "dup ACK for the hole");
        c.receive(&seg(rcv, ISS + 1, ACK, 1000, b"GET"), 3, &mut echo);
        // Overlapping retransmission: only the new bytes are taken.
        c.receive(
            &seg(rcv, ISS + 1, ACK, 1000, b"GET / HTTP/1.1\r\n\r\n"),
            3,
            &mut echo,
        );
        let d = c.next_segment(3, 1000).unwrap();
        assert_eq!(
            &c.out_bytes()[d.payload.0..d.payload.1],
            b"R:GET / HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn mss_window_go_back_and_zero_window_probe() {
        let mut c = established();
        let rcv = IRS.wrapping_add(1);
        c.mss = 4;
        c.receive(&seg(rcv, ISS + 1, ACK, 6, b"0123456789\n\n"), 2, &mut echo); // 14-byte response
        let s1 = c.next_segment(2, 1000).unwrap();
        let s2 = c.next_segment(2, 1000).unwrap();
        assert_eq!(
            (s1.payload, s2.payload),
            ((0, 4), (4, 6)),
            "MSS 4, window 6"
        );
        assert!(c.next_segment(2, 1000).is_none());
        // Partial ACK opens the window again.
        c.receive(
            &seg(rcv.wrapping_add(12), ISS + 1 + 4, ACK, 6, &[]),
            3,
            &mut echo,
        );
        let s3 = c.next_segment(3, 1000).unwrap();
        assert_eq!((s3.seq, s3.payload), (ISS + 1 + 6, (2, 6)));
        // Timeout: go back to the first unacknowledged byte.
        let s4 = c.next_segment(3 + RTO_MS, 1000).unwrap();
        assert_eq!((s4.seq, s4.payload), (ISS + 1 + 4, (0, 4)));
        // ACK everything sent so far (even though we went back) with a zero window.
        c.receive(
            &seg(rcv.wrapping_add(12), ISS + 1 + 10, ACK, 0, &[]),
            400,
            &mut echo,
        );
        assert_eq!(c.out_bytes(), b"89\n\n");
        assert!(c.next_segment(400, 1000).is_none());
        let Status::Timeout(t) = c.status(400) else {
            panic!("probe timer")
        };
        let probe = c.next_segment(t, 1000).unwrap();
        assert_eq!(
            probe.payload.1 - probe.payload.0,
            1,
            "one-byte zero-window probe"
        );
    }

    #[test]
    fn rst_in_window_only_and_ack_of_unsent_data() {
        let mut c = established();
        let rcv = IRS.wrapping_add(1);
        c.receive(
            &seg(rcv.wrapping_add(100_000), 0, RST, 0, &[]),
            2,
            &mut echo,
        );
        assert!(!c.is_done());
        let out = c.receive(&seg(rcv, ISS + 50, ACK, 10, &[]), 2, &mut echo);
        assert!(out.unusual);
        assert_eq!(c.next_segment(2, 1000).unwrap().flags, ACK);
        c.receive(&seg(rcv.wrapping_add(3), 0, RST, 0, &[]), 2, &mut echo);
        assert!(c.is_done());
    }

    #[test]
    fn oversized_head_resets() {
        let mut c = established();
        let rcv = IRS.wrapping_add(1);
        c.receive(&seg(rcv, ISS + 1, ACK, 1000, &[b'a'; 3000]), 2, &mut echo);
        let r = c.next_segment(2, 1000).unwrap();
        assert_eq!(r.flags, RST | ACK);
        assert!(c.is_done());
    }

    #[test]
    fn request_end_detection() {
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n\r\nnext"), Some(18));
        assert_eq!(request_end(b"a\n\nb"), Some(3));
        assert_eq!(request_end(b"\n\n"), None);
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
