//! The TX half of [`Net`](super::Net): one pass over the TX queue sends each chain to the
//! frame interceptor (MMDS) or the tap.
//!
//! Threading: runs on the VMM thread with the device locked (borrows the device's parts).

use std::io;
use std::time::Instant;

use squib_core::GuestMemoryMmap;
use vm_memory::{Address, Bytes};
use vmm_sys_util::timerfd::TimerFd;

use super::{FrameInterceptor, MAX_BUFFER_SIZE, NetBackend, NetMetrics, VNET_HDR_LEN};
use crate::log::RateLimitedLog;
use crate::virtio::chain::Chain;
use crate::virtio::queue::Step;
use crate::virtio::throttle::TimedLimiter;
use crate::{rl_error, rl_warn};

/// One TX pass's borrowed state.
pub(super) struct Tx<'a> {
    pub(super) limiter: &'a mut TimedLimiter,
    pub(super) timer: &'a mut TimerFd,
    pub(super) frame: &'a mut [u8],
    pub(super) backend: &'a mut dyn NetBackend,
    pub(super) interceptor: Option<&'a mut (dyn FrameInterceptor + Send + 'static)>,
    pub(super) metrics: &'a NetMetrics,
    pub(super) log: &'a RateLimitedLog,
    pub(super) guest_mac: Option<[u8; 6]>,
    pub(super) detoured: bool,
}

impl Tx<'_> {
    /// Sends one chain; every TX chain returns with length 0.
    pub(super) fn send(&mut self, mem: &GuestMemoryMmap, chain: &Chain) -> Step {
        let m = self.metrics;
        if let Some(err) = chain.error {
            m.tx_fails.inc();
            rl_warn!(self.log, "virtio-net: malformed TX chain: {err}");
            return Step::Used(0);
        }
        if !chain.writable.is_empty() {
            m.tx_fails.inc();
            rl_warn!(
                self.log,
                "virtio-net: TX chain with a device-writable buffer"
            );
            return Step::Used(0);
        }
        let total = chain.readable_len();
        let Some(len) = usize::try_from(total)
            .ok()
            .filter(|&l| l <= MAX_BUFFER_SIZE)
        else {
            m.tx_malformed_frames.inc();
            rl_error!(self.log, "virtio-net: received too big frame from driver");
            return Step::Used(0);
        };
        match self.limiter.consume(total, self.timer) {
            Ok(true) => {}
            Ok(false) => {
                m.tx_rate_limiter_throttled.inc();
                return Step::Throttled;
            }
            Err(err) => {
                m.event_fails.inc();
                rl_error!(
                    self.log,
                    "virtio-net: failed to arm the TX rate limiter: {err}"
                );
                return Step::Throttled;
            }
        }
        if len < VNET_HDR_LEN {
            m.tx_malformed_frames.inc();
            rl_error!(self.log, "virtio-net: VNET headers missing in TX frame");
            return Step::Used(0);
        }
        // Without an interceptor the frame goes to the tap straight from guest memory.
        let direct = if self.interceptor.is_none() {
            let mut bufs = chain
                .readable
                .iter()
                .map(|s| (s.addr, usize::try_from(s.len).unwrap_or(usize::MAX)));
            let start = Instant::now();
            let written = self.backend.write_frame_from_guest(mem, &mut bufs);
            if written
                .as_ref()
                .is_some_and(|r| !matches!(r, Err(e) if e.kind() == io::ErrorKind::InvalidInput))
            {
                m.tap_write_agg
                    .record(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                let mut src = [0u8; 6];
                if let Some(mac) = self.guest_mac
                    && read_chain_at(mem, chain, VNET_HDR_LEN + 6, &mut src)
                    && src != mac
                {
                    m.tx_spoofed_mac_count.inc();
                }
                written
            } else {
                None
            }
        } else {
            None
        };
        let result = match direct {
            Some(result) => result,
            None => match self.send_copied(mem, chain, len, total) {
                Some(result) => result,
                None => return Step::Used(0),
            },
        };
        match result {
            Ok(_) => {
                m.tx_bytes_count.add(total);
                m.tx_packets_count.inc();
                m.tx_count.inc();
            }
            Err(err) => {
                m.tap_write_fails.inc();
                rl_error!(self.log, "virtio-net: failed to write to tap: {err}");
            }
        }
        Step::Used(0)
    }

    /// Gathers the chain into the frame buffer, offers it to the interceptor, then writes it to
    /// the tap. `None`: nothing to write (consumed by the interceptor, or unreadable).
    fn send_copied(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        len: usize,
        total: u64,
    ) -> Option<io::Result<usize>> {
        let m = self.metrics;
        let frame = &mut self.frame[..len];
        let mut at = 0usize;
        for seg in &chain.readable {
            let n = usize::try_from(seg.len).unwrap_or(usize::MAX);
            let Some(dst) = at.checked_add(n).and_then(|end| frame.get_mut(at..end)) else {
                m.tx_fails.inc();
                return None;
            };
            if mem.read_slice(dst, seg.addr).is_err() {
                m.tx_fails.inc();
                return None;
            }
            at += n;
        }
        let eth = &frame[VNET_HDR_LEN..];
        if let Some(i) = self.interceptor.as_deref_mut()
            && i.detour_frame(eth)
        {
            self.limiter.replenish(total);
            self.detoured = true;
            return None;
        }
        if let Some(mac) = self.guest_mac
            && eth.get(6..12).is_some_and(|src| src != mac)
        {
            m.tx_spoofed_mac_count.inc();
        }
        let start = Instant::now();
        let result = self.backend.write_frame(frame);
        m.tap_write_agg
            .record(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        Some(result)
    }
}

/// Copies `buf.len()` bytes of the chain's readable bytes from `offset` into `buf`; `false` if
/// the chain is shorter or unreadable.
fn read_chain_at(mem: &GuestMemoryMmap, chain: &Chain, offset: usize, buf: &mut [u8]) -> bool {
    let mut skip = offset;
    let mut filled = 0usize;
    for seg in &chain.readable {
        if filled == buf.len() {
            break;
        }
        let n = usize::try_from(seg.len).unwrap_or(usize::MAX);
        if skip >= n {
            skip -= n;
            continue;
        }
        let take = (n - skip).min(buf.len() - filled);
        let Some(addr) = seg
            .addr
            .checked_add(u64::try_from(skip).unwrap_or(u64::MAX))
        else {
            return false;
        };
        if mem
            .read_slice(&mut buf[filled..filled + take], addr)
            .is_err()
        {
            return false;
        }
        filled += take;
        skip = 0;
    }
    filled == buf.len()
}
