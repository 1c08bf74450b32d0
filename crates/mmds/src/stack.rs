//! [`MmdsNetworkStack`]: the guest-facing side of MMDS on one network interface.
//!
//! A virtio-net device with MMDS enabled calls [`MmdsNetworkStack::detour_frame`] on every
//! Ethernet frame the guest transmits (without the virtio-net header). Frames for the MMDS
//! address are consumed: ARP requests asking for it (answered with an ARP reply) and IPv4
//! packets sent to it (TCP to the MMDS port is served; anything else is counted and dropped,
//! as Firecracker). Every other frame is left for the tap. The device then drains
//! [`MmdsNetworkStack::write_next_frame`] into the guest's RX queue (before tap traffic, as
//! Firecracker), whenever [`MmdsNetworkStack::has_pending_frames`] says so, and may arm a timer
//! for [`MmdsNetworkStack::next_timer_deadline_ms`] so retransmissions happen without guest
//! traffic.
//!
//! Owned by the device, used from the VMM thread; the shared store is locked only while one
//! complete request is answered.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, MonotonicClock};
use crate::http::{parse_error_response, parse_request};
use crate::metrics::{MmdsMetrics, add, inc};
use crate::respond::respond;
use crate::store::Mmds;
use crate::tcp::TcpHandler;
use crate::wire::{
    ARP_LEN, ETH_HDR_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, PROTOCOL_TCP, arp_target, ipv4_dst,
    parse_arp_request, parse_eth, parse_ipv4, parse_tcp, write_arp_reply, write_eth_header,
};

/// Firecracker's MMDS MAC address (`06:01:23:45:67:01`).
pub const DEFAULT_MAC_ADDR: [u8; 6] = [0x06, 0x01, 0x23, 0x45, 0x67, 0x01];
/// The default MMDS IPv4 address.
pub const DEFAULT_IPV4_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The MMDS TCP port.
pub const DEFAULT_TCP_PORT: u16 = 80;

/// The snapshot state of a stack (Firecracker's `MmdsNetworkStackState`); connections are not
/// saved (the guest's TCP recovers by retransmitting and getting `RST`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmdsNetworkStackState {
    /// The MMDS MAC address.
    pub mac_addr: [u8; 6],
    /// The MMDS IPv4 address.
    pub ipv4_addr: u32,
    /// The MMDS TCP port.
    pub tcp_port: u16,
}

/// The MMDS network stack for one interface.
#[derive(Debug)]
pub struct MmdsNetworkStack {
    mac: [u8; 6],
    remote_mac: [u8; 6],
    ipv4: Ipv4Addr,
    pending_arp_reply: Option<Ipv4Addr>,
    tcp: TcpHandler,
    mmds: Arc<Mutex<Mmds>>,
    metrics: Arc<MmdsMetrics>,
    clock: Arc<dyn Clock>,
}

