//! virtio-pmem (device id 27) as Firecracker's `PUT /pmem/{id}` exposes it.
//!
//! The backing file is mapped as a guest-physical window above RAM (a
//! [`squib_sys::pmem::PmemMapping`] the VMM placed and handed to the hypervisor); the guest
//! reads and writes it directly, without exits. The device itself only has:
//!
//! - a 16-byte configuration space: the window's guest address and size (little endian);
//! - one request queue of 256 entries. The only request is FLUSH: a device-readable 4-byte
//!   request type (0) followed by a device-writable 4-byte status. The device writes the file
//!   back ([`PmemMapping::flush`]: `msync` + `fdatasync`) once per batch of requests (they all
//!   share the result, as in Firecracker) and answers 0, or -1 if the write-back failed; a
//!   malformed request is returned with length 0 and counted in `event_fails`;
//! - an optional rate limiter charging one operation plus the file's length per batch.
//!
//! A read-only device's window is mapped read-only by the hypervisor: guest writes exit as MMIO
//! writes, which the VMM routes to a [`ReadOnlyWindow`] that drops and counts them; the file
//! never changes.
//!
//! Threading: `Send`, behind `Arc<Mutex<Pmem>>`; see the [`virtio`](super) module docs.

pub mod metrics;
pub mod persist;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use squib_core::GuestMemoryMmap;
use squib_sys::pmem::PmemMapping;
use virtio_queue::Queue;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

pub use self::metrics::PmemMetrics;
pub use self::persist::{PmemRestoreError, PmemState};
use super::chain::Chain;
use super::queue::{self, Step};
use super::throttle::Throttle;
use super::{ActivateError, MAX_QUEUE_SIZE, VirtioDevice, VirtioInterrupt, features};
use crate::log::RateLimitedLog;
use crate::rate_limiter::{BucketUpdate, RateLimiter};
use crate::{BusDevice, rl_error, rl_warn};

/// virtio-pmem's device id (virtio 1.2 §5.19).
pub const PMEM_DEVICE_ID: u32 = 27;
/// The FLUSH request type.
pub const REQ_TYPE_FLUSH: u32 = 0;
/// Status of a successful flush.
pub const STATUS_OK: i32 = 0;
/// Status of a failed flush.
pub const STATUS_FAILURE: i32 = -1;

/// Errors building a [`Pmem`] device.
#[derive(Debug, thiserror::Error)]
pub enum PmemError {
    /// Creating the queue eventfd or the rate-limiter timer failed.
    #[error("Error with EventFd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// What `PUT /pmem/{id}` configured, besides the mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PmemDeviceConfig {
    /// Device id.
    pub id: String,
    /// Backing file path (kept for snapshots).
    pub path_on_host: String,
    /// `root=/dev/pmemN` was added for it.
    pub root_device: bool,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// The virtio-pmem device (see the [module docs](self)).
pub struct Pmem {
    config: PmemDeviceConfig,
    mapping: PmemMapping,
    acked_features: u64,
    queue_sizes: [u16; 1],
    queue_evts: [EventFd; 1],
    throttle: Throttle,
    metrics: Arc<PmemMetrics>,
    log: RateLimitedLog,
    active: Option<Active>,
}

impl std::fmt::Debug for Pmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pmem")
            .field("config", &self.config)
            .field("guest_addr", &self.mapping.guest_addr())
            .field("len", &self.mapping.len())
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Pmem {
    /// A device serving `mapping`, limited by `rate_limiter`.
    pub fn new(
        config: PmemDeviceConfig,
        mapping: PmemMapping,
        rate_limiter: RateLimiter,
    ) -> Result<Self, PmemError> {
        Ok(Self {
            config,
            mapping,
            acked_features: 0,
            queue_sizes: [MAX_QUEUE_SIZE],
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(PmemError::EventFd)?],
            throttle: Throttle::new(rate_limiter).map_err(PmemError::EventFd)?,
            metrics: Arc::new(PmemMetrics::default()),
            log: RateLimitedLog::default(),
            active: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PmemDeviceConfig {
        &self.config
    }

    /// The mapping (window address and size, backing file).
    pub fn mapping(&self) -> &PmemMapping {
        &self.mapping
    }

    /// The `pmem` metric group.
    pub fn metrics(&self) -> &Arc<PmemMetrics> {
        &self.metrics
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &RateLimiter {
        self.throttle.limiter()
    }

    /// `PATCH /pmem/{id}`: replaces, removes or keeps each bucket.
    pub fn update_rate_limiter(&mut self, bytes: BucketUpdate, ops: BucketUpdate) {
        self.throttle.update(bytes, ops);
    }

    /// A bus device for the window of a read-only device: drops and counts guest writes.
    pub fn read_only_window(&self) -> ReadOnlyWindow {
        ReadOnlyWindow {
            metrics: Arc::clone(&self.metrics),
            log: RateLimitedLog::default(),
        }
    }

    fn config_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.mapping.guest_addr().to_le_bytes());
        b[8..].copy_from_slice(&self.mapping.len().to_le_bytes());
        b
    }

    fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if queue::pending(&active.queue, &active.mem) == Some(0) {
            return;
        }
        // One flush serves the whole batch: charge one op and the file's length.
        match self.throttle.consume(self.mapping.file_len()) {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.rate_limiter_throttled_events.inc();
                return;
            }
            Err(err) => {
                self.metrics.event_fails.inc();
                rl_error!(self.log, "virtio-pmem: cannot arm the rate limiter: {err}");
                return;
            }
        }
        let mem = &active.mem;
        let (mapping, metrics, log) = (&self.mapping, &self.metrics, &self.log);
        let mut cached = None;
        let run = queue::drain(&mut active.queue, mem, |_, chain| {
            match flush_request(mem, &chain, mapping, &mut cached, log) {
                Ok(()) => Step::Used(4),
                Err(why) => {
                    metrics.event_fails.inc();
                    rl_warn!(log, "virtio-pmem: malformed request: {why}");
                    Step::Used(0)
                }
            }
        });
        if run.broken_ring {
            metrics.event_fails.inc();
            rl_warn!(log, "virtio-pmem: invalid available ring index");
        }
        if run.ring_errors > 0 {
            metrics.event_fails.add(u64::from(run.ring_errors));
            rl_error!(log, "virtio-pmem: failed to update the used ring");
        }
        if run.used
            && let Err(err) = queue::signal_used(&mut active.queue, mem, &*active.interrupt, 0)
        {
            metrics.event_fails.inc();
            rl_error!(log, "virtio-pmem: failed to signal used buffers: {err}");
        }
    }
}

