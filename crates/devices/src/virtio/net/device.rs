//! The [`Net`] device: configuration, feature negotiation, and the RX/TX processing driven by
//! queue, timer and tap events (see the [module docs](super) for the data path).
//!
//! Threading: `Send`, used behind `Arc<Mutex<Net>>`; every method runs with the lock held, the
//! I/O ones on the VMM thread.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use event_manager::EventSet;
use squib_core::GuestMemoryMmap;
use squib_sys::tap::Tap;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use super::rx::{Collect, RxRound};
use super::tx::Tx;
use super::{
    FrameInterceptor, INTERCEPTOR_TIMER, MAX_BUFFER_SIZE, MIN_RX_BUFFER_SIZE, NetBackend, NetError,
    NetMetrics, QUEUE_SIZES, RX_INDEX, TAP_TOKEN, TX_INDEX, VNET_HDR_LEN, features as net,
};
use crate::log::RateLimitedLog;
use crate::metrics::len_u64;
use crate::rate_limiter::{BucketUpdate, RateLimiter};
use crate::virtio::features::{RING_EVENT_IDX, VERSION_1, bit};
use crate::virtio::queue;
use crate::virtio::throttle::TimedLimiter;
use crate::virtio::{
    ActivateError, EventSource, EventSourceChange, InterruptKind, VirtioDevice, VirtioInterrupt,
    device_type,
};
use crate::{rl_error, rl_warn};

/// Size of the configuration space: `mac[6]`, `status`, `max_virtqueue_pairs`, `mtu`.
const CONFIG_LEN: usize = 12;
/// Offset of `mtu` in the configuration space.
const CONFIG_MTU: usize = 10;
/// Smallest MTU a network interface may have (Firecracker's lower bound).
const MIN_MTU: u16 = 68;

/// How to build a [`Net`] (the validated `PUT /network-interfaces` body).
#[derive(Debug)]
pub struct NetConfig {
    /// `iface_id` (names the metric group `net_<iface_id>`).
    pub iface_id: String,
    /// `host_dev_name`: the tap to attach to.
    pub host_dev_name: String,
    /// `guest_mac`: offered with `VIRTIO_NET_F_MAC` when set.
    pub guest_mac: Option<[u8; 6]>,
    /// `mtu`: offered with `VIRTIO_NET_F_MTU` when set (68..=65535).
    pub mtu: Option<u16>,
    /// `rx_rate_limiter` (`RateLimiter::default()` is unlimited).
    pub rx_rate_limiter: RateLimiter,
    /// `tx_rate_limiter`.
    pub tx_rate_limiter: RateLimiter,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: Vec<Queue>,
}

