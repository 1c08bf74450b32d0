//! [`Block`]: the virtio-blk device model.
//!
//! Queue processing runs on the VMM's event loop ([`VirtioDevice::process_queue_event`]): every
//! available chain is walked (`Chain::walk`), parsed ([`Request`]), charged to the rate limiter
//! (one op, plus the data length in bytes for reads and writes), executed synchronously on the
//! backing file, and returned on the used ring with its status byte. A refused charge puts the
//! chain back, arms the rate-limiter timer and stops; the timer event resumes processing. The
//! ring handling itself is shared with the other devices (`virtio::queue::drain`). Malformed
//! requests get `IOERR` when the chain has a status byte (and are still returned, with length 0
//! otherwise), are counted in `invalid_reqs_count` and logged through a rate-limited log. The
//! driver is interrupted once per batch, subject to `VIRTIO_RING_F_EVENT_IDX` suppression.
//!
//! Threading: `Send`, used behind `Arc<Mutex<Block>>` by the transport (vCPU threads) and the
//! event loop (VMM thread); see the [`virtio`](crate::virtio) module docs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use super::io::Disk;
use super::metrics::BlockMetrics;
use super::request::{
    Request, RequestType, S_IOERR, S_OK, S_UNSUPP, device_id, write_status, write_to_segments,
};
use super::{BlockConfig, BlockError, CacheType, ID_BYTES, IoEngine};
use crate::log::RateLimitedLog;
use crate::rate_limiter::{BucketUpdate, RateLimiter};
use crate::virtio::chain::Chain;
use crate::virtio::queue::{self, Step};
use crate::virtio::throttle::Throttle;
use crate::virtio::{
    ActivateError, InterruptKind, MAX_QUEUE_SIZE, VirtioDevice, VirtioInterrupt, device_type,
    features, read_config_bytes,
};
use crate::{rl_error, rl_warn};

/// The driver-visible state while active.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// The request-executing half, split from the queue so both can be borrowed at once.
#[derive(Debug)]
struct Backend {
    disk: Disk,
    id_bytes: [u8; ID_BYTES],
    read_only: bool,
    writeback: bool,
    throttle: Throttle,
    metrics: Arc<BlockMetrics>,
    log: RateLimitedLog,
}

