//! The [`Balloon`] device model (see the [module docs](super)).

use std::sync::Arc;
use std::time::Duration;

use squib_config::schemas::balloon::{BalloonHintingStatus, BalloonStats};
use squib_core::GuestMemoryMmap;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use super::metrics::BalloonMetrics;
use super::{
    BalloonConfig, BalloonError, BalloonStatus, BalloonStatusSink, CONFIG_SPACE_SIZE,
    FREE_PAGE_HINT_DONE, FREE_PAGE_HINT_STOP, MAX_PAGES_IN_DESC, MAX_STATS_TAGS, PFN_SHIFT,
    STAT_SIZE, compact_pfns, feature, mib_to_pages, pages_to_mib, parse_pfns, parse_stats,
};
use crate::log::RateLimitedLog;
use crate::virtio::chain::{Chain, Segment};
use crate::virtio::queue::{self, Step};
use crate::virtio::{
    ActivateError, InterruptKind, MAX_QUEUE_SIZE, VirtioDevice, VirtioInterrupt, device_type,
    features,
};
use crate::{rl_error, rl_warn};

/// Index of the inflate queue.
pub(crate) const INFLATE: usize = 0;
/// Index of the deflate queue.
pub(crate) const DEFLATE: usize = 1;

/// What a queue index is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Inflate,
    Deflate,
    Stats,
    Hinting,
    Reporting,
}

/// Free-page-hinting state (Firecracker's `HintingState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HintingState {
    /// The command the host published (`FREE_PAGE_HINT_STOP` when idle).
    pub host_cmd: u32,
    /// The last command id the host started.
    pub last_cmd_id: u32,
    /// The command the guest last reported.
    pub guest_cmd: Option<u32>,
    /// Publish `DONE` when the guest reports `STOP`.
    pub acknowledge_on_finish: bool,
}

/// The configuration space, as fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConfigSpace {
    pub(crate) num_pages: u32,
    pub(crate) actual_pages: u32,
    pub(crate) free_page_hint_cmd_id: u32,
}

impl ConfigSpace {
    fn bytes(&self) -> [u8; CONFIG_SPACE_SIZE] {
        let mut b = [0u8; CONFIG_SPACE_SIZE];
        b[0..4].copy_from_slice(&self.num_pages.to_le_bytes());
        b[4..8].copy_from_slice(&self.actual_pages.to_le_bytes());
        b[8..12].copy_from_slice(&self.free_page_hint_cmd_id.to_le_bytes());
        b
    }
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: Vec<Queue>,
}

/// Bit `i` of a queue mask (0 past 31; a balloon has at most 5 queues).
fn bit(i: usize) -> u32 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u32.checked_shl(i))
        .unwrap_or(0)
}

/// The virtio-balloon device (see the [module docs](super)).
pub struct Balloon {
    pub(crate) cfg: BalloonConfig,
    pub(crate) acked_features: u64,
    pub(crate) config: ConfigSpace,
    queue_sizes: Vec<u16>,
    queue_evts: Vec<EventFd>,
    stats_timer: [TimerFd; 1],
    /// The statistics buffer the device holds until the next poll.
    pub(crate) stats_desc: Option<u16>,
    pub(crate) latest_stats: BalloonStats,
    pub(crate) hinting: HintingState,
    metrics: Arc<BalloonMetrics>,
    log: RateLimitedLog,
    sink: Option<BalloonStatusSink>,
    active: Option<Active>,
    /// Queues the driver notified before activation (bit = index): Linux primes the stats
    /// queue before `DRIVER_OK`; activation replays those notifications.
    early_notified: u32,
}

