//! Virtio 1.x device models (virtio-blk, virtio-rng, virtio-vsock) and their MMIO transport.
//!
//! # What lives here
//!
//! - [`VirtioDevice`]: the contract between a device model and its transport. A device owns its
//!   feature bits, its configuration space, one [`EventFd`] per queue (the *queue events*), and,
//!   while active, the guest memory, the queues and an [`VirtioInterrupt`] to signal the driver.
//! - [`mmio::MmioTransport`]: the virtio-mmio (modern, version 2) register file for one 4 KiB
//!   slot, a [`BusDevice`](crate::BusDevice). It negotiates features, collects queue
//!   configuration, activates the device on `DRIVER_OK` and owns the interrupt status register.
//! - [`balloon::Balloon`]: virtio-balloon as Firecracker's `PUT /balloon` exposes it (inflate,
//!   deflate, statistics, free-page hinting and reporting; released pages go back to the host).
//! - [`block::Block`]: virtio-blk as Firecracker's `PUT /drives` exposes it.
//! - [`mem::VirtioMem`]: virtio-mem, Firecracker's memory hotplug (`/hotplug/memory`): blocks
//!   plugged by the driver, slots mapped through a [`SlotMapper`], unplugged memory released.
//! - [`pmem::Pmem`]: virtio-pmem as Firecracker's `PUT /pmem/{id}` exposes it (the backing
//!   file mapped as a guest window; FLUSH requests write it back).
//! - [`rng::Entropy`]: virtio-rng as Firecracker's `PUT /entropy` exposes it.
//! - [`vsock::Vsock`]: virtio-vsock with Firecracker's hybrid Unix-socket backend
//!   (`PUT /vsock`); its host sockets come and go at runtime as [`EventSource`]s.
//! - [`net::Net`]: virtio-net on a tap as Firecracker's `PUT /network-interfaces` exposes it,
//!   with an MMDS hook ([`net::FrameInterceptor`]).
//! - [`subscriber::VirtioSubscriber`]: an `event-manager` subscriber that runs any device in the
//!   VMM's `EventManager`.
//!
//! # One processing path
//!
//! A driver notifies a queue by writing the queue index to `QueueNotify`. The VMM registers each
//! queue event as a KVM ioeventfd on that register with `datamatch = queue index`, so with KVM the
//! write never leaves the kernel. Without an ioeventfd (another hypervisor, or a test) the write
//! reaches [`mmio::MmioTransport`], which signals the very same eventfd (libkrun's userspace
//! fallback). Either way the event loop sees the eventfd readable and calls
//! [`VirtioDevice::process_queue_event`]; queues are never processed on a vCPU thread.
//!
//! A device may also hand requests to the host kernel and complete them later (virtio-blk's
//! `Async` engine, io_uring): it then exposes [`VirtioDevice::completion_events`], and the event
//! loop calls [`VirtioDevice::process_completion_event`] when one is readable. Rate-limiter timers
//! work the same way through [`VirtioDevice::timer_events`].
//!
//! # Threading
//!
//! A device is shared as `Arc<Mutex<D>>` between its transport (vCPU threads, through the bus:
//! register and configuration-space accesses, activation, reset) and the VMM's event loop (queue
//! and timer events, host-side updates such as `PATCH /drives`). Lock order is always
//! bus → transport → device; the device never calls back into its transport (interrupts go
//! through [`VirtioInterrupt`], which is lock-free). No device owns a thread or blocks on
//! anything but its backing file (and, for a block device with the `Async` engine, on a reset
//! that waits for the kernel to finish the requests still in flight; the kernel's io_uring
//! workers are the kernel's threads, not the device's).
//!
//! # Guest input is hostile
//!
//! Register values, queue addresses, descriptor tables and request headers are guest-controlled.
//! None of them can panic the VMM: malformed requests complete with an error status, a broken
//! queue configuration gets `DEVICE_NEEDS_RESET`, and every such event is counted in a metric and
//! logged through a [`RateLimitedLog`](crate::log::RateLimitedLog).