/// A virtio-blk device backed by a host file (see the [module docs](self)).
pub struct Block {
    id: String,
    root: bool,
    partuuid: Option<String>,
    cache_type: CacheType,
    avail_features: u64,
    acked_features: u64,
    config_generation: u32,
    queue_sizes: [u16; 1],
    queue_evts: [EventFd; 1],
    backend: Backend,
    active: Option<Active>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("id", &self.id)
            .field("root", &self.root)
            .field("acked_features", &self.acked_features)
            .field("config_generation", &self.config_generation)
            .field("backend", &self.backend)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Block {
    /// Opens the backing file and builds the device. Refuses `IoEngine::Async`.
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        if config.io_engine == IoEngine::Async {
            return Err(BlockError::UnsupportedEngine(IoEngine::Async));
        }
        let disk = Disk::open(&config.path, config.read_only)?;
        let mut avail_features =
            features::bit(features::VERSION_1) | features::bit(features::RING_EVENT_IDX);
        if config.cache_type == CacheType::Writeback {
            avail_features |= features::bit(VIRTIO_BLK_F_FLUSH);
        }
        if config.read_only {
            avail_features |= features::bit(VIRTIO_BLK_F_RO);
        }
        Ok(Self {
            backend: Backend {
                disk,
                id_bytes: device_id(&config.id),
                read_only: config.read_only,
                writeback: config.cache_type == CacheType::Writeback,
                throttle: Throttle::new(config.rate_limiter).map_err(BlockError::EventFd)?,
                metrics: Arc::new(BlockMetrics::new()),
                log: RateLimitedLog::default(),
            },
            id: config.id,
            root: config.root,
            partuuid: config.partuuid,
            cache_type: config.cache_type,
            avail_features,
            acked_features: 0,
            config_generation: 0,
            queue_sizes: [MAX_QUEUE_SIZE],
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(BlockError::EventFd)?],
            active: None,
        })
    }

    /// The drive id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this is the root device.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The root partition UUID, if any.
    pub fn partuuid(&self) -> Option<&str> {
        self.partuuid.as_deref()
    }

    /// Whether the drive is read-only.
    pub fn is_read_only(&self) -> bool {
        self.backend.read_only
    }

    /// The cache strategy.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
    }

    /// Capacity in 512-byte sectors (the configuration space).
    pub fn capacity(&self) -> u64 {
        self.backend.disk.nsectors()
    }

    /// The backing file's path.
    pub fn path(&self) -> &Path {
        self.backend.disk.path()
    }

    /// The drive's `block` metric group.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.backend.metrics
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &RateLimiter {
        self.backend.throttle.limiter()
    }

    /// `PATCH /drives {path_on_host}`: reopens the drive on `path` (with the same read-only
    /// flag), takes its size as the new capacity, bumps the configuration generation and, if the
    /// driver is active, raises a configuration-change interrupt. On error the old file stays.
    pub fn update_disk(&mut self, path: &Path) -> Result<(), BlockError> {
        let disk = match Disk::open(path, self.backend.read_only) {
            Ok(disk) => disk,
            Err(err) => {
                self.backend.metrics.update_fails.inc();
                return Err(err);
            }
        };
        self.backend.disk = disk;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.backend.metrics.update_count.inc();
        if let Some(active) = &self.active
            && let Err(err) = active.interrupt.trigger(InterruptKind::Config)
        {
            self.backend.metrics.event_fails.inc();
            tracing::error!(
                "virtio-blk {}: failed to signal the config change: {err}",
                self.id
            );
        }
        Ok(())
    }

    /// `PATCH /drives {rate_limiter}`: replaces, removes or keeps each bucket.
    pub fn update_rate_limiter(&mut self, bytes: BucketUpdate, ops: BucketUpdate) {
        self.backend.throttle.update(bytes, ops);
    }

    /// The capacity as the configuration space holds it.
    fn config_space(&self) -> [u8; 8] {
        self.backend.disk.nsectors().to_le_bytes()
    }

    /// Processes every available request (see the module docs).
    fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let backend = &mut self.backend;
        let mem = &active.mem;
        let run = queue::drain(&mut active.queue, mem, |chain| backend.handle(mem, &chain));
        let metrics = &backend.metrics;
        if !run.popped && !run.broken_ring {
            metrics.no_avail_buffer.inc();
        }
        if run.broken_ring {
            metrics.event_fails.inc();
            rl_warn!(backend.log, "virtio-blk: invalid available ring index");
        }
        if run.ring_errors > 0 {
            metrics.event_fails.add(u64::from(run.ring_errors));
            rl_error!(backend.log, "virtio-blk: failed to update the used ring");
        }
        if run.used
            && let Err(err) = queue::signal_used(&mut active.queue, mem, &*active.interrupt, 0)
        {
            metrics.event_fails.inc();
            rl_error!(
                backend.log,
                "virtio-blk: failed to signal used buffers: {err}"
            );
        }
    }
}

