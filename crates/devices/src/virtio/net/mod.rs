//! virtio-net (device id 1) on a Linux tap, as Firecracker's `PUT /network-interfaces` exposes
//! it.
//!
//! # What lives here
//!
//! - [`Net`]: the device. Two queues of [`MAX_QUEUE_SIZE`] entries (RX = 0, TX = 1), Firecracker's
//!   feature set ([`Net::avail_features`](super::VirtioDevice::avail_features)), a 12-byte
//!   configuration space (`mac`, `status`, `max_virtqueue_pairs`, `mtu`; `VIRTIO_NET_F_MAC` and
//!   `VIRTIO_NET_F_MTU` are offered only when a MAC / MTU is configured; the driver cannot write
//!   it), RX and TX rate limiters, and the `net` metric group ([`NetMetrics`]).
//! - [`NetBackend`]: where frames go. Production uses [`squib_sys::tap::Tap`] (opened by
//!   [`Net::new`] with a 12-byte `virtio_net_hdr_v1` and, on activation, `TUNSETOFFLOAD` from the
//!   accepted `GUEST_*` features); tests inject a fake.
//! - [`FrameInterceptor`]: the MMDS hook. Guest TX frames are offered to it first; frames it
//!   produces are injected into the guest's RX queue before tap frames.
//! - [`persist`]: the device-specific snapshot state ([`NetState`]).
//!
//! # Data path (event driven, bounded)
//!
//! The tap is a host event source ([`EventSource`](super::EventSource), token [`TAP_TOKEN`],
//! `EPOLLIN | EPOLLET`). RX reads one frame at a time into a single host frame buffer of
//! [`MAX_BUFFER_SIZE`] bytes and copies it into the guest's RX chains: one chain, or with
//! `VIRTIO_NET_F_MRG_RXBUF` as many as it takes (`num_buffers` in the header), published on the
//! used ring at once. When the guest has no room for the frame, it stays in the buffer (at most
//! one frame is ever held on the host), the tap interest drops to edge-triggered-nothing, and the
//! next RX queue notification resumes delivery and re-arms `EPOLLIN`; the kernel's tap queue is
//! the only other buffer. A frame that cannot fit the guest's buffers even when every chain the
//! ring holds is offered (or, without `MRG_RXBUF`, one chain) is dropped and counted in
//! `rx_fails`. TX writes each chain (at most [`MAX_BUFFER_SIZE`] bytes, else
//! `tx_malformed_frames`) to the tap with one `writev` straight from guest memory; with a frame
//! interceptor (MMDS), or for a chain of more than `MAX_GUEST_IOVECS` pieces, it first gathers
//! the chain into one contiguous buffer and writes that. Both directions charge their rate limiter per frame (one op plus the frame's bytes,
//! virtio header included, as Firecracker) and resume from the limiter's timer (timer 0 = RX,
//! 1 = TX). Timer 2 is the interceptor's: armed for [`FrameInterceptor::next_timer`] after
//! every RX/TX pass (re-armed only when the deadline changes), it makes MMDS retransmit unacked
//! TCP segments on time even when the guest sends nothing.
//!
//! # Threading
//!
//! As every virtio device: `Send`, shared as `Arc<Mutex<Net>>` between its transport (vCPU
//! threads) and the VMM's event loop, which runs all the I/O. The device never blocks: the tap is
//! non-blocking.

pub mod metrics;
pub mod persist;

mod device;
mod rx;
mod tx;

#[cfg(test)]
mod mmds_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tap_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use squib_core::GuestMemoryMmap;
use squib_sys::tap::{Tap, TapError};
use vm_memory::GuestAddress;

pub use self::device::{Net, NetConfig};
pub use self::metrics::NetMetrics;
pub use self::persist::{NetConstructorArgs, NetPersistError, NetState, RateLimiterState};
use super::MAX_QUEUE_SIZE;

