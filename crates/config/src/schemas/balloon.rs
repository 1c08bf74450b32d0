//! `/balloon`, `/balloon/statistics` and `/balloon/hinting/{op}` bodies and responses.
//!
//! Field rules (seed spec, which fixes them where Firecracker differs):
//! - `amount_mib`: `u64`; that it does not exceed the guest memory is checked against the
//!   machine configuration by [`crate::vm_config::VmConfig::apply`].
//! - `deflate_on_oom`: optional, defaults to `false`.
//! - `stats_polling_interval_s`: `u8` seconds (`0..=`[`MAX_STATS_POLL_INTERVAL`]); 0 disables
//!   statistics. The wire type itself enforces the cap.
//! - `free_page_hinting`, `free_page_reporting`: optional, default `false`.
//!
//! Responses: [`BalloonStats`] (`GET /balloon/statistics`) and [`BalloonHintingStatus`]
//! (`GET`/`PATCH /balloon/hinting/status`).

use serde::{Deserialize, Serialize};

/// Largest `stats_polling_interval_s`. The field is a `u8`, so the type already enforces it;
/// the constant documents the intent.
pub const MAX_STATS_POLL_INTERVAL: u8 = u8::MAX;

/// The `{op}` of `PATCH /balloon/hinting/{op}`; one variant per URL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalloonHintingOp {
    /// Start a free-page hinting run.
    Start,
    /// Report the hinting status.
    Status,
    /// Stop the current hinting run.
    Stop,
}

impl BalloonHintingOp {
    /// Parse the `{op}` URL segment (`start`, `status` or `stop`, case-sensitive).
    pub fn from_url_segment(s: &str) -> Result<Self, String> {
        match s {
            "start" => Ok(Self::Start),
            "status" => Ok(Self::Status),
            "stop" => Ok(Self::Stop),
            other => Err(format!(
                "Invalid balloon-hinting op: must be one of start | status | stop (got {other})"
            )),
        }
    }
}

/// Raw `PUT /balloon` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalloonConfig {
    /// Target balloon size, MiB.
    pub amount_mib: u64,
    /// Deflate the balloon when the guest is under memory pressure.
    #[serde(default)]
    pub deflate_on_oom: bool,
    /// Statistics polling interval, seconds (0 disables statistics).
    #[serde(default)]
    pub stats_polling_interval_s: u8,
    /// Free-page hinting.
    #[serde(default)]
    pub free_page_hinting: bool,
    /// Free-page reporting.
    #[serde(default)]
    pub free_page_reporting: bool,
}

/// Validated `PUT /balloon` body; also the `GET /balloon` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BalloonConfig {
    /// Target balloon size, MiB.
    pub amount_mib: u64,
    /// Deflate on OOM.
    pub deflate_on_oom: bool,
    /// Statistics polling interval, seconds (0 disables statistics).
    pub stats_polling_interval_s: u8,
    /// Free-page hinting.
    pub free_page_hinting: bool,
    /// Free-page reporting.
    pub free_page_reporting: bool,
}

impl TryFrom<RawBalloonConfig> for BalloonConfig {
    type Error = String;

    fn try_from(raw: RawBalloonConfig) -> Result<Self, Self::Error> {
        // `stats_polling_interval_s` is a u8: 0..=MAX_STATS_POLL_INTERVAL holds by type.
        Ok(Self {
            amount_mib: raw.amount_mib,
            deflate_on_oom: raw.deflate_on_oom,
            stats_polling_interval_s: raw.stats_polling_interval_s,
            free_page_hinting: raw.free_page_hinting,
            free_page_reporting: raw.free_page_reporting,
        })
    }
}

/// Raw `PATCH /balloon` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalloonUpdate {
    /// New target size, MiB.
    pub amount_mib: u64,
}

/// Validated `PATCH /balloon` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BalloonUpdate {
    /// New target size, MiB.
    pub amount_mib: u64,
}