impl Backend {
    /// Parses, charges and executes one chain.
    fn handle(&mut self, mem: &GuestMemoryMmap, chain: &Chain) -> Step {
        let req = match Request::parse(chain, mem, self.disk.nsectors(), self.read_only) {
            Ok(req) => req,
            Err(err) => {
                self.metrics.invalid_reqs_count.inc();
                rl_warn!(self.log, "virtio-blk: invalid request: {err}");
                let status = chain.last_writable_byte(mem);
                return Step::Used(u32::from(
                    status.is_some_and(|addr| write_status(mem, addr, S_IOERR)),
                ));
            }
        };
        let bytes = match req.kind {
            RequestType::In | RequestType::Out => u64::from(req.data_len),
            _ => 0,
        };
        match self.throttle.consume(bytes) {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.rate_limiter_throttled_events.inc();
                return Step::Throttled;
            }
            Err(err) => {
                // Without the timer the queue resumes on the next notification only.
                self.metrics.event_fails.inc();
                rl_error!(
                    self.log,
                    "virtio-blk: failed to arm the rate limiter timer: {err}"
                );
                return Step::Throttled;
            }
        }
        let (status, used) = self.execute(mem, &req);
        if !write_status(mem, req.status, status) {
            self.metrics.execute_fails.inc();
            return Step::Used(0);
        }
        Step::Used(used)
    }

    /// Runs a parsed request; returns the status byte and the used length (data + status).
    fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> (u8, u32) {
        match req.kind {
            RequestType::In => {
                let start = Instant::now();
                match self.disk.read(mem, req.offset(), &req.data) {
                    Ok(n) => {
                        self.metrics.read_agg.record(micros_since(start));
                        self.metrics.read_bytes.add(n);
                        self.metrics.read_count.inc();
                        (S_OK, req.data_len.saturating_add(1))
                    }
                    Err(err) => self.io_failed("read", &err),
                }
            }
            RequestType::Out => {
                let start = Instant::now();
                match self.disk.write(mem, req.offset(), &req.data) {
                    Ok(n) => {
                        self.metrics.write_agg.record(micros_since(start));
                        self.metrics.write_bytes.add(n);
                        self.metrics.write_count.inc();
                        (S_OK, 1)
                    }
                    Err(err) => self.io_failed("write", &err),
                }
            }
            RequestType::Flush => {
                self.metrics.flush_count.inc();
                if self.writeback
                    && let Err(err) = self.disk.flush()
                {
                    return self.io_failed("flush", &err);
                }
                (S_OK, 1)
            }
            RequestType::GetId => {
                if let Some(n) = write_to_segments(mem, &req.data, &self.id_bytes) {
                    (S_OK, n.saturating_add(1))
                } else {
                    self.metrics.execute_fails.inc();
                    (S_IOERR, 1)
                }
            }
            RequestType::Unsupported(t) => {
                rl_warn!(self.log, "virtio-blk: unsupported request type {t}");
                (S_UNSUPP, 1)
            }
        }
    }

    fn io_failed(&self, what: &str, err: &super::io::DiskIoError) -> (u8, u32) {
        self.metrics.execute_fails.inc();
        rl_error!(self.log, "virtio-blk: {what} failed: {err}");
        (S_IOERR, 1)
    }
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
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
        if !read_config_bytes(&self.config_space(), offset, data) {
            self.backend.metrics.cfg_fails.inc();
            rl_warn!(
                self.backend.log,
                "virtio-blk: config read of {} bytes at {offset:#x} is out of range",
                data.len()
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.backend.metrics.cfg_fails.inc();
        rl_warn!(
            self.backend.log,
            "virtio-blk: ignoring config write of {} bytes at {offset:#x} (read-only)",
            data.len()
        );
    }

    fn config_generation(&self) -> u32 {
        self.config_generation
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            self.backend.metrics.activate_fails.inc();
            return Err(ActivateError::AlreadyActive);
        }
        let [queue]: [Queue; 1] = queues.try_into().map_err(|q: Vec<Queue>| {
            self.backend.metrics.activate_fails.inc();
            ActivateError::QueueCount {
                expected: 1,
                got: q.len(),
            }
        })?;
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.backend.throttle.reset();
        // Drop a notification that arrived for the old queue.
        let _ = self.queue_evts[0].read();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn process_queue_event(&mut self, idx: usize) {
        let Some(evt) = self.queue_evts.get(idx) else {
            self.backend.metrics.event_fails.inc();
            return;
        };
        if let Err(err) = evt.read()
            && err.kind() != std::io::ErrorKind::WouldBlock
        {
            self.backend.metrics.event_fails.inc();
            rl_error!(
                self.backend.log,
                "virtio-blk: failed to read the queue event: {err}"
            );
        }
        self.backend.metrics.queue_event_count.inc();
        // While throttled, the timer event resumes processing.
        if !self.backend.throttle.is_blocked() {
            self.process_queue();
        }
    }

    fn timer_events(&self) -> &[TimerFd] {
        self.backend.throttle.timer_fds()
    }

    fn process_timer(&mut self, idx: usize) {
        if idx != 0 {
            self.backend.metrics.event_fails.inc();
            return;
        }
        self.backend.metrics.rate_limiter_event_count.inc();
        if let Err(err) = self.backend.throttle.on_timer() {
            self.backend.metrics.event_fails.inc();
            rl_warn!(self.backend.log, "virtio-blk: {err}");
        }
        self.process_queue();
    }
}