pub mod balloon;
pub mod block;
mod chain;
pub mod mem;
pub mod mmio;
pub mod net;
pub mod persist;
pub mod pmem;
mod queue;
pub mod rng;
pub mod subscriber;
#[cfg(test)]
pub(crate) mod test_utils;
mod throttle;
pub mod vsock;

use std::io;
use std::sync::Arc;

use squib_core::GuestMemoryMmap;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

pub use self::balloon::{Balloon, BalloonConfig, BalloonError, BalloonStatus, BalloonStatusSink};
pub use self::block::{Block, BlockConfig, BlockError, CacheType, IoEngine};
pub use self::chain::ChainError;
pub use self::mem::{MemGeometry, SlotMapper, VirtioMem, VirtioMemError};
pub use self::mmio::{MmioInterrupt, MmioTransport, MmioTransportMetrics};
pub use self::net::{FrameInterceptor, Net, NetBackend, NetConfig, NetError};
pub use self::pmem::{Pmem, PmemDeviceConfig, PmemError, ReadOnlyWindow};
pub use self::rng::{Entropy, EntropyError};
pub use self::subscriber::VirtioSubscriber;
pub use self::vsock::{Vsock, VsockConfig, VsockError};

/// Device ids (virtio 1.x §5), as `DeviceID` reports them.
pub mod device_type {
    use virtio_bindings::virtio_ids;

    /// virtio-net.
    pub const NET: u32 = virtio_ids::VIRTIO_ID_NET;
    /// virtio-blk.
    pub const BLOCK: u32 = virtio_ids::VIRTIO_ID_BLOCK;
    /// virtio-rng (Firecracker's "entropy" device).
    pub const RNG: u32 = virtio_ids::VIRTIO_ID_RNG;
    /// virtio-balloon.
    pub const BALLOON: u32 = virtio_ids::VIRTIO_ID_BALLOON;
    /// virtio-vsock.
    pub const VSOCK: u32 = virtio_ids::VIRTIO_ID_VSOCK;
}

/// Feature bit numbers shared by every device (device-specific bits live with the device).
pub mod features {
    use virtio_bindings::{virtio_config, virtio_ring};

    /// `VIRTIO_F_VERSION_1`: the device is a virtio 1.x (modern) device. Every squib device
    /// offers it and the transport refuses `FEATURES_OK` if the driver does not accept it.
    pub const VERSION_1: u32 = virtio_config::VIRTIO_F_VERSION_1;
    /// `VIRTIO_RING_F_EVENT_IDX`: `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u32 = virtio_ring::VIRTIO_RING_F_EVENT_IDX;

    /// The 64-bit mask of feature bit `bit`.
    pub const fn bit(bit: u32) -> u64 {
        1u64 << bit
    }
}

/// Device status bits (virtio 1.x §2.1), as the `Status` register holds them.
pub mod status {
    use virtio_bindings::virtio_config;

    /// The driver found the device.
    pub const ACKNOWLEDGE: u32 = virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// The driver knows how to drive the device.
    pub const DRIVER: u32 = virtio_config::VIRTIO_CONFIG_S_DRIVER;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = virtio_config::VIRTIO_CONFIG_S_FEATURES_OK;
    /// The device hit an error the driver must recover from by resetting it.
    pub const DEVICE_NEEDS_RESET: u32 = virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// The driver gave up on the device.
    pub const FAILED: u32 = virtio_config::VIRTIO_CONFIG_S_FAILED;
}

/// Largest queue any squib device offers (Firecracker's `FIRECRACKER_MAX_QUEUE_SIZE`).
pub const MAX_QUEUE_SIZE: u16 = 256;

/// Why a device interrupts the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptKind {
    /// The configuration space changed (for example a new disk size).
    Config,
    /// Buffers were returned on the queue with this index.
    Queue(u16),
}