/// The virtio-net device (see the [module docs](super)).
pub struct Net {
    iface_id: String,
    backend: Box<dyn NetBackend>,
    guest_mac: Option<[u8; 6]>,
    mtu: Option<u16>,
    avail_features: u64,
    acked_features: u64,
    config: [u8; CONFIG_LEN],
    queue_evts: [EventFd; 2],
    /// Rate-limiter timers (RX, TX), then the interceptor's timer.
    timers: [TimerFd; 3],
    /// The interceptor deadline the interceptor timer is armed for.
    interceptor_armed: Option<u64>,
    /// The deadline the interceptor timer last fired for.
    interceptor_fired: Option<u64>,
    rx_limiter: TimedLimiter,
    tx_limiter: TimedLimiter,
    /// The one host-side RX frame buffer; `rx_pending` bytes of it wait for the guest.
    rx_frame: Box<[u8]>,
    rx_pending: usize,
    tx_frame: Box<[u8]>,
    /// The tap's interest is "nothing" while a frame waits for guest buffers.
    tap_paused: bool,
    /// The tap reported an error and is no longer watched.
    tap_removed: bool,
    changes: Vec<EventSourceChange>,
    interceptor: Option<Box<dyn FrameInterceptor + Send>>,
    metrics: Arc<NetMetrics>,
    log: RateLimitedLog,
    active: Option<Active>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("iface_id", &self.iface_id)
            .field("backend", &self.backend)
            .field("acked_features", &self.acked_features)
            .field("rx_pending", &self.rx_pending)
            .field("tap_paused", &self.tap_paused)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Opens the tap `config.host_dev_name` (12-byte virtio header) and builds the device.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        if let Some(mtu) = config.mtu
            && mtu < MIN_MTU
        {
            return Err(NetError::InvalidMtu(mtu));
        }
        let tap = Tap::open_named(&config.host_dev_name).map_err(NetError::TapOpen)?;
        // 12 fits an i32.
        tap.set_vnet_hdr_size(i32::try_from(VNET_HDR_LEN).unwrap_or(12))
            .map_err(NetError::TapSetVnetHdrSize)?;
        Self::with_backend(config, Box::new(tap))
    }

    /// Builds the device on `backend` (`config.host_dev_name` is ignored).
    pub fn with_backend(config: NetConfig, backend: Box<dyn NetBackend>) -> Result<Self, NetError> {
        let mut avail_features = [
            net::GUEST_CSUM,
            net::CSUM,
            net::GUEST_TSO4,
            net::GUEST_TSO6,
            net::GUEST_UFO,
            net::HOST_TSO4,
            net::HOST_TSO6,
            net::HOST_UFO,
            VERSION_1,
            net::MRG_RXBUF,
            RING_EVENT_IDX,
        ]
        .into_iter()
        .fold(0u64, |acc, b| acc | bit(b));
        let mut config_space = [0u8; CONFIG_LEN];
        if let Some(mtu) = config.mtu {
            if mtu < MIN_MTU {
                return Err(NetError::InvalidMtu(mtu));
            }
            avail_features |= bit(net::MTU);
            config_space[CONFIG_MTU..].copy_from_slice(&mtu.to_le_bytes());
        }
        if let Some(mac) = config.guest_mac {
            avail_features |= bit(net::MAC);
            config_space[..6].copy_from_slice(&mac);
        }
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(NetError::EventFd);
        let timer = || TimerFd::new().map_err(|e| NetError::EventFd(e.into()));
        Ok(Self {
            iface_id: config.iface_id,
            backend,
            guest_mac: config.guest_mac,
            mtu: config.mtu,
            avail_features,
            acked_features: 0,
            config: config_space,
            queue_evts: [evt()?, evt()?],
            timers: [timer()?, timer()?, timer()?],
            interceptor_armed: None,
            interceptor_fired: None,
            rx_limiter: TimedLimiter::new(config.rx_rate_limiter),
            tx_limiter: TimedLimiter::new(config.tx_rate_limiter),
            rx_frame: vec![0u8; MAX_BUFFER_SIZE].into_boxed_slice(),
            rx_pending: 0,
            tx_frame: vec![0u8; MAX_BUFFER_SIZE].into_boxed_slice(),
            tap_paused: false,
            tap_removed: false,
            changes: Vec::new(),
            interceptor: None,
            metrics: Arc::new(NetMetrics::new()),
            log: RateLimitedLog::default(),
            active: None,
        })
    }

    /// `iface_id`.
    pub fn iface_id(&self) -> &str {
        &self.iface_id
    }

    /// The tap's name.
    pub fn host_dev_name(&self) -> &str {
        self.backend.name()
    }

    /// The configured guest MAC.
    pub fn guest_mac(&self) -> Option<[u8; 6]> {
        self.guest_mac
    }

    /// The configured MTU.
    pub fn mtu(&self) -> Option<u16> {
        self.mtu
    }

    /// The `net` metric group of this device.
    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// The RX rate limiter.
    pub fn rx_rate_limiter(&self) -> &RateLimiter {
        self.rx_limiter.limiter()
    }

    /// The TX rate limiter.
    pub fn tx_rate_limiter(&self) -> &RateLimiter {
        self.tx_limiter.limiter()
    }

    /// `PATCH /network-interfaces`: replaces, removes or keeps each bucket.
    pub fn update_rate_limiters(
        &mut self,
        rx_bytes: BucketUpdate,
        rx_ops: BucketUpdate,
        tx_bytes: BucketUpdate,
        tx_ops: BucketUpdate,
    ) {
        self.rx_limiter.update(rx_bytes, rx_ops);
        self.tx_limiter.update(tx_bytes, tx_ops);
    }

    /// Installs (or removes) the frame interceptor (the MMDS network stack).
    pub fn set_interceptor(&mut self, interceptor: Option<Box<dyn FrameInterceptor + Send>>) {
        self.interceptor = interceptor;
        self.arm_interceptor_timer();
    }

    /// Arms (or disarms) the interceptor timer for the interceptor's next deadline; a no-op
    /// when that deadline is the one already armed.
    fn arm_interceptor_timer(&mut self) {
        let next = self.interceptor.as_ref().and_then(|i| i.next_timer());
        if next.map(|(id, _)| id) == self.interceptor_armed {
            return;
        }
        let timer = &mut self.timers[INTERCEPTOR_TIMER];
        let result = match next {
            // Already fired for this deadline and still due: its frame waits for RX buffers or
            // the RX limiter, whose events resume delivery; no 1 ms polling meanwhile.
            Some((id, wait)) if wait.is_zero() && self.interceptor_fired == Some(id) => {
                timer.clear()
            }
            // A zero duration would disarm the timerfd: fire in 1 ms instead.
            Some((_, wait)) => timer.reset(wait.max(Duration::from_millis(1)), None),
            None => timer.clear(),
        };
        match result {
            Ok(()) => self.interceptor_armed = next.map(|(id, _)| id),
            Err(err) => {
                self.interceptor_armed = None;
                self.metrics.event_fails.inc();
                rl_error!(self.log, "virtio-net: failed to arm the MMDS timer: {err}");
            }
        }
    }

    /// Whether a frame interceptor is installed.
    pub fn has_interceptor(&self) -> bool {
        self.interceptor.is_some()
    }

    /// Asks the device to deliver the interceptor's pending frames now (for example after MMDS
    /// data changed outside a guest request). A no-op while inactive or rate limited.
    pub fn kick_rx(&mut self) {
        if !self.rx_limiter.is_blocked() {
            self.process_rx();
        }
    }

    fn has(&self, feature: u32) -> bool {
        self.acked_features & bit(feature) != 0
    }

    /// Firecracker's minimum RX chain: the header with `MRG_RXBUF`; else a whole GSO frame if
    /// the guest takes GSO; else 1526 bytes.
    fn min_rx_chain(&self) -> u64 {
        if self.has(net::MRG_RXBUF) {
            len_u64(VNET_HDR_LEN)
        } else if self.has(net::GUEST_TSO4) || self.has(net::GUEST_TSO6) || self.has(net::GUEST_UFO)
        {
            len_u64(MAX_BUFFER_SIZE)
        } else {
            MIN_RX_BUFFER_SIZE
        }
    }

    fn tap_source(&self, paused: bool) -> Option<EventSource> {
        let fd = self.backend.raw_fd()?;
        let events = if paused {
            EventSet::EDGE_TRIGGERED
        } else {
            EventSet::IN | EventSet::EDGE_TRIGGERED
        };
        Some(EventSource {
            fd,
            events,
            token: TAP_TOKEN,
        })
    }

    /// Pauses tap readiness while a frame waits for the guest, resumes it otherwise.
    fn update_tap_interest(&mut self) {
        let want_paused = self.rx_pending != 0;
        if self.tap_removed || want_paused == self.tap_paused {
            return;
        }
        if let Some(source) = self.tap_source(want_paused) {
            self.changes.push(EventSourceChange::Modify(source));
            self.tap_paused = want_paused;
        }
    }

    /// Moves frames (interceptor's first, then the tap's) into the guest until the guest runs
    /// out of room, the tap runs dry, or the rate limiter says stop.
    fn process_rx(&mut self) {
        let mergeable = self.has(net::MRG_RXBUF);
        let min_chain = self.min_rx_chain();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let queue = &mut active.queues[RX_INDEX];
        let metrics = &*self.metrics;
        let log = &self.log;
        let mut round = RxRound::default();
        loop {
            if self.rx_pending == 0 {
                if self.rx_limiter.is_blocked() {
                    break;
                }
                match fetch_frame(
                    self.interceptor.as_deref_mut(),
                    &mut *self.backend,
                    &mut self.rx_frame,
                    metrics,
                    log,
                ) {
                    Some(n) => self.rx_pending = n,
                    None => break,
                }
            }
            let len = self.rx_pending;
            match round.collect(queue, mem, len, min_chain, mergeable) {
                Collect::Ready(n) => {
                    match self
                        .rx_limiter
                        .consume(len_u64(len), &mut self.timers[RX_INDEX])
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            metrics.rx_rate_limiter_throttled.inc();
                            break;
                        }
                        Err(err) => {
                            metrics.event_fails.inc();
                            rl_error!(log, "virtio-net: failed to arm the RX rate limiter: {err}");
                            break;
                        }
                    }
                    let done = round.commit(queue, mem, &mut self.rx_frame[..len], n);
                    metrics.rx_fails.add(u64::from(done.bad_chains));
                    if done.failed {
                        metrics.rx_fails.inc();
                        rl_error!(log, "virtio-net: failed to write a frame to guest memory");
                    } else {
                        metrics.rx_count.inc();
                        metrics.rx_packets_count.inc();
                        metrics.rx_bytes_count.add(len_u64(len));
                    }
                    self.rx_pending = 0;
                }
                Collect::NoBuffers => {
                    metrics.no_rx_avail_buffer.inc();
                    break;
                }
                Collect::TooBig => {
                    metrics.rx_fails.inc();
                    rl_warn!(
                        log,
                        "virtio-net: dropped a {len}-byte frame larger than the guest's RX buffers"
                    );
                    self.rx_pending = 0;
                }
                Collect::BrokenRing => {
                    metrics.event_fails.inc();
                    rl_warn!(log, "virtio-net: invalid RX available ring index");
                    break;
                }
            }
        }
        if round.finish(queue, mem)
            && let Err(err) = active
                .interrupt
                .trigger(InterruptKind::Queue(rx_index_u16()))
        {
            metrics.event_fails.inc();
            rl_error!(log, "virtio-net: failed to signal the RX queue: {err}");
        }
        self.update_tap_interest();
        self.arm_interceptor_timer();
    }

    /// Sends every available TX chain to the interceptor or the tap.
    fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let queue = &mut active.queues[TX_INDEX];
        let mut tx = Tx {
            limiter: &mut self.tx_limiter,
            timer: &mut self.timers[TX_INDEX],
            frame: &mut self.tx_frame,
            backend: &mut *self.backend,
            interceptor: self.interceptor.as_deref_mut(),
            metrics: &self.metrics,
            log: &self.log,
            guest_mac: self.guest_mac,
            detoured: false,
        };
        let run = queue::drain(queue, mem, |_, chain| tx.send(mem, &chain));
        let detoured = tx.detoured;
        let metrics = &self.metrics;
        if run.broken_ring {
            metrics.event_fails.inc();
            rl_warn!(self.log, "virtio-net: invalid TX available ring index");
        }
        if run.ring_errors > 0 {
            metrics.event_fails.add(u64::from(run.ring_errors));
            rl_error!(self.log, "virtio-net: failed to update the TX used ring");
        }
        if !run.used {
            metrics.no_tx_avail_buffer.inc();
        }
        if run.used
            && let Err(err) = queue::signal_used(queue, mem, &*active.interrupt, tx_index_u16())
        {
            metrics.event_fails.inc();
            rl_error!(self.log, "virtio-net: failed to signal the TX queue: {err}");
        }
        if detoured
            && self
                .interceptor
                .as_ref()
                .is_some_and(|i| i.has_pending_frames())
            && !self.rx_limiter.is_blocked()
        {
            self.process_rx();
        } else if detoured {
            self.arm_interceptor_timer();
        }
    }

    fn tap_failed(&mut self) {
        self.metrics.event_fails.inc();
        self.metrics.tap_read_fails.inc();
        rl_error!(
            self.log,
            "virtio-net: tap {} reported an error; it is no longer watched",
            self.backend.name()
        );
        if !self.tap_removed
            && let Some(source) = self.tap_source(self.tap_paused)
        {
            self.changes.push(EventSourceChange::Remove(source));
        }
        self.tap_removed = true;
    }
}