/// Index of the receive queue.
pub const RX_INDEX: usize = 0;
/// Index of the transmit queue.
pub const TX_INDEX: usize = 1;
/// The host event-source token of the tap.
pub const TAP_TOKEN: u32 = 0;
/// Index of the frame interceptor's (MMDS TCP retransmission) timer among the device's timers
/// (after the RX and TX rate-limiter timers).
pub const INTERCEPTOR_TIMER: usize = 2;
/// Size of `virtio_net_hdr_v1`, in front of every frame (guest and tap alike).
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame handled, virtio header included (Firecracker's `MAX_BUFFER_SIZE`: a 64 KiB GSO
/// frame plus Ethernet and virtio headers).
pub const MAX_BUFFER_SIZE: usize = 65562;
/// Smallest RX chain without `MRG_RXBUF` and without guest GSO (Firecracker's 1526: a 1514-byte
/// frame plus the header).
pub const MIN_RX_BUFFER_SIZE: u64 = 1526;

/// Feature bits of virtio-net (virtio 1.x §5.1.3), as Firecracker uses them.
pub mod features {
    use virtio_bindings::virtio_net;

    /// Device handles packets with partial checksum.
    pub const CSUM: u32 = virtio_net::VIRTIO_NET_F_CSUM;
    /// Driver handles packets with partial checksum.
    pub const GUEST_CSUM: u32 = virtio_net::VIRTIO_NET_F_GUEST_CSUM;
    /// Device reports its MTU in configuration space.
    pub const MTU: u32 = virtio_net::VIRTIO_NET_F_MTU;
    /// Device has a MAC address in configuration space.
    pub const MAC: u32 = virtio_net::VIRTIO_NET_F_MAC;
    /// Driver can receive TSOv4.
    pub const GUEST_TSO4: u32 = virtio_net::VIRTIO_NET_F_GUEST_TSO4;
    /// Driver can receive TSOv6.
    pub const GUEST_TSO6: u32 = virtio_net::VIRTIO_NET_F_GUEST_TSO6;
    /// Driver can receive UFO.
    pub const GUEST_UFO: u32 = virtio_net::VIRTIO_NET_F_GUEST_UFO;
    /// Device can receive TSOv4.
    pub const HOST_TSO4: u32 = virtio_net::VIRTIO_NET_F_HOST_TSO4;
    /// Device can receive TSOv6.
    pub const HOST_TSO6: u32 = virtio_net::VIRTIO_NET_F_HOST_TSO6;
    /// Device can receive UFO.
    pub const HOST_UFO: u32 = virtio_net::VIRTIO_NET_F_HOST_UFO;
    /// Driver can merge receive buffers.
    pub const MRG_RXBUF: u32 = virtio_net::VIRTIO_NET_F_MRG_RXBUF;
}

/// Errors creating a [`Net`] (Firecracker's `NetError` texts; the VMM wraps them as
/// `Network config error: Could not create the network device: {0}`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap could not be opened (for example `EBUSY`: another process holds it).
    #[error("Open tap device failed: {0}")]
    TapOpen(#[source] TapError),
    /// `TUNSETVNETHDRSZ` failed.
    #[error("Setting vnet header size failed: {0}")]
    TapSetVnetHdrSize(#[source] TapError),
    /// Creating a queue eventfd or a rate-limiter timer failed.
    #[error("EventFd error: {0}")]
    EventFd(#[source] io::Error),
    /// The configured MTU is below 68.
    #[error("MTU {0} is out of range [68, 65535]")]
    InvalidMtu(u16),
}

/// Where a [`Net`] device's frames go: the tap in production, a fake in tests.
///
/// Every frame starts with the [`VNET_HDR_LEN`]-byte virtio-net header.
pub trait NetBackend: Send + std::fmt::Debug {
    /// The host interface name (saved in snapshots).
    fn name(&self) -> &str;
    /// Reads one frame into `buf`; `WouldBlock` when none is queued.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Writes one frame gathered straight from the guest buffers `bufs` (no copy in the VMM).
    /// `None`: not supported, the device copies the frame and calls
    /// [`write_frame`](Self::write_frame). `Some(Err(InvalidInput))`: nothing was written
    /// (buffers the backend cannot gather); the device copies instead.
    fn write_frame_from_guest(
        &mut self,
        _mem: &GuestMemoryMmap,
        _bufs: &mut dyn Iterator<Item = (GuestAddress, usize)>,
    ) -> Option<io::Result<usize>> {
        None
    }
    /// Applies the `TUN_F_*` offload flags the guest accepted.
    fn set_offload(&mut self, flags: u32) -> Result<(), TapError>;
    /// The descriptor to watch for readable frames (`None`: nothing to watch).
    fn raw_fd(&self) -> Option<RawFd>;
}

impl NetBackend for Tap {
    fn name(&self) -> &str {
        Tap::name(self)
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.write(frame)
    }

    fn write_frame_from_guest(
        &mut self,
        mem: &GuestMemoryMmap,
        bufs: &mut dyn Iterator<Item = (GuestAddress, usize)>,
    ) -> Option<io::Result<usize>> {
        Some(self.write_from_guest(mem, bufs))
    }

    fn set_offload(&mut self, flags: u32) -> Result<(), TapError> {
        Tap::set_offload(self, flags)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// A hook that sees the guest's traffic before the tap does (the MMDS network stack).
///
/// Called on the VMM thread with the device locked; implementations must not block.
pub trait FrameInterceptor {
    /// Offered every guest TX frame (without the virtio header). `true`: consumed, not sent to
    /// the tap (and not charged to the TX rate limiter).
    fn detour_frame(&mut self, frame: &[u8]) -> bool;
    /// Writes the next frame to inject into the guest (without the virtio header) into `buf` and
    /// returns its length, or `None` if there is none. Preferred over tap frames.
    fn write_next_frame(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Whether [`write_next_frame`](Self::write_next_frame) has something to give.
    fn has_pending_frames(&self) -> bool;
    /// The interceptor's next timer (a TCP retransmission or window probe), if any: an id of
    /// the deadline (its time on the interceptor's own clock) and how long from now until it.
    /// The device arms its interceptor timer ([`INTERCEPTOR_TIMER`]) for it and, when it fires,
    /// delivers what [`write_next_frame`](Self::write_next_frame) then has, without waiting
    /// for guest traffic.
    fn next_timer(&self) -> Option<(u64, std::time::Duration)> {
        None
    }
}

/// The `TUN_F_*` offloads matching the accepted guest features (Firecracker's mapping:
/// `GUEST_CSUM` → `TUN_F_CSUM`, `GUEST_UFO` → `TUN_F_UFO`, `GUEST_TSO4/6` → `TUN_F_TSO4/6`).
pub fn tap_offload_flags(acked_features: u64) -> u32 {
    use super::features::bit;
    use squib_sys::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};
    [
        (features::GUEST_CSUM, TUN_F_CSUM),
        (features::GUEST_UFO, TUN_F_UFO),
        (features::GUEST_TSO4, TUN_F_TSO4),
        (features::GUEST_TSO6, TUN_F_TSO6),
    ]
    .into_iter()
    .filter(|&(f, _)| acked_features & bit(f) != 0)
    .fold(0, |acc, (_, t)| acc | t)
}

/// The queue sizes of every [`Net`].
pub(crate) const QUEUE_SIZES: [u16; 2] = [MAX_QUEUE_SIZE; 2];
