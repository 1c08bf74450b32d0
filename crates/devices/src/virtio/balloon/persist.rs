//! Snapshot state of the balloon: configuration, target/actual, the held statistics buffer,
//! the guest's last statistics and the hinting state (Firecracker's `BalloonState`).
//!
//! The queues are the transport's ([`crate::virtio::mmio::persist`]); the transport re-activates
//! the restored device, which re-arms the statistics timer. As in Firecracker, a restored
//! device publishes `DONE` as the hinting command, so a guest caught mid-run releases its
//! hinted pages.

use serde::{Deserialize, Serialize};
use squib_config::schemas::balloon::BalloonStats;

use super::device::{ConfigSpace, HintingState};
use super::{Balloon, BalloonConfig, BalloonError, FREE_PAGE_HINT_DONE, apply_stat};
use crate::persist::Persist;
use crate::virtio::{MAX_QUEUE_SIZE, VirtioDevice};

/// The balloon as a snapshot saves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonState {
    /// Deflate-on-OOM offered.
    pub deflate_on_oom: bool,
    /// Statistics interval, seconds (0: no statistics queue).
    pub stats_polling_interval_s: u16,
    /// Free-page hinting offered.
    pub free_page_hinting: bool,
    /// Free-page reporting offered.
    pub free_page_reporting: bool,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// Target, 4 KiB pages.
    pub num_pages: u32,
    /// Pages the driver holds.
    pub actual_pages: u32,
    /// The statistics buffer the device held.
    pub stats_desc: Option<u16>,
    /// The guest's last statistics as `(tag, value)` pairs (target/actual are recomputed).
    pub latest_stats: Vec<(u16, u64)>,
    /// Free-page-hinting state.
    pub hinting: HintingState,
}

/// Why a balloon cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum BalloonRestoreError {
    /// Creating the device failed.
    #[error("{0}")]
    Balloon(#[from] BalloonError),
    /// The saved statistics buffer index is impossible.
    #[error("invalid saved stats descriptor index {0}")]
    StatsDescriptor(u16),
}

impl Persist for Balloon {
    type State = BalloonState;
    type ConstructorArgs = ();
    type Error = BalloonRestoreError;

    fn save(&self) -> BalloonState {
        BalloonState {
            deflate_on_oom: self.cfg.deflate_on_oom,
            stats_polling_interval_s: self.cfg.stats_polling_interval_s,
            free_page_hinting: self.cfg.free_page_hinting,
            free_page_reporting: self.cfg.free_page_reporting,
            acked_features: self.acked_features,
            num_pages: self.config.num_pages,
            actual_pages: self.config.actual_pages,
            stats_desc: self.stats_desc,
            latest_stats: stats_to_tags(&self.latest_stats),
            hinting: self.hinting,
        }
    }

    fn restore((): (), state: &BalloonState) -> Result<Self, BalloonRestoreError> {
        if let Some(d) = state.stats_desc
            && (d >= MAX_QUEUE_SIZE || state.stats_polling_interval_s == 0)
        {
            return Err(BalloonRestoreError::StatsDescriptor(d));
        }
        let mut dev = Balloon::new(BalloonConfig {
            amount_mib: 0,
            deflate_on_oom: state.deflate_on_oom,
            stats_polling_interval_s: state.stats_polling_interval_s,
            free_page_hinting: state.free_page_hinting,
            free_page_reporting: state.free_page_reporting,
        })?;
        dev.ack_features(state.acked_features);
        dev.restore_parts(
            ConfigSpace {
                num_pages: state.num_pages,
                actual_pages: state.actual_pages,
                free_page_hint_cmd_id: FREE_PAGE_HINT_DONE,
            },
            state.stats_desc,
            tags_to_stats(&state.latest_stats),
            state.hinting,
        );
        Ok(dev)
    }
}

/// The guest-reported statistics as `(tag, value)` pairs, in tag order. (The state container's
/// encoding has no "skip if absent" fields, so no `Option`s are stored.)
fn stats_to_tags(s: &BalloonStats) -> Vec<(u16, u64)> {
    [
        s.swap_in,
        s.swap_out,
        s.major_faults,
        s.minor_faults,
        s.free_memory,
        s.total_memory,
        s.available_memory,
        s.disk_caches,
        s.hugetlb_allocations,
        s.hugetlb_failures,
        s.oom_kill,
        s.alloc_stall,
        s.async_scan,
        s.direct_scan,
        s.async_reclaim,
        s.direct_reclaim,
    ]
    .into_iter()
    .zip(0u16..)
    .filter_map(|(v, tag)| v.map(|v| (tag, v)))
    .collect()
}

/// The inverse of [`stats_to_tags`]; unknown tags are ignored.
fn tags_to_stats(tags: &[(u16, u64)]) -> BalloonStats {
    let mut s = BalloonStats::default();
    for &(tag, v) in tags {
        apply_stat(&mut s, tag, v);
    }
    s
}