/// Serves one FLUSH chain: checks its shape (Firecracker's rules), flushes once per batch
/// (`cached` holds the batch's result) and writes the status.
fn flush_request(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    mapping: &PmemMapping,
    cached: &mut Option<i32>,
    log: &RateLimitedLog,
) -> Result<(), &'static str> {
    if chain.error.is_some() {
        return Err("invalid descriptor chain");
    }
    let [head] = chain.readable.as_slice() else {
        return Err("the request must be one device-readable descriptor");
    };
    if head.len != 4 {
        return Err("head descriptor is not 4 bytes");
    }
    let Some(status) = chain.writable.first() else {
        return Err("descriptor chain too short");
    };
    if status.len != 4 {
        return Err("status descriptor is not 4 bytes");
    }
    let request: u32 = mem.read_obj(head.addr).map_err(|_| "unreadable request")?;
    if request != REQ_TYPE_FLUSH {
        return Err("unknown request type");
    }
    let result = *cached.get_or_insert_with(|| match mapping.flush() {
        Ok(()) => STATUS_OK,
        Err(err) => {
            rl_error!(log, "virtio-pmem: unable to msync the file: {err}");
            STATUS_FAILURE
        }
    });
    mem.write_obj(result, status.addr)
        .map_err(|_| "unwritable status")
}

impl VirtioDevice for Pmem {
    fn device_type(&self) -> u32 {
        PMEM_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        features::bit(features::VERSION_1)
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !super::read_config_bytes(&self.config_bytes(), offset, data) {
            self.metrics.cfg_fails.inc();
            rl_warn!(
                self.log,
                "virtio-pmem: config read of {} bytes at {offset:#x} out of range",
                data.len()
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.metrics.cfg_fails.inc();
        rl_warn!(
            self.log,
            "virtio-pmem: guest driver attempted to write device config (offset={offset:#x}, len={:#x})",
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
        let queue = super::single_queue(queues, &self.metrics.activate_fails)?;
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
        self.throttle.reset();
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
        self.metrics.queue_event_count.inc();
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
                "virtio-pmem: failed to read the queue event: {err}"
            );
        }
        if self.throttle.is_blocked() {
            self.metrics.rate_limiter_throttled_events.inc();
            return;
        }
        self.process_queue();
    }

    fn timer_events(&self) -> &[TimerFd] {
        self.throttle.timer_fds()
    }

    fn process_timer(&mut self, idx: usize) {
        if idx != 0 {
            self.metrics.event_fails.inc();
            return;
        }
        self.metrics.rate_limiter_event_count.inc();
        if let Err(err) = self.throttle.on_timer() {
            self.metrics.event_fails.inc();
            rl_warn!(self.log, "virtio-pmem: {err}");
        }
        self.process_queue();
    }
}

/// The MMIO side of a read-only pmem window: guest writes land here (the hypervisor maps the
/// window read-only), are dropped and counted in `read_only_writes`.
#[derive(Debug)]
pub struct ReadOnlyWindow {
    metrics: Arc<PmemMetrics>,
    log: RateLimitedLog,
}

impl BusDevice for ReadOnlyWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Reads are served from the mapping and never exit; answer zeros if one does.
        rl_warn!(
            self.log,
            "virtio-pmem: unexpected read exit at window offset {offset:#x}"
        );
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.metrics.read_only_writes.inc();
        rl_warn!(
            self.log,
            "virtio-pmem: guest write of {} bytes at offset {offset:#x} of a read-only device dropped",
            data.len()
        );
    }
}