impl std::fmt::Debug for Balloon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balloon")
            .field("cfg", &self.cfg)
            .field("config", &self.config)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Balloon {
    /// A balloon with `cfg`'s target, features and queues.
    pub fn new(cfg: BalloonConfig) -> Result<Self, BalloonError> {
        let num_pages = mib_to_pages(cfg.amount_mib)
            .ok_or(BalloonError::TooMuchMemoryRequested(cfg.amount_mib))?;
        let queues = 2
            + usize::from(cfg.stats_polling_interval_s > 0)
            + usize::from(cfg.free_page_hinting)
            + usize::from(cfg.free_page_reporting);
        let queue_evts = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BalloonError::EventFd(e.to_string()))?;
        let timer = TimerFd::new().map_err(|e| BalloonError::EventFd(e.to_string()))?;
        squib_sys::set_nonblocking(&timer).map_err(|e| BalloonError::EventFd(e.to_string()))?;
        Ok(Self {
            cfg,
            acked_features: 0,
            config: ConfigSpace {
                num_pages,
                actual_pages: 0,
                free_page_hint_cmd_id: FREE_PAGE_HINT_STOP,
            },
            queue_sizes: vec![MAX_QUEUE_SIZE; queues],
            queue_evts,
            stats_timer: [timer],
            stats_desc: None,
            latest_stats: BalloonStats::default(),
            hinting: HintingState::default(),
            metrics: Arc::new(BalloonMetrics::default()),
            log: RateLimitedLog::default(),
            sink: None,
            active: None,
            early_notified: 0,
        })
    }

    /// Sends runtime status changes to `sink` (and the current statistics right away).
    pub fn set_status_sink(&mut self, sink: BalloonStatusSink) {
        self.sink = Some(sink);
        self.publish_stats();
        if self.cfg.free_page_hinting {
            self.publish_hinting();
        }
    }

    /// The `balloon` metric group.
    pub fn metrics(&self) -> &Arc<BalloonMetrics> {
        &self.metrics
    }

    /// The configuration as `GET /balloon` reports it (target in whole MiB).
    pub fn config(&self) -> BalloonConfig {
        BalloonConfig {
            amount_mib: u64::from(pages_to_mib(self.config.num_pages)),
            ..self.cfg
        }
    }

    /// Target, 4 KiB pages.
    pub fn num_pages(&self) -> u32 {
        self.config.num_pages
    }

    /// Pages the driver reports holding.
    pub fn actual_pages(&self) -> u32 {
        self.config.actual_pages
    }

    fn stats_enabled(&self) -> bool {
        self.cfg.stats_polling_interval_s > 0
    }

    /// The role of queue `idx`.
    pub(crate) fn role(&self, idx: usize) -> Option<Role> {
        let mut roles = vec![Role::Inflate, Role::Deflate];
        if self.stats_enabled() {
            roles.push(Role::Stats);
        }
        if self.cfg.free_page_hinting {
            roles.push(Role::Hinting);
        }
        if self.cfg.free_page_reporting {
            roles.push(Role::Reporting);
        }
        roles.get(idx).copied()
    }

    fn index_of(&self, role: Role) -> Option<usize> {
        (0..self.queue_sizes.len()).find(|&i| self.role(i) == Some(role))
    }

    /// The latest statistics (Firecracker's `latest_stats`).
    pub fn latest_stats(&self) -> Result<BalloonStats, BalloonError> {
        if !self.stats_enabled() {
            return Err(BalloonError::StatisticsDisabled);
        }
        let mut s = self.latest_stats.clone();
        s.target_pages = self.config.num_pages;
        s.actual_pages = self.config.actual_pages;
        s.target_mib = pages_to_mib(s.target_pages);
        s.actual_mib = pages_to_mib(s.actual_pages);
        Ok(s)
    }

    fn publish_stats(&self) {
        if let (Some(sink), Ok(stats)) = (&self.sink, self.latest_stats()) {
            sink(BalloonStatus::Stats(Box::new(stats)));
        }
    }

    fn publish_hinting(&self) {
        if let Some(sink) = &self.sink {
            sink(BalloonStatus::Hinting(self.hinting_status_unchecked()));
        }
    }

    fn config_interrupt(&self) -> Result<(), BalloonError> {
        let active = self.active.as_ref().ok_or(BalloonError::DeviceNotActive)?;
        active
            .interrupt
            .trigger(InterruptKind::Config)
            .map_err(|e| BalloonError::Interrupt(e.to_string()))
    }

    /// `PATCH /balloon`: a new target. The driver must be active; the target may not exceed
    /// guest memory.
    pub fn update_size(&mut self, amount_mib: u64) -> Result<(), BalloonError> {
        let active = self.active.as_ref().ok_or(BalloonError::DeviceNotActive)?;
        let mem_mib = active.mem.iter().map(GuestMemoryRegion::len).sum::<u64>() >> 20;
        if amount_mib > mem_mib {
            return Err(BalloonError::TooMuchMemoryRequested(amount_mib));
        }
        self.config.num_pages =
            mib_to_pages(amount_mib).ok_or(BalloonError::TooMuchMemoryRequested(amount_mib))?;
        self.publish_stats();
        self.config_interrupt()
    }

    /// `PATCH /balloon/statistics`: a new interval; statistics cannot be switched on or off.
    pub fn update_stats_polling_interval(&mut self, interval_s: u16) -> Result<(), BalloonError> {
        if self.cfg.stats_polling_interval_s == interval_s {
            return Ok(());
        }
        if self.cfg.stats_polling_interval_s == 0 || interval_s == 0 {
            return Err(BalloonError::StatisticsStateChange);
        }
        self.request_stats();
        self.cfg.stats_polling_interval_s = interval_s;
        self.arm_stats_timer()
    }

    fn arm_stats_timer(&mut self) -> Result<(), BalloonError> {
        let period = Duration::from_secs(u64::from(self.cfg.stats_polling_interval_s));
        self.stats_timer[0]
            .reset(period, Some(period))
            .map_err(|e| BalloonError::Timer(e.to_string()))
    }

    fn require_hinting(&self) -> Result<(), BalloonError> {
        if self.cfg.free_page_hinting {
            Ok(())
        } else {
            Err(BalloonError::HintingNotEnabled)
        }
    }

    fn set_hint_cmd(&mut self, cmd: u32) -> Result<(), BalloonError> {
        if self.active.is_none() {
            return Err(BalloonError::DeviceNotActive);
        }
        self.hinting.host_cmd = cmd;
        self.config.free_page_hint_cmd_id = cmd;
        self.publish_hinting();
        self.config_interrupt()
    }

    /// `PATCH /balloon/hinting/start`: a new command id (2 and up; 0 and 1 are reserved).
    pub fn start_hinting(&mut self, acknowledge_on_stop: bool) -> Result<(), BalloonError> {
        self.require_hinting()?;
        let mut cmd = self.hinting.last_cmd_id.wrapping_add(1);
        if cmd <= FREE_PAGE_HINT_DONE {
            cmd = 2;
        }
        self.hinting.acknowledge_on_finish = acknowledge_on_stop;
        self.hinting.last_cmd_id = cmd;
        self.set_hint_cmd(cmd)
    }

    /// `GET`/`PATCH /balloon/hinting/status`.
    pub fn hinting_status(&self) -> Result<BalloonHintingStatus, BalloonError> {
        self.require_hinting()?;
        Ok(self.hinting_status_unchecked())
    }

    fn hinting_status_unchecked(&self) -> BalloonHintingStatus {
        BalloonHintingStatus {
            host_cmd: self.hinting.host_cmd,
            guest_cmd: self.hinting.guest_cmd,
        }
    }

    /// `PATCH /balloon/hinting/stop`: publish `DONE`; the guest may reuse the hinted pages.
    pub fn stop_hinting(&mut self) -> Result<(), BalloonError> {
        self.require_hinting()?;
        self.set_hint_cmd(FREE_PAGE_HINT_DONE)
    }

    /// Returns the held statistics buffer, which asks the driver for fresh numbers.
    fn request_stats(&mut self) {
        let Some(idx) = self.index_of(Role::Stats) else {
            return;
        };
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(head) = self.stats_desc.take() else {
            rl_warn!(
                self.log,
                "virtio-balloon: failed to update balloon stats, missing descriptor"
            );
            return;
        };
        let queue = &mut active.queues[idx];
        if queue.add_used(&active.mem, head, 0).is_err() {
            self.metrics.event_fails.inc();
            rl_error!(self.log, "virtio-balloon: cannot return the stats buffer");
            return;
        }
        signal(active, idx, &self.metrics, &self.log);
    }

    fn process_inflate(&mut self) {
        self.metrics.inflate_count.inc();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (metrics, log) = (&self.metrics, &self.log);
        let run = queue::drain(&mut active.queues[INFLATE], mem, |_, chain| {
            inflate_chain(mem, &chain, metrics, log);
            Step::Used(0)
        });
        finish(active, INFLATE, &run, metrics, log);
    }

    fn process_deflate(&mut self) {
        self.metrics.deflate_count.inc();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let (metrics, log) = (&self.metrics, &self.log);
        let run = queue::drain(&mut active.queues[DEFLATE], &active.mem, |_, _| {
            Step::Used(0)
        });
        finish(active, DEFLATE, &run, metrics, log);
    }

    fn process_stats(&mut self, idx: usize) {
        self.metrics.stats_updates_count.inc();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let mut replaced = Vec::new();
        let (held, latest, metrics, log) = (
            &mut self.stats_desc,
            &mut self.latest_stats,
            &self.metrics,
            &self.log,
        );
        let run = queue::drain(&mut active.queues[idx], mem, |head, chain| {
            if let Some(old) = held.replace(head) {
                // A driver keeps one buffer; return the older one (Firecracker does too).
                rl_warn!(
                    log,
                    "virtio-balloon: driver is not compliant, more than one stats buffer received"
                );
                replaced.push(old);
            }
            let len = chain.readable_len();
            if len > u64::from(MAX_STATS_TAGS * STAT_SIZE) {
                metrics.stats_update_fails.inc();
                rl_warn!(log, "virtio-balloon: stats buffer too large: {len} bytes");
                return Step::Pending;
            }
            if let Some(bytes) = read_stream(mem, &chain.readable) {
                let unknown = parse_stats(&bytes, latest);
                metrics.stats_update_fails.add(u64::from(unknown));
            } else {
                metrics.stats_update_fails.inc();
                rl_warn!(log, "virtio-balloon: unreadable stats buffer");
            }
            Step::Pending
        });
        let mut used = false;
        for head in replaced {
            if head < active.queues[idx].size()
                && active.queues[idx].add_used(&active.mem, head, 0).is_ok()
            {
                used = true;
            }
        }
        let run = queue::Drain {
            used: run.used || used,
            ..run
        };
        finish(active, idx, &run, &self.metrics, &self.log);
        self.publish_stats();
    }

    fn process_hinting(&mut self, idx: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let host_cmd = self.hinting.host_cmd;
        let (hinting, metrics, log) = (&mut self.hinting, &self.metrics, &self.log);
        let mut complete = false;
        let run = queue::drain(&mut active.queues[idx], mem, |_, chain| {
            for seg in chain.readable.iter().chain(&chain.writable) {
                if seg.len == 4 {
                    let Ok(cmd) = mem.read_obj::<u32>(seg.addr) else {
                        metrics.event_fails.inc();
                        continue;
                    };
                    hinting.guest_cmd = Some(cmd);
                    complete = cmd == FREE_PAGE_HINT_STOP || cmd == FREE_PAGE_HINT_DONE;
                    continue;
                }
                // Hints of a finished (or never started) run are stale: ignore them.
                if host_cmd == FREE_PAGE_HINT_DONE || host_cmd == FREE_PAGE_HINT_STOP {
                    continue;
                }
                if hinting.guest_cmd != Some(host_cmd) {
                    continue;
                }
                metrics.free_page_hint_count.inc();
                if discard(mem, seg.addr.0, u64::from(seg.len), log) {
                    metrics.free_page_hint_freed.add(u64::from(seg.len));
                } else {
                    metrics.free_page_hint_fails.inc();
                }
            }
            Step::Used(0)
        });
        finish(active, idx, &run, &self.metrics, &self.log);
        if run.popped {
            self.publish_hinting();
        }
        if complete
            && self.hinting.acknowledge_on_finish
            && let Err(e) = self.set_hint_cmd(FREE_PAGE_HINT_DONE)
        {
            rl_error!(self.log, "virtio-balloon: cannot acknowledge hinting: {e}");
        }
    }

    fn process_reporting(&mut self, idx: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (metrics, log) = (&self.metrics, &self.log);
        let run = queue::drain(&mut active.queues[idx], mem, |_, chain| {
            for seg in chain.readable.iter().chain(&chain.writable) {
                metrics.free_page_report_count.inc();
                if discard(mem, seg.addr.0, u64::from(seg.len), log) {
                    metrics.free_page_report_freed.add(u64::from(seg.len));
                } else {
                    metrics.free_page_report_fails.inc();
                }
            }
            Step::Used(0)
        });
        finish(active, idx, &run, metrics, log);
    }

    /// Restored state that must survive activation (set by [`super::persist`]).
    pub(crate) fn restore_parts(
        &mut self,
        config: ConfigSpace,
        stats_desc: Option<u16>,
        latest: BalloonStats,
        hinting: HintingState,
    ) {
        self.config = config;
        self.stats_desc = stats_desc;
        self.latest_stats = latest;
        self.hinting = hinting;
    }
}