impl MmdsNetworkStack {
    /// A stack answering as `mac`/`ipv4`, HTTP on `tcp_port`, serving `mmds`.
    pub fn new(mac: [u8; 6], ipv4: Ipv4Addr, tcp_port: u16, mmds: Arc<Mutex<Mmds>>) -> Self {
        Self {
            mac,
            remote_mac: mac,
            ipv4,
            pending_arp_reply: None,
            tcp: TcpHandler::new(ipv4, tcp_port),
            mmds,
            metrics: Arc::new(MmdsMetrics::default()),
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// Firecracker's defaults: MAC `06:01:23:45:67:01`, `ipv4` or 169.254.169.254, port 80.
    pub fn new_with_defaults(ipv4: Option<Ipv4Addr>, mmds: Arc<Mutex<Mmds>>) -> Self {
        Self::new(
            DEFAULT_MAC_ADDR,
            ipv4.unwrap_or(DEFAULT_IPV4_ADDR),
            DEFAULT_TCP_PORT,
            mmds,
        )
    }

    /// Counts into `metrics` (shared by every stack and the metrics writer).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<MmdsMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Uses `clock` for TCP timers (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<MmdsMetrics> {
        &self.metrics
    }

    /// The MMDS IPv4 address.
    pub fn ipv4_addr(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// Changes the MMDS IPv4 address.
    pub fn set_ipv4_addr(&mut self, ipv4: Ipv4Addr) {
        self.ipv4 = ipv4;
        self.tcp.set_local_addr(ipv4);
    }

    /// The snapshot state.
    pub fn save(&self) -> MmdsNetworkStackState {
        MmdsNetworkStackState {
            mac_addr: self.mac,
            ipv4_addr: self.ipv4.into(),
            tcp_port: self.tcp.local_port(),
        }
    }

    /// A stack from a snapshot state.
    pub fn restore(mmds: Arc<Mutex<Mmds>>, state: &MmdsNetworkStackState) -> Self {
        Self::new(
            state.mac_addr,
            Ipv4Addr::from(state.ipv4_addr),
            state.tcp_port,
            mmds,
        )
    }

    /// Whether `frame` is for MMDS (an ARP packet asking for its address, or an IPv4 packet to
    /// it), without consuming it.
    pub fn is_mmds_frame(&self, frame: &[u8]) -> bool {
        match parse_eth(frame) {
            Some(eth) if eth.ethertype == ETHERTYPE_ARP => {
                arp_target(eth.payload) == Some(self.ipv4)
            }
            Some(eth) if eth.ethertype == ETHERTYPE_IPV4 => {
                ipv4_dst(eth.payload) == Some(self.ipv4)
            }
            _ => false,
        }
    }

    /// Consumes `frame` if it is for MMDS (see the module docs) and returns true; otherwise
    /// returns false and the frame belongs to the tap.
    pub fn detour_frame(&mut self, frame: &[u8]) -> bool {
        let Some(eth) = parse_eth(frame) else {
            inc(&self.metrics.rx_bad_eth);
            return false;
        };
        if !self.is_mmds_frame(frame) {
            return false;
        }
        inc(&self.metrics.rx_accepted);
        if eth.ethertype == ETHERTYPE_ARP {
            if let Some(req) = parse_arp_request(eth.payload) {
                self.remote_mac = req.sha;
                self.pending_arp_reply = Some(req.spa);
            } else {
                inc(&self.metrics.rx_accepted_unusual);
            }
            return true;
        }
        let Some(ip) = parse_ipv4(eth.payload) else {
            inc(&self.metrics.rx_accepted_err);
            return true;
        };
        if ip.protocol != PROTOCOL_TCP || ip.fragment {
            inc(&self.metrics.rx_accepted_unusual);
            return true;
        }
        let Some(seg) = parse_tcp(ip.payload) else {
            inc(&self.metrics.rx_accepted_err);
            return true;
        };
        self.remote_mac = eth.src;
        let now = self.clock.now_ms();
        let (mmds, metrics) = (&self.mmds, &self.metrics);
        let mut responder = |raw: &[u8]| -> Vec<u8> {
            let response = match parse_request(raw) {
                Ok(req) => {
                    let mut guard = mmds.lock().unwrap_or_else(PoisonError::into_inner);
                    respond(&mut guard, &req, metrics)
                }
                Err(e) => parse_error_response(&e),
            };
            response.to_bytes()
        };
        if self.tcp.receive(ip.src, &seg, now, &mut responder, metrics) {
            inc(&metrics.rx_count);
        } else {
            inc(&metrics.rx_accepted_err);
        }
        true
    }

    /// Whether [`MmdsNetworkStack::write_next_frame`] has a frame now.
    pub fn has_pending_frames(&self) -> bool {
        self.pending_arp_reply.is_some() || self.tcp.has_pending(self.clock.now_ms())
    }

    /// When (on the stack's clock, milliseconds) a retransmission timer next fires, if any.
    pub fn next_timer_deadline_ms(&self) -> Option<u64> {
        self.tcp.next_deadline()
    }

    /// How long from now until [`MmdsNetworkStack::next_timer_deadline_ms`] (zero if it has
    /// passed), for arming a timerfd.
    pub fn next_timer_in(&self) -> Option<std::time::Duration> {
        let deadline = self.tcp.next_deadline()?;
        Some(std::time::Duration::from_millis(
            deadline.saturating_sub(self.clock.now_ms()),
        ))
    }

    /// Live TCP connections.
    pub fn connection_count(&self) -> usize {
        self.tcp.connection_count()
    }

    /// Writes the next frame for the guest into `buf` and returns its length; `None` if there
    /// is nothing to send or `buf` is too small for any frame (TCP data is cut to fit `buf`).
    pub fn write_next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let len = if let Some(dest) = self.pending_arp_reply {
            let len = self.write_arp_reply(buf, dest);
            if len.is_some() {
                self.pending_arp_reply = None;
            }
            len
        } else {
            if !self.tcp.has_pending(self.clock.now_ms()) {
                return None;
            }
            self.write_tcp_frame(buf)
        };
        match len {
            Some(n) => {
                inc(&self.metrics.tx_count);
                inc(&self.metrics.tx_frames);
                add(&self.metrics.tx_bytes, u64::try_from(n).unwrap_or(u64::MAX));
            }
            None => inc(&self.metrics.tx_errors),
        }
        len
    }

    fn write_arp_reply(&self, buf: &mut [u8], dest: Ipv4Addr) -> Option<usize> {
        let frame = buf.get_mut(..ETH_HDR_LEN + ARP_LEN)?;
        write_eth_header(frame, self.remote_mac, self.mac, ETHERTYPE_ARP)?;
        write_arp_reply(
            &mut frame[ETH_HDR_LEN..],
            self.mac,
            self.ipv4,
            self.remote_mac,
            dest,
        )?;
        Some(ETH_HDR_LEN + ARP_LEN)
    }

    fn write_tcp_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let now = self.clock.now_ms();
        write_eth_header(buf, self.remote_mac, self.mac, ETHERTYPE_IPV4)?;
        let n = self
            .tcp
            .write_next(buf.get_mut(ETH_HDR_LEN..)?, now, &self.metrics)?;
        Some(ETH_HDR_LEN + n)
    }
}