fn rx_index_u16() -> u16 {
    u16::try_from(RX_INDEX).unwrap_or_default()
}

fn tx_index_u16() -> u16 {
    u16::try_from(TX_INDEX).unwrap_or(1)
}

/// The next frame to give the guest, header included, in `buf`: the interceptor's first, then
/// the tap's. `None` when there is none (or the tap failed, which is counted).
fn fetch_frame(
    interceptor: Option<&mut (dyn FrameInterceptor + Send + 'static)>,
    backend: &mut dyn NetBackend,
    buf: &mut [u8],
    metrics: &NetMetrics,
    log: &RateLimitedLog,
) -> Option<usize> {
    if let Some(i) = interceptor
        && i.has_pending_frames()
        && let Some(n) = i.write_next_frame(&mut buf[VNET_HDR_LEN..])
    {
        buf[..VNET_HDR_LEN].fill(0);
        return Some(VNET_HDR_LEN + n.min(buf.len() - VNET_HDR_LEN));
    }
    loop {
        match backend.read_frame(buf) {
            Ok(n) if n >= VNET_HDR_LEN => return Some(n.min(buf.len())),
            Ok(n) => {
                metrics.rx_fails.inc();
                rl_warn!(
                    log,
                    "virtio-net: dropped a {n}-byte tap frame without a header"
                );
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                metrics.tap_read_fails.inc();
                rl_error!(log, "virtio-net: failed to read the tap: {err}");
                return None;
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !crate::virtio::read_config_bytes(&self.config, offset, data) {
            self.metrics.cfg_fails.inc();
            rl_warn!(
                self.log,
                "virtio-net: config read of {} bytes at {offset:#x} outside the config space",
                data.len()
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.metrics.cfg_fails.inc();
        rl_warn!(
            self.log,
            "virtio-net: guest driver attempted to write device config (offset={offset:#x}, len={:#x})",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            self.metrics.activate_fails.inc();
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != QUEUE_SIZES.len() {
            self.metrics.activate_fails.inc();
            return Err(ActivateError::QueueCount {
                expected: QUEUE_SIZES.len(),
                got: queues.len(),
            });
        }
        let offload = super::tap_offload_flags(self.acked_features);
        if let Err(err) = self.backend.set_offload(offload) {
            self.metrics.activate_fails.inc();
            return Err(ActivateError::Unsupported(format!(
                "Setting tap interface offload flags failed: {err}"
            )));
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        let [rx_timer, tx_timer, interceptor_timer] = &mut self.timers;
        self.rx_limiter.reset(rx_timer);
        self.tx_limiter.reset(tx_timer);
        let _ = interceptor_timer.clear();
        self.interceptor_armed = None;
        self.interceptor_fired = None;
        self.rx_pending = 0;
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.update_tap_interest();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn process_queue_event(&mut self, idx: usize) {
        let Some(evt) = self.queue_evts.get(idx) else {
            self.metrics.event_fails.inc();
            return;
        };
        if let Err(err) = evt.read()
            && err.kind() != io::ErrorKind::WouldBlock
        {
            self.metrics.event_fails.inc();
            rl_error!(
                self.log,
                "virtio-net: failed to read queue event {idx}: {err}"
            );
        }
        if idx == RX_INDEX {
            self.metrics.rx_queue_event_count.inc();
            if self.rx_limiter.is_blocked() {
                self.metrics.rx_rate_limiter_throttled.inc();
            } else {
                self.process_rx();
            }
        } else {
            self.metrics.tx_queue_event_count.inc();
            if self.tx_limiter.is_blocked() {
                self.metrics.tx_rate_limiter_throttled.inc();
            } else {
                self.process_tx();
            }
        }
    }

    fn timer_events(&self) -> &[TimerFd] {
        &self.timers
    }

    fn process_timer(&mut self, idx: usize) {
        let [rx_timer, tx_timer, interceptor_timer] = &mut self.timers;
        let result = match idx {
            INTERCEPTOR_TIMER => {
                // Clearing also consumes the expiry; the RX pass re-arms for what is next.
                let _ = interceptor_timer.clear();
                self.interceptor_fired = self.interceptor_armed.take();
                if !self.rx_limiter.is_blocked() {
                    // Otherwise the RX limiter's timer resumes delivery (and re-arms this one).
                    self.process_rx();
                }
                return;
            }
            RX_INDEX => {
                self.metrics.rx_event_rate_limiter_count.inc();
                self.rx_limiter.on_timer(rx_timer)
            }
            TX_INDEX => {
                self.metrics.tx_rate_limiter_event_count.inc();
                self.tx_limiter.on_timer(tx_timer)
            }
            _ => {
                self.metrics.event_fails.inc();
                return;
            }
        };
        if let Err(err) = result {
            self.metrics.event_fails.inc();
            rl_warn!(self.log, "virtio-net: {err}");
        }
        if idx == RX_INDEX {
            self.process_rx();
        } else {
            self.process_tx();
        }
    }

    fn host_event_sources(&self) -> Vec<EventSource> {
        if self.tap_removed {
            return Vec::new();
        }
        self.tap_source(self.tap_paused).into_iter().collect()
    }

    fn process_host_event(&mut self, token: u32, events: EventSet) {
        if token != TAP_TOKEN {
            self.metrics.event_fails.inc();
            return;
        }
        self.metrics.rx_tap_event_count.inc();
        if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            self.tap_failed();
            return;
        }
        if self.active.is_none() {
            return;
        }
        if self.rx_limiter.is_blocked() {
            self.metrics.rx_rate_limiter_throttled.inc();
            return;
        }
        self.process_rx();
    }

    fn take_event_source_changes(&mut self) -> Vec<EventSourceChange> {
        std::mem::take(&mut self.changes)
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| a.queues.as_slice())
    }
}

impl Net {
    /// State for [`persist`](super::persist): acked features and rate limiters.
    pub(super) fn persist_parts(&self) -> (u64, &RateLimiter, &RateLimiter) {
        (
            self.acked_features,
            self.rx_limiter.limiter(),
            self.tx_limiter.limiter(),
        )
    }

    /// Restores the acked features (a subset of the offered ones).
    pub(super) fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }
}