/// Reads the bytes of `segs` (bounded by the caller) as one stream.
fn read_stream(mem: &GuestMemoryMmap, segs: &[Segment]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for seg in segs {
        let start = out.len();
        out.resize(start + usize::try_from(seg.len).ok()?, 0);
        mem.read_slice(&mut out[start..], seg.addr).ok()?;
    }
    Some(out)
}

/// Releases `[addr, addr + len)`; `false` (logged) if it is not page-aligned guest memory.
fn discard(mem: &GuestMemoryMmap, addr: u64, len: u64, log: &RateLimitedLog) -> bool {
    match squib_sys::guest_memory::discard_range(mem, GuestAddress(addr), len) {
        Ok(()) => true,
        Err(e) => {
            rl_warn!(log, "virtio-balloon: cannot release memory: {e}");
            false
        }
    }
}

/// Releases the pages named by one inflate chain.
fn inflate_chain(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    metrics: &BalloonMetrics,
    log: &RateLimitedLog,
) {
    if !chain.writable.is_empty() {
        metrics.event_fails.inc();
        rl_warn!(log, "virtio-balloon: inflate buffer is device-writable");
    }
    for seg in &chain.readable {
        let len = seg.len as usize;
        if !len.is_multiple_of(4) || len > MAX_PAGES_IN_DESC * 4 {
            metrics.event_fails.inc();
            rl_warn!(
                log,
                "virtio-balloon: inflate descriptor has bogus length {len}, skipping"
            );
            continue;
        }
        let mut bytes = vec![0u8; len];
        if mem.read_slice(&mut bytes, seg.addr).is_err() {
            metrics.event_fails.inc();
            rl_warn!(log, "virtio-balloon: unreadable inflate descriptor");
            continue;
        }
        let mut pfns = parse_pfns(&bytes);
        for (pfn, count) in compact_pfns(&mut pfns) {
            let addr = u64::from(pfn) << PFN_SHIFT;
            let len = u64::from(count) << PFN_SHIFT;
            if !discard(mem, addr, len, log) {
                metrics.event_fails.inc();
            }
        }
    }
}

