//! [`Block`]: the virtio-blk device model.
//!
//! Queue processing runs on the VMM's event loop ([`VirtioDevice::process_queue_event`]): every
//! available chain is walked (`Chain::walk`), parsed ([`Request`]), charged to the rate limiter
//! (one op, plus the data length in bytes for reads and writes), executed, and returned on the
//! used ring with its status byte. A refused charge puts the chain back, arms the rate-limiter
//! timer and stops; the timer event resumes processing.
//!
//! With the `Sync` engine every request executes on the backing file before the next one is
//! looked at. With the `Async` engine ([`AsyncEngine`]) reads, writes and (`Writeback`) flushes
//! are queued on an io_uring instead, the chain's head and status address are kept in the engine's
//! in-flight table, and the whole batch is submitted with one system call after the queue is
//! drained. Completions are reaped right after that submission (page-cache hits finish inline)
//! and whenever the ring's eventfd fires ([`VirtioDevice::process_completion_event`]); each one
//! writes the status byte and returns its chain on the used ring, in completion order. A full
//! in-flight table stops draining (`io_engine_throttled_events`) until a completion frees an
//! entry; the engine is checked before the rate limiter is charged, so a throttled chain is not
//! charged twice. `GET_ID`, unsupported types and `Unsafe` flushes complete synchronously.
//!
//! A reset waits for the outstanding requests and discards them (counted in
//! `remaining_reqs_count`); a disk swap waits for and completes them first, so no request runs
//! against a file the device no longer has and nothing is written into guest memory after the
//! driver reset the device. The
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

use squib_core::GuestMemoryMmap;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use super::async_io::{AsyncEngine, InFlight, Op};
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
    /// The `Async` engine; `None` for `Sync`.
    engine: Option<AsyncEngine>,
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
    /// Opens the backing file and builds the device; for `IoEngine::Async` also creates the
    /// io_uring (see [`BlockError::UnsupportedEngine`] and [`BlockError::AsyncEngine`] for a host
    /// that cannot).
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        let disk = Disk::open(&config.path, config.read_only)?;
        let engine = match config.io_engine {
            IoEngine::Sync => None,
            IoEngine::Async => Some(AsyncEngine::new(MAX_QUEUE_SIZE).map_err(engine_error)?),
        };
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
                engine,
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

    /// The I/O engine.
    pub fn io_engine(&self) -> IoEngine {
        if self.backend.engine.is_some() {
            IoEngine::Async
        } else {
            IoEngine::Sync
        }
    }

    /// Test seam: the `Async` engine, to hold submissions or replace it with a smaller one.
    #[cfg(test)]
    pub(crate) fn engine_mut(&mut self) -> &mut Option<AsyncEngine> {
        &mut self.backend.engine
    }

    /// Requests submitted to the `Async` engine and not yet completed (always 0 for `Sync`).
    pub fn in_flight(&self) -> usize {
        self.backend
            .engine
            .as_ref()
            .map_or(0, AsyncEngine::in_flight)
    }

    /// `PATCH /drives {path_on_host}`: reopens the drive on `path` (with the same read-only
    /// flag), takes its size as the new capacity, bumps the configuration generation and, if the
    /// driver is active, raises a configuration-change interrupt. On error the old file stays.
    /// Requests in flight on the `Async` engine are waited for and completed first.
    pub fn update_disk(&mut self, path: &Path) -> Result<(), BlockError> {
        let disk = match Disk::open(path, self.backend.read_only) {
            Ok(disk) => disk,
            Err(err) => {
                self.backend.metrics.update_fails.inc();
                return Err(err);
            }
        };
        self.complete_all_in_flight();
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

    /// Restores the configuration generation (snapshot restore).
    pub(crate) fn set_config_generation(&mut self, generation: u32) {
        self.config_generation = generation;
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
        let run = queue::drain(&mut active.queue, mem, |head, chain| {
            backend.handle(mem, head, &chain)
        });
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
        let mut used = run.used;
        if let Some(engine) = backend.engine.as_mut() {
            if let Err(err) = engine.kick() {
                // The entries stay queued; the next queue or completion event submits them.
                metrics.event_fails.inc();
                rl_error!(backend.log, "virtio-blk: io_uring submission failed: {err}");
            }
            used |= complete_ready(engine, active, metrics, &backend.log);
        }
        if used {
            signal(active, metrics, &backend.log);
        }
    }

    /// Reaps the `Async` engine's completions and resumes a queue the full engine had stopped.
    fn process_completions(&mut self) {
        let Some(engine) = self.backend.engine.as_mut() else {
            return;
        };
        if let Err(err) = engine.clear_event() {
            self.backend.metrics.event_fails.inc();
            rl_error!(
                self.backend.log,
                "virtio-blk: failed to read the completion event: {err}"
            );
        }
        let Some(active) = self.active.as_mut() else {
            // Nothing can be in flight while inactive (a reset discards it all).
            engine.reap(|_, _| {});
            return;
        };
        if let Err(err) = engine.kick() {
            self.backend.metrics.event_fails.inc();
            rl_error!(
                self.backend.log,
                "virtio-blk: io_uring submission failed: {err}"
            );
        }
        let metrics = &self.backend.metrics;
        if complete_ready(engine, active, metrics, &self.backend.log) {
            signal(active, metrics, &self.backend.log);
        }
        if engine.throttled && !self.backend.throttle.is_blocked() {
            engine.throttled = false;
            self.process_queue();
        }
    }

    /// Waits for and completes every request in flight on the `Async` engine (disk swap).
    fn complete_all_in_flight(&mut self) {
        let Some(engine) = self.backend.engine.as_mut() else {
            return;
        };
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let metrics = &self.backend.metrics;
        let mut used = false;
        while engine.in_flight() > 0 {
            if let Err(err) = engine.wait() {
                metrics.event_fails.inc();
                rl_error!(
                    self.backend.log,
                    "virtio-blk: waiting for io_uring completions failed: {err}"
                );
                break;
            }
            used |= complete_ready(engine, active, metrics, &self.backend.log);
        }
        if used {
            signal(active, metrics, &self.backend.log);
        }
    }
}