impl TryFrom<RawBalloonUpdate> for BalloonUpdate {
    type Error = String;

    fn try_from(raw: RawBalloonUpdate) -> Result<Self, Self::Error> {
        Ok(Self {
            amount_mib: raw.amount_mib,
        })
    }
}

/// Raw `PATCH /balloon/statistics` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalloonStatsUpdate {
    /// New polling interval, seconds (0 disables).
    pub stats_polling_interval_s: u8,
}

/// Validated `PATCH /balloon/statistics` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BalloonStatsUpdate {
    /// New polling interval, seconds.
    pub stats_polling_interval_s: u8,
}

impl TryFrom<RawBalloonStatsUpdate> for BalloonStatsUpdate {
    type Error = String;

    fn try_from(raw: RawBalloonStatsUpdate) -> Result<Self, Self::Error> {
        // u8: the cap MAX_STATS_POLL_INTERVAL holds by type.
        Ok(Self {
            stats_polling_interval_s: raw.stats_polling_interval_s,
        })
    }
}

const fn default_ack_on_stop() -> bool {
    true
}

/// Raw `PATCH /balloon/hinting/start` body (the body itself is optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalloonStartCmd {
    /// Acknowledge automatically when the guest reports the run as done (default `true`, as
    /// Firecracker).
    #[serde(default = "default_ack_on_stop")]
    pub acknowledge_on_stop: bool,
}

impl Default for RawBalloonStartCmd {
    fn default() -> Self {
        Self {
            acknowledge_on_stop: true,
        }
    }
}

/// Validated hinting start command. [`BalloonStartCmd::default`] stands for an empty body
/// (`acknowledge_on_stop: true`, Firecracker's default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BalloonStartCmd {
    /// Acknowledge automatically when the guest reports the run as done.
    pub acknowledge_on_stop: bool,
}

impl Default for BalloonStartCmd {
    fn default() -> Self {
        Self {
            acknowledge_on_stop: true,
        }
    }
}

impl TryFrom<RawBalloonStartCmd> for BalloonStartCmd {
    type Error = String;

    fn try_from(raw: RawBalloonStartCmd) -> Result<Self, Self::Error> {
        Ok(Self {
            acknowledge_on_stop: raw.acknowledge_on_stop,
        })
    }
}

/// `GET /balloon/statistics` response. The four target/actual fields are always present; the
/// guest-reported counters only when the guest provided them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStats {
    /// Pages the device aims to hold.
    pub target_pages: u32,
    /// Pages the device holds.
    pub actual_pages: u32,
    /// MiB the device aims to hold.
    pub target_mib: u32,
    /// MiB the device holds.
    pub actual_mib: u32,
    /// Memory swapped in, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    /// Memory swapped out, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    /// Major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    /// Unused memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    /// Total memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Memory available without swapping, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    /// Quickly reclaimable cache, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    /// Successful hugetlb allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    /// OOM killer invocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// Allocation slow-path stalls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    /// Memory scanned asynchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    /// Memory scanned directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    /// Memory reclaimed asynchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    /// Memory reclaimed directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

