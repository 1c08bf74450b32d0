//! virtio-blk, as Firecracker's `PUT /drives/{id}` (virtio-block flavour) exposes it.
//!
//! - [`device`]: [`Block`], the [`VirtioDevice`](super::VirtioDevice): one queue of
//!   [`MAX_QUEUE_SIZE`](super::MAX_QUEUE_SIZE) entries, features `VIRTIO_F_VERSION_1`,
//!   `VIRTIO_RING_F_EVENT_IDX`, `VIRTIO_BLK_F_RO` for a read-only drive and `VIRTIO_BLK_F_FLUSH`
//!   for `cache_type: Writeback` (exactly what Firecracker advertises); configuration space is
//!   the capacity in 512-byte sectors. Host-side operations: `PATCH /drives` disk and rate-limiter
//!   updates.
//! - [`request`]: parsing a descriptor chain into a request (pure, no I/O).
//! - [`io`]: the backing file and the synchronous engine (seek + `read`/`write` straight between
//!   the file and guest memory through vm-memory's volatile I/O; no bounce buffer).
//! - `async_io`: the `Async` engine (io_uring) and its bounded in-flight table.
//! - [`metrics`]: the `block` metric group.
//!
//! # The `Async` engine
//!
//! Firecracker's `Async` engine is io_uring, and so is squib's. Driving io_uring needs `unsafe`
//! (the kernel reads and writes guest memory after the submitting call returns), which this crate
//! forbids; `squib_sys::io_uring` owns that `unsafe` behind a safe API that keeps guest memory
//! and the file alive until each completion is reaped. The device submits a batch per queue
//! event and completes requests from the ring's eventfd, exposed as a
//! [`completion event`](super::VirtioDevice::completion_events) that the generic
//! [`VirtioSubscriber`](super::VirtioSubscriber) registers. [`Block::new`] creates the ring; on a
//! host without a usable io_uring it fails with [`BlockError::UnsupportedEngine`] (Firecracker's
//! text) and never falls back to `Sync` silently.
//!
//! # Deviations from Firecracker
//!
//! - `GET_ID` returns the drive id (zero-padded or truncated to 20 bytes); Firecracker returns
//!   `st_dev`/`st_rdev`/`st_ino` of the backing file.
//! - Requests are parsed as byte streams (header = first 16 readable bytes, status = last
//!   writable byte), so any descriptor layout works; Firecracker requires exactly one data
//!   descriptor.

mod async_io;
pub mod device;
pub mod io;
pub mod metrics;
pub mod persist;
pub mod request;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use self::device::Block;
pub use self::metrics::BlockMetrics;
use crate::rate_limiter::RateLimiter;

/// Size of a virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
/// `log2(SECTOR_SIZE)`.
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the `GET_ID` answer.
pub const ID_BYTES: usize = virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES as usize;

/// `cache_type` and `io_engine` are the API's own types (plain data from `squib-config`), so
/// the VMM hands a drive's configuration over without a translation table.
pub use squib_config::schemas::drive::{CacheType, IoEngine};

/// Everything needed to build a [`Block`]; the VMM maps `PUT /drives` onto it.
#[derive(Debug)]
pub struct BlockConfig {
    /// Drive id (also the `GET_ID` answer).
    pub id: String,
    /// Backing file.
    pub path: PathBuf,
    /// Open the file read-only and offer `VIRTIO_BLK_F_RO`.
    pub read_only: bool,
    /// Root device (the VMM adds `root=` to the command line; the device does not care).
    pub root: bool,
    /// Partition UUID for `root=PARTUUID=` (root device only).
    pub partuuid: Option<String>,
    /// Cache strategy.
    pub cache_type: CacheType,
    /// I/O engine.
    pub io_engine: IoEngine,
    /// Bandwidth (bytes) and ops limits; `RateLimiter::default()` is unlimited.
    pub rate_limiter: RateLimiter,
}

/// Errors building or updating a [`Block`].
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The backing file cannot be opened or sized.
    #[error("Error manipulating the backing file: {source} {path}")]
    BackingFile {
        /// The error.
        #[source]
        source: std::io::Error,
        /// The path.
        path: String,
    },
    /// The engine cannot run on this host: io_uring is missing (`ENOSYS`), disabled (`EPERM`) or
    /// lacks an opcode the engine needs. Firecracker's text for a host that cannot run `Async`.
    #[error("Error coming from the IO engine: Unsupported engine type: {0:?}")]
    UnsupportedEngine(IoEngine),
    /// Creating the io_uring failed for another reason (for example `ENOMEM`, `EMFILE`).
    #[error("Error coming from the IO engine: Async error: IoUring: {0}")]
    AsyncEngine(#[source] std::io::Error),
    /// Creating the queue eventfd or the rate-limiter timer failed.
    #[error("Error creating the device's event or timer fd: {0}")]
    EventFd(#[source] std::io::Error),
}