/// How a device signals its driver; implemented by the transport.
///
/// `trigger` is called from the VMM's event loop while the device lock is held, so
/// implementations must not take the transport's lock.
pub trait VirtioInterrupt: Send + Sync {
    /// Records the interrupt cause and raises the device's interrupt line.
    fn trigger(&self, kind: InterruptKind) -> io::Result<()>;
}

/// The queue of a single-queue device (block, rng): exactly one must be passed, else
/// `activate_fails` is counted and [`ActivateError::QueueCount`] returned.
pub(crate) fn single_queue(
    queues: Vec<Queue>,
    activate_fails: &crate::metrics::Counter,
) -> Result<Queue, ActivateError> {
    let [queue]: [Queue; 1] = queues.try_into().map_err(|q: Vec<Queue>| {
        activate_fails.inc();
        ActivateError::QueueCount {
            expected: 1,
            got: q.len(),
        }
    })?;
    Ok(queue)
}

/// A host-side file descriptor a device wants the VMM's event loop to watch besides its queue,
/// timer and completion events (a tap device, a listening Unix socket, a vsock connection).
///
/// `token` is the device's own name for the source (any value below [`MAX_HOST_TOKEN`]); the
/// event loop hands it back to [`VirtioDevice::process_host_event`]. `events` is the epoll
/// interest set, including `EventSet::EDGE_TRIGGERED` where the device wants edge-triggered
/// readiness (a tap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSource {
    /// The file descriptor (owned by the device; it must stay open while registered).
    pub fd: std::os::fd::RawFd,
    /// The epoll interest set.
    pub events: event_manager::EventSet,
    /// The device's token for this source.
    pub token: u32,
}

/// Largest token a device may give an [`EventSource`] (exclusive).
pub const MAX_HOST_TOKEN: u32 = u32::MAX - subscriber::HOST_TOKEN_BASE;

/// A change to a device's host event sources, made while the device runs (a connection opened or
/// closed, a tap that must stop being read while the guest's RX queue is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSourceChange {
    /// Start watching a source.
    Add(EventSource),
    /// Change the interest set of a watched source (matched by `fd`).
    Modify(EventSource),
    /// Stop watching a source (matched by `fd`). Remove before closing the fd.
    Remove(EventSource),
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport passed a different number of queues than the device has.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues the transport passed.
        got: usize,
    },
    /// The device is already active.
    #[error("the device is already active")]
    AlreadyActive,
    /// The device refuses to run with this configuration (for example an unsupported engine).
    #[error("{0}")]
    Unsupported(String),
}

/// A virtio device model, independent of its transport (see the [module docs](self)).
pub trait VirtioDevice: Send {
    /// The device id ([`device_type`]).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The features the device offers.
    fn avail_features(&self) -> u64;

    /// The features the driver accepted (a subset of [`avail_features`](Self::avail_features)).
    fn acked_features(&self) -> u64;

    /// Records the features the driver accepted; bits the device did not offer are dropped.
    fn ack_features(&mut self, features: u64);

    /// Reads `data.len()` bytes of configuration space at `offset`.
    ///
    /// Bytes outside the configuration space are left untouched (the transport zero-fills
    /// `data` first). Never panics on any offset or length.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes `data` to configuration space at `offset`; read-only or out-of-range bytes are
    /// ignored (and counted). Never panics on any offset or length.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// The configuration generation; changes whenever the device changes its configuration
    /// space on its own (for example after a disk update).
    fn config_generation(&self) -> u32 {
        0
    }

    /// Starts the device with the driver's queues (validated by the transport against `mem`).
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;

    /// Whether [`activate`](Self::activate) succeeded since creation or the last reset.
    fn is_activated(&self) -> bool;

    /// Returns the device to its initial state: inactive, no acked features, no pending timer.
    /// The queue and timer file descriptors stay the same (the VMM keeps them registered).
    fn reset(&mut self);

