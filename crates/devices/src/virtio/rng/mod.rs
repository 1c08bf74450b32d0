//! virtio-rng (device id 4), Firecracker's "entropy" device (`PUT /entropy`).
//!
//! One queue of [`MAX_QUEUE_SIZE`] entries and no device-specific features or configuration
//! space. Every request is a chain of device-writable buffers, which [`Entropy`] fills from the
//! host's CSPRNG (`getrandom`, i.e. the `getrandom(2)` syscall) in 4 KiB chunks; the used length
//! is the number of bytes provided. A chain with a device-readable buffer, or that is otherwise
//! malformed, is returned with length 0 and counted in `entropy_event_fails`. An optional rate
//! limiter charges one op plus the request's length in bytes; when it refuses, the chain is put
//! back and a timer resumes processing (as for virtio-blk).
//!
//! Threading: `Send`, used behind `Arc<Mutex<Entropy>>`; see the [`virtio`](super) module docs.

pub mod metrics;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use squib_core::GuestMemoryMmap;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

pub use self::metrics::EntropyMetrics;
use super::chain::Chain;
use super::queue::{self, Step};
use super::throttle::Throttle;
use super::{ActivateError, MAX_QUEUE_SIZE, VirtioDevice, VirtioInterrupt, device_type, features};
use crate::log::RateLimitedLog;
use crate::metrics::len_u64;
use crate::rate_limiter::{BucketUpdate, RateLimiter};
use crate::{rl_error, rl_warn};

/// Size of the buffer random bytes are generated into before being copied to the guest.
const CHUNK: usize = 4096;