/// Free-page hinting status response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonHintingStatus {
    /// Last command issued by the host.
    pub host_cmd: u32,
    /// Last command reported by the guest (`null` until it reports one, as Firecracker).
    #[serde(default)]
    pub guest_cmd: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_accept_minimal_balloon_config() {
        let raw: RawBalloonConfig = serde_json::from_str(r#"{"amount_mib":0}"#).unwrap();
        let cfg = BalloonConfig::try_from(raw).unwrap();
        assert_eq!(cfg.amount_mib, 0);
        assert!(!cfg.deflate_on_oom);
        assert_eq!(
            serde_json::to_string(&cfg).unwrap(),
            r#"{"amount_mib":0,"deflate_on_oom":false,"stats_polling_interval_s":0,"free_page_hinting":false,"free_page_reporting":false}"#
        );
    }

    #[test]
    fn test_should_accept_max_polling_interval_and_reject_larger() {
        let raw = RawBalloonConfig {
            amount_mib: 1,
            deflate_on_oom: true,
            stats_polling_interval_s: MAX_STATS_POLL_INTERVAL,
            free_page_hinting: true,
            free_page_reporting: true,
        };
        assert_eq!(
            BalloonConfig::try_from(raw)
                .unwrap()
                .stats_polling_interval_s,
            255
        );
        let err = serde_json::from_str::<RawBalloonConfig>(
            r#"{"amount_mib":1,"stats_polling_interval_s":256}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid value: integer `256`, expected u8")
        );
        let raw: RawBalloonStatsUpdate =
            serde_json::from_str(r#"{"stats_polling_interval_s":5}"#).unwrap();
        assert_eq!(
            BalloonStatsUpdate::try_from(raw)
                .unwrap()
                .stats_polling_interval_s,
            5
        );
    }

    #[test]
    fn test_should_reject_unknown_and_missing_fields() {
        assert!(
            serde_json::from_str::<RawBalloonConfig>(r#"{"deflate_on_oom":true}"#)
                .unwrap_err()
                .to_string()
                .starts_with("missing field `amount_mib`")
        );
        assert!(
            serde_json::from_str::<RawBalloonUpdate>(r#"{"amount_mib":1,"x":1}"#)
                .unwrap_err()
                .to_string()
                .starts_with("unknown field `x`")
        );
    }

    #[test]
    fn test_should_parse_patch() {
        let raw: RawBalloonUpdate = serde_json::from_str(r#"{"amount_mib":128}"#).unwrap();
        assert_eq!(BalloonUpdate::try_from(raw).unwrap().amount_mib, 128);
    }

    #[test]
    fn test_should_parse_hinting_ops_and_start_cmd() {
        assert_eq!(
            BalloonHintingOp::from_url_segment("start").unwrap(),
            BalloonHintingOp::Start
        );
        assert_eq!(
            BalloonHintingOp::from_url_segment("status").unwrap(),
            BalloonHintingOp::Status
        );
        assert_eq!(
            BalloonHintingOp::from_url_segment("stop").unwrap(),
            BalloonHintingOp::Stop
        );
        assert_eq!(
            BalloonHintingOp::from_url_segment("frobnicate").unwrap_err(),
            "Invalid balloon-hinting op: must be one of start | status | stop (got frobnicate)"
        );
        let raw: RawBalloonStartCmd = serde_json::from_str("{}").unwrap();
        assert_eq!(
            BalloonStartCmd::try_from(raw).unwrap(),
            BalloonStartCmd::default()
        );
        assert!(
            BalloonStartCmd::default().acknowledge_on_stop,
            "Firecracker's default"
        );
        let raw: RawBalloonStartCmd =
            serde_json::from_str(r#"{"acknowledge_on_stop":false}"#).unwrap();
        assert!(!BalloonStartCmd::try_from(raw).unwrap().acknowledge_on_stop);
        let raw: RawBalloonStartCmd =
            serde_json::from_str(r#"{"acknowledge_on_stop":true}"#).unwrap();
        assert!(BalloonStartCmd::try_from(raw).unwrap().acknowledge_on_stop);
    }

    #[test]
    fn test_should_serialize_responses() {
        let stats = BalloonStats {
            target_pages: 1,
            actual_pages: 2,
            target_mib: 3,
            actual_mib: 4,
            oom_kill: Some(0),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&stats).unwrap(),
            r#"{"target_pages":1,"actual_pages":2,"target_mib":3,"actual_mib":4,"oom_kill":0}"#
        );
        let back: BalloonStats =
            serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
        let st = BalloonHintingStatus {
            host_cmd: 1,
            guest_cmd: None,
        };
        assert_eq!(
            serde_json::to_string(&st).unwrap(),
            r#"{"host_cmd":1,"guest_cmd":null}"#
        );
    }
}