fn signal(active: &mut Active, idx: usize, metrics: &BalloonMetrics, log: &RateLimitedLog) {
    let Ok(qidx) = u16::try_from(idx) else {
        return;
    };
    if let Err(err) = queue::signal_used(
        &mut active.queues[idx],
        &active.mem,
        &*active.interrupt,
        qidx,
    ) {
        metrics.event_fails.inc();
        rl_error!(log, "virtio-balloon: failed to signal used buffers: {err}");
    }
}

/// Counts ring problems of one drain and interrupts the driver if buffers were returned.
fn finish(
    active: &mut Active,
    idx: usize,
    run: &queue::Drain,
    metrics: &BalloonMetrics,
    log: &RateLimitedLog,
) {
    if run.broken_ring {
        metrics.event_fails.inc();
        rl_warn!(
            log,
            "virtio-balloon: invalid available ring index on queue {idx}"
        );
    }
    if run.ring_errors > 0 {
        metrics.event_fails.add(u64::from(run.ring_errors));
        rl_error!(log, "virtio-balloon: failed to update the used ring");
    }
    if run.used {
        signal(active, idx, metrics, log);
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        let mut f = features::bit(features::VERSION_1);
        if self.stats_enabled() {
            f |= features::bit(feature::STATS_VQ);
        }
        if self.cfg.deflate_on_oom {
            f |= features::bit(feature::DEFLATE_ON_OOM);
        }
        if self.cfg.free_page_hinting {
            f |= features::bit(feature::FREE_PAGE_HINT);
        }
        if self.cfg.free_page_reporting {
            f |= features::bit(feature::REPORTING);
        }
        f
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !super::super::read_config_bytes(&self.config.bytes(), offset, data) {
            rl_warn!(
                self.log,
                "virtio-balloon: config read of {} bytes at {offset:#x} out of range",
                data.len()
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is the driver's to write.
        if offset == 4 && data.len() == 4 {
            let mut b = [0u8; 4];
            b.copy_from_slice(data);
            self.config.actual_pages = u32::from_le_bytes(b);
            self.publish_stats();
            return;
        }
        rl_warn!(
            self.log,
            "virtio-balloon: ignoring config write of {} bytes at {offset:#x}",
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
        if queues.len() != self.queue_sizes.len() {
            self.metrics.activate_fails.inc();
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                got: queues.len(),
            });
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        if self.stats_enabled()
            && let Err(e) = self.arm_stats_timer()
        {
            self.metrics.activate_fails.inc();
            self.active = None;
            return Err(ActivateError::Unsupported(e.to_string()));
        }
        self.publish_stats();
        let early = std::mem::take(&mut self.early_notified);
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if early & bit(i) != 0 {
                let _ = evt.write(1);
            }
        }
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.config.actual_pages = 0;
        self.config.free_page_hint_cmd_id = FREE_PAGE_HINT_STOP;
        let _ = self.stats_timer[0].clear();
        self.stats_desc = None;
        self.latest_stats = BalloonStats::default();
        self.hinting = HintingState::default();
        self.early_notified = 0;
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.publish_stats();
        if self.cfg.free_page_hinting {
            self.publish_hinting();
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| a.queues.as_slice())
    }

    fn process_queue_event(&mut self, idx: usize) {
        let Some(evt) = self.queue_evts.get(idx) else {
            self.metrics.event_fails.inc();
            return;
        };
        if let Err(err) = evt.read()
            && err.kind() != std::io::ErrorKind::WouldBlock
        {
            self.metrics.event_fails.inc();
            rl_error!(
                self.log,
                "virtio-balloon: failed to read a queue event: {err}"
            );
        }
        if self.active.is_none() {
            self.early_notified |= bit(idx);
            return;
        }
        match self.role(idx) {
            Some(Role::Inflate) => self.process_inflate(),
            Some(Role::Deflate) => self.process_deflate(),
            Some(Role::Stats) => self.process_stats(idx),
            Some(Role::Hinting) => self.process_hinting(idx),
            Some(Role::Reporting) => self.process_reporting(idx),
            None => self.metrics.event_fails.inc(),
        }
    }

    fn timer_events(&self) -> &[TimerFd] {
        &self.stats_timer
    }

    fn process_timer(&mut self, idx: usize) {
        if idx != 0 {
            self.metrics.event_fails.inc();
            return;
        }
        match self.stats_timer[0].wait() {
            Ok(_) => {}
            // Re-armed since epoll saw it: nothing expired.
            Err(e) if e.errno() == libc_eagain() => return,
            Err(e) => {
                self.metrics.event_fails.inc();
                rl_error!(self.log, "virtio-balloon: stats timer read failed: {e}");
                return;
            }
        }
        if self.active.is_some() && self.stats_enabled() {
            self.request_stats();
        }
    }
}

/// `EAGAIN` on Linux (no libc dependency in this crate).
const fn libc_eagain() -> i32 {
    11
}
