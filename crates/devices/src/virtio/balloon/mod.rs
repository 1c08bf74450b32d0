//! virtio-balloon (device id 5) as Firecracker's `PUT /balloon` exposes it.
//!
//! # Queues and features
//!
//! Always an inflate queue (0) and a deflate queue (1). Then, in this order and only when
//! configured, as Linux's driver numbers them (absent queues take no index): the statistics
//! queue (`stats_polling_interval_s > 0`, `VIRTIO_BALLOON_F_STATS_VQ`), the free-page-hinting
//! queue (`VIRTIO_BALLOON_F_FREE_PAGE_HINT`) and the free-page-reporting queue
//! (`VIRTIO_BALLOON_F_REPORTING`). `deflate_on_oom` offers `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
//! Every queue has 256 entries.
//!
//! # Configuration space (12 bytes, little endian)
//!
//! `num_pages` (the target, 4 KiB pages), `actual` (what the driver holds; the only field the
//! driver may write) and `free_page_hint_cmd_id`. A new target (`PATCH /balloon`) or hinting
//! command raises a configuration interrupt.
//!
//! # Requests
//!
//! - **inflate**: device-readable buffers of little-endian `u32` page frame numbers (at most
//!   [`MAX_PAGES_IN_DESC`] per buffer; a longer buffer or one whose length is not a multiple of
//!   4 is skipped, as in Firecracker). The PFNs are sorted, de-duplicated and compacted into
//!   ranges ([`compact_pfns`]), and each range is released to the host with
//!   [`squib_sys::guest_memory::discard_range`], which refuses anything outside guest memory.
//! - **deflate**: acknowledged; the guest simply reuses its pages.
//! - **statistics**: the driver keeps one buffer of `(u16 tag, u64 value)` entries on the
//!   queue; the device parses it ([`parse_stats`], at most [`MAX_STATS_TAGS`] entries) and
//!   holds it. Every `stats_polling_interval_s` a timer returns the buffer, which asks the
//!   driver for fresh numbers.
//! - **free-page hinting**: `PATCH /balloon/hinting/start` publishes a new command id in the
//!   configuration space; the driver answers with 4-byte command buffers and page ranges, which
//!   are released while the host's command is the guest's current one. `stop` publishes
//!   `DONE` (1); with `acknowledge_on_stop` the device does so itself when the guest reports
//!   `STOP` (0).
//! - **free-page reporting**: every buffer is a free range the guest will not touch until it
//!   reallocates it; it is released.
//!
//! # Runtime status
//!
//! Statistics and the hinting status are pushed to a [`BalloonStatusSink`] (the VMM forwards
//! them to the API's read mirror) whenever they change: the guest's numbers, a new target, the
//! driver's `actual`, a hinting command.
//!
//! Threading: `Send`, behind `Arc<Mutex<Balloon>>`; see the [`virtio`](super) module docs.

mod device;
pub mod metrics;
pub mod persist;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use squib_config::schemas::balloon::{BalloonHintingStatus, BalloonStats};

pub use self::device::Balloon;
pub use self::metrics::BalloonMetrics;
pub use self::persist::{BalloonRestoreError, BalloonState};

/// Pages of 4 KiB in one MiB.
pub const MIB_TO_4K_PAGES: u64 = 256;
/// Most page frame numbers one inflate buffer may carry (Firecracker's `MAX_PAGES_IN_DESC`).
pub const MAX_PAGES_IN_DESC: usize = 256;
/// Most statistics entries one buffer may carry; longer buffers are held but not parsed.
pub const MAX_STATS_TAGS: u32 = 256;
/// Size of one statistics entry on the wire (`u16` tag + `u64` value, packed).
pub const STAT_SIZE: u32 = 10;
/// Size of the configuration space.
pub const CONFIG_SPACE_SIZE: usize = 12;
/// Page-frame-number shift (virtio's balloon pages are always 4 KiB).
pub const PFN_SHIFT: u32 = 12;

/// Hinting command: the guest finished a run / the host's idle value.
pub const FREE_PAGE_HINT_STOP: u32 = 0;
/// Hinting command: the host is done with the hints; the guest may reuse the pages.
pub const FREE_PAGE_HINT_DONE: u32 = 1;

/// Feature bits (virtio 1.x §5.5.3).
pub mod feature {
    /// A statistics queue is present.
    pub const STATS_VQ: u32 = 1;
    /// The driver deflates the balloon when the guest runs out of memory.
    pub const DEFLATE_ON_OOM: u32 = 2;
    /// A free-page-hinting queue is present.
    pub const FREE_PAGE_HINT: u32 = 3;
    /// A free-page-reporting queue is present.
    pub const REPORTING: u32 = 5;
}