/// Completes every request the engine has finished: status byte, metrics, used ring. Returns
/// whether any chain was returned on the used ring.
fn complete_ready(
    engine: &mut AsyncEngine,
    active: &mut Active,
    metrics: &BlockMetrics,
    log: &RateLimitedLog,
) -> bool {
    let mut used = false;
    let mut ring_errors = 0u64;
    let mem = &active.mem;
    let queue = &mut active.queue;
    engine.reap(|done, result| {
        let (status, len) = completion_status(&done, result, metrics, log);
        let len = if write_status(mem, done.status, status) {
            len
        } else {
            metrics.execute_fails.inc();
            0
        };
        match queue.add_used(mem, done.head, len) {
            Ok(()) => used = true,
            Err(_) => ring_errors += 1,
        }
    });
    if ring_errors > 0 {
        metrics.event_fails.add(ring_errors);
        rl_error!(log, "virtio-blk: failed to update the used ring");
    }
    used
}

/// The status byte and used length of a completed request, with its metrics.
pub(crate) fn completion_status(
    done: &InFlight,
    result: i32,
    metrics: &BlockMetrics,
    log: &RateLimitedLog,
) -> (u8, u32) {
    let (what, want) = match done.op {
        Op::Read(n) => ("read", i64::from(n)),
        Op::Write(n) => ("write", i64::from(n)),
        Op::Flush => ("flush", 0),
    };
    if i64::from(result) != want {
        metrics.execute_fails.inc();
        if result < 0 {
            let err = std::io::Error::from_raw_os_error(-result);
            rl_error!(log, "virtio-blk: {what} failed: {err}");
        } else {
            rl_error!(
                log,
                "virtio-blk: {what} failed: short transfer of {result} of {want} bytes"
            );
        }
        return (S_IOERR, 1);
    }
    match done.op {
        Op::Read(n) => {
            metrics.read_agg.record(micros_since(done.start));
            metrics.read_bytes.add(u64::from(n));
            metrics.read_count.inc();
            (S_OK, n.saturating_add(1))
        }
        Op::Write(n) => {
            metrics.write_agg.record(micros_since(done.start));
            metrics.write_bytes.add(u64::from(n));
            metrics.write_count.inc();
            (S_OK, 1)
        }
        Op::Flush => (S_OK, 1),
    }
}