/// Errors building an [`Entropy`] device.
#[derive(Debug, thiserror::Error)]
pub enum EntropyError {
    /// Creating the queue eventfd or the rate-limiter timer failed.
    #[error("Error creating the entropy device's event or timer fd: {0}")]
    EventFd(#[source] std::io::Error),
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// The virtio-rng device (see the [module docs](self)).
pub struct Entropy {
    acked_features: u64,
    queue_sizes: [u16; 1],
    queue_evts: [EventFd; 1],
    throttle: Throttle,
    metrics: Arc<EntropyMetrics>,
    log: RateLimitedLog,
    active: Option<Active>,
}

impl std::fmt::Debug for Entropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entropy")
            .field("acked_features", &self.acked_features)
            .field("throttle", &self.throttle)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Entropy {
    /// A device limited by `rate_limiter` (`RateLimiter::default()` is unlimited).
    pub fn new(rate_limiter: RateLimiter) -> Result<Self, EntropyError> {
        Ok(Self {
            acked_features: 0,
            queue_sizes: [MAX_QUEUE_SIZE],
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(EntropyError::EventFd)?],
            throttle: Throttle::new(rate_limiter).map_err(EntropyError::EventFd)?,
            metrics: Arc::new(EntropyMetrics::new()),
            log: RateLimitedLog::default(),
            active: None,
        })
    }

    /// The `entropy` metric group.
    pub fn metrics(&self) -> &Arc<EntropyMetrics> {
        &self.metrics
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &RateLimiter {
        self.throttle.limiter()
    }

    /// Replaces, removes or keeps each bucket.
    pub fn update_rate_limiter(&mut self, bytes: BucketUpdate, ops: BucketUpdate) {
        self.throttle.update(bytes, ops);
    }

    fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (throttle, metrics, log) = (&mut self.throttle, &self.metrics, &self.log);
        let run = queue::drain(&mut active.queue, mem, |_, chain| {
            handle(mem, &chain, throttle, metrics, log)
        });
        if run.broken_ring {
            metrics.entropy_event_fails.inc();
            rl_warn!(log, "virtio-rng: invalid available ring index");
        }
        if run.ring_errors > 0 {
            metrics.entropy_event_fails.add(u64::from(run.ring_errors));
            rl_error!(log, "virtio-rng: failed to update the used ring");
        }
        if run.used
            && let Err(err) = queue::signal_used(&mut active.queue, mem, &*active.interrupt, 0)
        {
            metrics.entropy_event_fails.inc();
            rl_error!(log, "virtio-rng: failed to signal used buffers: {err}");
        }
    }
}

/// Charges and fills one chain.
fn handle(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    throttle: &mut Throttle,
    metrics: &EntropyMetrics,
    log: &RateLimitedLog,
) -> Step {
    if let Some(err) = chain.error {
        metrics.entropy_event_fails.inc();
        rl_warn!(log, "virtio-rng: malformed request: {err}");
        return Step::Used(0);
    }
    if !chain.readable.is_empty() {
        metrics.entropy_event_fails.inc();
        rl_warn!(log, "virtio-rng: request has a device-readable buffer");
        return Step::Used(0);
    }
    let total = chain.writable_len();
    if total == 0 {
        return Step::Used(0);
    }
    match throttle.consume(total) {
        Ok(true) => {}
        Ok(false) => {
            metrics.entropy_rate_limiter_throttled.inc();
            return Step::Throttled;
        }
        Err(err) => {
            metrics.entropy_event_fails.inc();
            rl_error!(
                log,
                "virtio-rng: failed to arm the rate limiter timer: {err}"
            );
            return Step::Throttled;
        }
    }
    let mut buf = [0u8; CHUNK];
    let mut written: u32 = 0;
    for seg in &chain.writable {
        let mut done = 0usize;
        let len = usize::try_from(seg.len).unwrap_or(0);
        while done < len {
            let n = (len - done).min(CHUNK);
            if let Err(err) = getrandom::fill(&mut buf[..n]) {
                metrics.host_rng_fails.inc();
                rl_error!(
                    log,
                    "virtio-rng: host random number generator failed: {err}"
                );
                return Step::Used(written);
            }
            let written_ok = seg
                .addr
                .checked_add(len_u64(done))
                .is_some_and(|addr| mem.write_slice(&buf[..n], addr).is_ok());
            if !written_ok {
                // The chain walk checked the range; memory cannot shrink under us.
                metrics.entropy_event_fails.inc();
                return Step::Used(written);
            }
            done += n;
            // n <= CHUNK, and the chain's total length fits in u32.
            written = written.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            metrics.entropy_bytes.add(len_u64(n));
        }
    }
    Step::Used(written)
}

impl VirtioDevice for Entropy {
    fn device_type(&self) -> u32 {
        device_type::RNG
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
        rl_warn!(
            self.log,
            "virtio-rng: config read of {} bytes at {offset:#x}: no config space",
            data.len()
        );
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        rl_warn!(
            self.log,
            "virtio-rng: config write of {} bytes at {offset:#x}: no config space",
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
        let Some(evt) = self.queue_evts.get(idx) else {
            self.metrics.entropy_event_fails.inc();
            return;
        };
        if let Err(err) = evt.read()
            && err.kind() != std::io::ErrorKind::WouldBlock
        {
            self.metrics.entropy_event_fails.inc();
            rl_error!(
                self.log,
                "virtio-rng: failed to read the queue event: {err}"
            );
        }
        self.metrics.entropy_event_count.inc();
        if !self.throttle.is_blocked() {
            self.process_queue();
        }
    }

    fn timer_events(&self) -> &[TimerFd] {
        self.throttle.timer_fds()
    }

    fn process_timer(&mut self, idx: usize) {
        if idx != 0 {
            self.metrics.entropy_event_fails.inc();
            return;
        }
        self.metrics.rate_limiter_event_count.inc();
        if let Err(err) = self.throttle.on_timer() {
            self.metrics.entropy_event_fails.inc();
            rl_warn!(self.log, "virtio-rng: {err}");
        }
        self.process_queue();
    }
}

/// Snapshot state of the entropy device: acked features and the rate limiter's buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntropyState {
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Rate limiter buckets.
    pub rate_limiter: crate::rate_limiter::persist::RateLimiterState,
}

/// Why an entropy device cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum EntropyRestoreError {
    /// Creating the device failed.
    #[error("{0}")]
    Entropy(#[from] EntropyError),
    /// The saved rate limiter is invalid.
    #[error("{0}")]
    RateLimiter(#[from] crate::rate_limiter::persist::RateLimiterRestoreError),
}

impl crate::persist::Persist for Entropy {
    type State = EntropyState;
    type ConstructorArgs = ();
    type Error = EntropyRestoreError;

    fn save(&self) -> EntropyState {
        EntropyState {
            acked_features: self.acked_features,
            rate_limiter: crate::persist::Persist::save(self.rate_limiter()),
        }
    }

    fn restore((): (), state: &EntropyState) -> Result<Self, EntropyRestoreError> {
        let limiter = <RateLimiter as crate::persist::Persist>::restore((), &state.rate_limiter)?;
        let mut dev = Entropy::new(limiter)?;
        dev.ack_features(state.acked_features);
        Ok(dev)
    }
}