    /// One eventfd per queue, in queue order. The VMM registers each as the KVM ioeventfd of
    /// `QueueNotify` with `datamatch = index`; the transport signals it on a notify write.
    fn queue_events(&self) -> &[EventFd];

    /// Called by the event loop when queue event `idx` is readable: drains the eventfd and
    /// processes the queue. Does nothing (beyond draining) while inactive.
    fn process_queue_event(&mut self, idx: usize);

    /// Timers the device needs the event loop to watch (rate limiters), one per index.
    fn timer_events(&self) -> &[TimerFd] {
        &[]
    }

    /// Called by the event loop when timer `idx` is readable.
    fn process_timer(&mut self, idx: usize) {
        let _ = idx;
    }

    /// Eventfds signalled when asynchronous I/O the device submitted completes (the block
    /// device's io_uring), one per index; the event loop watches them like queue events. Fixed
    /// for the device's life, like the queue and timer fds.
    fn completion_events(&self) -> &[EventFd] {
        &[]
    }

    /// Called by the event loop when completion event `idx` is readable: clears it, completes
    /// the finished requests on their queue and interrupts the driver.
    fn process_completion_event(&mut self, idx: usize) {
        let _ = idx;
    }

    /// Host-side sources to watch from the moment the device joins the event loop (see
    /// [`EventSource`]). Sources that come and go later are reported through
    /// [`take_event_source_changes`](Self::take_event_source_changes).
    fn host_event_sources(&self) -> Vec<EventSource> {
        Vec::new()
    }

    /// Called by the event loop when host source `token` is ready with `events`.
    fn process_host_event(&mut self, token: u32, events: event_manager::EventSet) {
        let _ = (token, events);
    }

    /// Changes to the watched host sources since the last call, in order. The event loop calls
    /// this after every event it dispatches to the device.
    fn take_event_source_changes(&mut self) -> Vec<EventSourceChange> {
        Vec::new()
    }

    /// Called on the VMM thread while the vCPUs are paused, right before a snapshot saves the
    /// device: finish whatever is in flight (a block device's `Async` requests) so the saved
    /// queues and guest memory are consistent.
    fn prepare_save(&mut self) {}

    /// Called by the event loop once it has applied every change returned by
    /// [`take_event_source_changes`](Self::take_event_source_changes). A device that stops
    /// watching a source keeps its fd open until this call (closing it earlier would let the fd
    /// number be reused while the loop still has it registered).
    fn event_source_changes_applied(&mut self) {}

    /// The device's queues while active (empty while inactive), in queue order: what a snapshot
    /// saves of them (addresses, size, ready, next avail/used indices).
    fn queues(&self) -> &[Queue];
}

/// Copies the part of `config` at `offset` into `data`; returns `false` (copying nothing) if the
/// access does not lie entirely inside `config`.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) -> bool {
    let Some(range) = config_range(config.len(), offset, data.len()) else {
        return false;
    };
    data.copy_from_slice(&config[range]);
    true
}

/// The byte range `[offset, offset + len)` if it lies inside a space of `space_len` bytes.
pub(crate) fn config_range(
    space_len: usize,
    offset: u64,
    len: usize,
) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= space_len).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_read_config_bytes_bounds() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [0u8; 2];
        assert!(read_config_bytes(&cfg, 2, &mut d));
        assert_eq!(d, [3, 4]);
        let mut d = [9u8; 2];
        assert!(!read_config_bytes(&cfg, 3, &mut d));
        assert_eq!(d, [9, 9], "nothing copied on a straddling access");
        assert!(!read_config_bytes(&cfg, u64::MAX, &mut d));
        assert!(read_config_bytes(&cfg, 4, &mut []));
    }

    #[test]
    fn test_feature_bits() {
        assert_eq!(features::bit(features::VERSION_1), 1 << 32);
        assert_eq!(features::bit(features::RING_EVENT_IDX), 1 << 29);
        assert_eq!(device_type::BLOCK, 2);
        assert_eq!(device_type::RNG, 4);
    }
}