/// Interrupts the driver for the used buffers (subject to event-idx suppression).
fn signal(active: &mut Active, metrics: &BlockMetrics, log: &RateLimitedLog) {
    if let Err(err) = queue::signal_used(&mut active.queue, &active.mem, &*active.interrupt, 0) {
        metrics.event_fails.inc();
        rl_error!(log, "virtio-blk: failed to signal used buffers: {err}");
    }
}

/// Maps a failure to create the io_uring engine onto Firecracker's texts: a host without io_uring
/// (or with it disabled, or without the opcodes the engine needs) cannot run the engine at all.
pub(crate) fn engine_error(err: std::io::Error) -> BlockError {
    // ENOSYS maps to `Unsupported`, EPERM (io_uring disabled by `kernel.io_uring_disabled` or a
    // security policy) to `PermissionDenied`.
    let unsupported = matches!(
        err.kind(),
        std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
    );
    if unsupported {
        tracing::warn!("io_uring is unavailable on this host: {err}");
        BlockError::UnsupportedEngine(IoEngine::Async)
    } else {
        BlockError::AsyncEngine(err)
    }
}

impl Backend {
    /// Parses, charges and executes (or submits) one chain.
    fn handle(&mut self, mem: &GuestMemoryMmap, head: u16, chain: &Chain) -> Step {
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
        let asynchronous = self.engine.is_some()
            && match req.kind {
                RequestType::In | RequestType::Out => true,
                RequestType::Flush => self.writeback,
                _ => false,
            };
        if asynchronous && self.engine.as_ref().is_some_and(AsyncEngine::is_full) {
            self.metrics.io_engine_throttled_events.inc();
            if let Some(engine) = self.engine.as_mut() {
                engine.throttled = true;
            }
            return Step::Throttled;
        }
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
        if asynchronous && let Some(engine) = self.engine.as_mut() {
            if req.kind == RequestType::Flush {
                self.metrics.flush_count.inc();
            }
            match engine.submit(&self.disk, mem, &req, head) {
                Ok(()) => return Step::Pending,
                Err(err) => {
                    // Not reachable with a validated request and a free table entry; fail the
                    // request rather than lose it.
                    self.metrics.execute_fails.inc();
                    rl_error!(self.log, "virtio-blk: io_uring submission failed: {err}");
                    return Step::Used(u32::from(write_status(mem, req.status, S_IOERR)));
                }
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
        let queue = super::super::single_queue(queues, &self.backend.metrics.activate_fails)?;
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
        if let Some(engine) = self.backend.engine.as_mut() {
            // The kernel must be done with the old requests' buffers before the driver reuses
            // them; their completions are discarded (the driver is resetting the device).
            match engine.discard_all() {
                Ok(n) => self.backend.metrics.remaining_reqs_count.add(n as u64),
                Err(err) => {
                    self.backend.metrics.event_fails.inc();
                    tracing::error!(
                        "virtio-blk {}: waiting for io_uring on reset: {err}",
                        self.id
                    );
                }
            }
        }
        self.active = None;
        self.acked_features = 0;
        self.backend.throttle.reset();
        // Drop a notification that arrived for the old queue.
        let _ = self.queue_evts[0].read();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn queues(&self) -> &[Queue] {
        self.active
            .as_ref()
            .map_or(&[], |a| std::slice::from_ref(&a.queue))
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

    fn completion_events(&self) -> &[EventFd] {
        self.backend
            .engine
            .as_ref()
            .map_or(&[], AsyncEngine::events)
    }

    fn prepare_save(&mut self) {
        self.complete_all_in_flight();
    }

    fn process_completion_event(&mut self, idx: usize) {
        if idx != 0 {
            self.backend.metrics.event_fails.inc();
            return;
        }
        self.process_completions();
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