/// The balloon's creation parameters (from `PUT /balloon`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Target size, MiB.
    pub amount_mib: u64,
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// Statistics interval, seconds; 0 disables statistics (and the statistics queue).
    pub stats_polling_interval_s: u16,
    /// Offer free-page hinting.
    pub free_page_hinting: bool,
    /// Offer free-page reporting.
    pub free_page_reporting: bool,
}

/// A runtime status change, for the API's read mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalloonStatus {
    /// New statistics (`GET /balloon/statistics`); only while statistics are enabled.
    Stats(Box<BalloonStats>),
    /// New hinting status (`GET /balloon/hinting/status`).
    Hinting(BalloonHintingStatus),
}

/// Receives [`BalloonStatus`] changes. Called with the device lock held, from the VMM thread
/// or a vCPU thread (configuration writes): it must not call back into the device.
pub type BalloonStatusSink = Arc<dyn Fn(BalloonStatus) + Send + Sync>;

/// Errors of the balloon's host-side operations. Texts are Firecracker's `BalloonError`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    /// The driver has not activated the device yet.
    #[error("Device not activated yet.")]
    DeviceNotActive,
    /// Hinting requested on a balloon configured without it.
    #[error("Attempting to use hinting when not enabled")]
    HintingNotEnabled,
    /// Statistics requested on a balloon configured without them.
    #[error("Received stats query when stats are disabled.")]
    StatisticsDisabled,
    /// Switching statistics on or off after boot.
    #[error("Statistics cannot be enabled/disabled after activation.")]
    StatisticsStateChange,
    /// The target exceeds the guest memory.
    #[error("Requested memory should be less than {0}MiB")]
    TooMuchMemoryRequested(u64),
    /// Creating an eventfd or the statistics timer failed.
    #[error("EventFd error: {0}")]
    EventFd(String),
    /// Arming the statistics timer failed.
    #[error("Timer error: {0}")]
    Timer(String),
    /// Raising the interrupt failed.
    #[error("Received error while sending an interrupt: {0}")]
    Interrupt(String),
}

/// `amount_mib` as 4 KiB pages, if it fits the 32-bit configuration field.
pub fn mib_to_pages(amount_mib: u64) -> Option<u32> {
    amount_mib
        .checked_mul(MIB_TO_4K_PAGES)
        .and_then(|p| u32::try_from(p).ok())
}

/// Whole MiB in `pages` 4 KiB pages.
pub fn pages_to_mib(pages: u32) -> u32 {
    // MIB_TO_4K_PAGES is 256.
    pages / 256
}

/// Sorts `pfns`, drops duplicates and returns `(first pfn, count)` ranges of consecutive pages.
pub fn compact_pfns(pfns: &mut [u32]) -> Vec<(u32, u32)> {
    pfns.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &pfn in pfns.iter() {
        match out.last_mut() {
            Some((start, count)) if u64::from(*start) + u64::from(*count) == u64::from(pfn) => {
                *count += 1;
            }
            Some((start, count)) if u64::from(*start) + u64::from(*count) > u64::from(pfn) => {
                // A duplicate (the slice is sorted): already covered.
            }
            _ => out.push((pfn, 1)),
        }
    }
    out
}

/// Applies one statistics entry to `stats`; `false` for an unknown tag (ignored).
pub fn apply_stat(stats: &mut BalloonStats, tag: u16, val: u64) -> bool {
    let slot = match tag {
        0 => &mut stats.swap_in,
        1 => &mut stats.swap_out,
        2 => &mut stats.major_faults,
        3 => &mut stats.minor_faults,
        4 => &mut stats.free_memory,
        5 => &mut stats.total_memory,
        6 => &mut stats.available_memory,
        7 => &mut stats.disk_caches,
        8 => &mut stats.hugetlb_allocations,
        9 => &mut stats.hugetlb_failures,
        10 => &mut stats.oom_kill,
        11 => &mut stats.alloc_stall,
        12 => &mut stats.async_scan,
        13 => &mut stats.direct_scan,
        14 => &mut stats.async_reclaim,
        15 => &mut stats.direct_reclaim,
        _ => return false,
    };
    *slot = Some(val);
    true
}

/// Parses a statistics buffer (packed `(u16 tag, u64 value)` little-endian entries, at most
/// [`MAX_STATS_TAGS`]; a trailing partial entry is ignored) into `stats`. Returns the number of
/// unknown tags.
pub fn parse_stats(bytes: &[u8], stats: &mut BalloonStats) -> u32 {
    let mut unknown = 0;
    for entry in bytes
        .chunks_exact(STAT_SIZE as usize)
        .take(MAX_STATS_TAGS as usize)
    {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let mut v = [0u8; 8];
        v.copy_from_slice(&entry[2..10]);
        if !apply_stat(stats, tag, u64::from_le_bytes(v)) {
            unknown += 1;
        }
    }
    unknown
}

/// Little-endian `u32`s of `bytes` (a trailing partial word is ignored).
pub fn parse_pfns(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
