//! The balloon's VMM side: device creation from `PUT /balloon`, its status sink, and the
//! post-boot actions (`PATCH /balloon`, `PATCH /balloon/statistics`, hinting start, status and
//! stop) with Firecracker's error texts.
//!
//! Runs on the VMM thread.

use std::sync::{Arc, Mutex, PoisonError};

use squib_config::{
    action::{ApiAction, ApiResponse},
    schemas::balloon::{BalloonConfig as ApiBalloonConfig, RawBalloonConfig},
};
use squib_devices::virtio::{
    Balloon, BalloonConfig, BalloonError, BalloonStatus, BalloonStatusSink,
};

use crate::device_manager::DeviceManager;
use crate::error::DeviceError;
use crate::memdev::Outcome;
use crate::runtime_status::{RuntimeStatus, StatusSink};

/// Firecracker's device id of the (unique) balloon.
pub const BALLOON_DEV_ID: &str = "balloon";

/// The device-side configuration of `PUT /balloon`.
pub fn device_config(cfg: &ApiBalloonConfig) -> BalloonConfig {
    BalloonConfig {
        amount_mib: cfg.amount_mib,
        deflate_on_oom: cfg.deflate_on_oom,
        stats_polling_interval_s: u16::from(cfg.stats_polling_interval_s),
        free_page_hinting: cfg.free_page_hinting,
        free_page_reporting: cfg.free_page_reporting,
    }
}

/// The `PUT /balloon` configuration a running balloon corresponds to (after a restore).
pub fn api_config(balloon: &Mutex<Balloon>) -> Option<ApiBalloonConfig> {
    let cfg = balloon
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .config();
    ApiBalloonConfig::try_from(RawBalloonConfig {
        amount_mib: cfg.amount_mib,
        deflate_on_oom: cfg.deflate_on_oom,
        stats_polling_interval_s: u8::try_from(cfg.stats_polling_interval_s).unwrap_or(u8::MAX),
        free_page_hinting: cfg.free_page_hinting,
        free_page_reporting: cfg.free_page_reporting,
    })
    .ok()
}

/// Creates the balloon of `cfg`.
pub fn create(cfg: &ApiBalloonConfig) -> Result<Arc<Mutex<Balloon>>, DeviceError> {
    Balloon::new(device_config(cfg))
        .map(|b| Arc::new(Mutex::new(b)))
        .map_err(|e| {
            DeviceError::Config(format!(
                "Balloon config error: Error creating the balloon device: {e}"
            ))
        })
}

/// Routes the balloon's status changes to `sink` (which publishes the current ones at once).
pub fn connect(balloon: &Mutex<Balloon>, sink: &StatusSink) {
    let sink = sink.clone();
    let adapter: BalloonStatusSink = Arc::new(move |s| match s {
        BalloonStatus::Stats(stats) => sink.publish(RuntimeStatus::BalloonStats(Some(stats))),
        BalloonStatus::Hinting(h) => sink.publish(RuntimeStatus::BalloonHinting(Some(h))),
    });
    balloon
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set_status_sink(adapter);
}

fn update_error(e: &BalloonError) -> ApiResponse {
    ApiResponse::bad_request(format!("Balloon update error: Balloon: {e}"))
}

/// A post-boot balloon action. `devices` is `None` before boot (admission refuses these
/// actions then anyway).
pub fn handle(action: &ApiAction, devices: Option<&DeviceManager>) -> Outcome {
    if matches!(action, ApiAction::PutBalloon(_)) {
        return Outcome::Apply;
    }
    let Some(balloon) = devices.and_then(DeviceManager::balloon) else {
        return Outcome::Reply(ApiResponse::bad_request(
            "Balloon update error: Failed perform action on device: Device not found",
        ));
    };
    let mut dev = balloon.lock().unwrap_or_else(PoisonError::into_inner);
    let result = match action {
        ApiAction::PatchBalloon(upd) => dev.update_size(upd.amount_mib).map(|()| Outcome::Apply),
        ApiAction::PatchBalloonStatistics(upd) => dev
            .update_stats_polling_interval(u16::from(upd.stats_polling_interval_s))
            .map(|()| Outcome::Apply),
        ApiAction::StartBalloonHinting(cmd) => dev
            .start_hinting(cmd.acknowledge_on_stop)
            .map(|()| Outcome::Reply(ApiResponse::NoContent)),
        ApiAction::BalloonHintingStatus => dev.hinting_status().map(|s| {
            Outcome::Reply(ApiResponse::Json(
                serde_json::to_value(s).unwrap_or_default(),
            ))
        }),
        ApiAction::StopBalloonHinting => dev
            .stop_hinting()
            .map(|()| Outcome::Reply(ApiResponse::NoContent)),
        _ => Ok(Outcome::Reply(ApiResponse::bad_request(
            "Balloon update error: unexpected action",
        ))),
    };
    result.unwrap_or_else(|e| Outcome::Reply(update_error(&e)))
}
