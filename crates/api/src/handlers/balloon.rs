//! `/balloon`, `/balloon/statistics`, `/balloon/hinting/{start|status|stop}`.
//!
//! GETs answer from the read mirror (the VMM publishes statistics and hinting status there).
//! Per the seeds, `status` is reachable with both `GET` and `PATCH`; `PATCH` bodies on the
//! hinting routes are optional.

use axum::{
    body::Bytes,
    extract::State,
    http::Uri,
    response::{IntoResponse, Response},
};
use squib_config::{
    action::ApiAction,
    schemas::balloon::{
        BalloonHintingOp, BalloonStartCmd, RawBalloonConfig, RawBalloonStartCmd,
        RawBalloonStatsUpdate, RawBalloonUpdate,
    },
};

use super::{Ctrl, Reply, json_reply, parse_validated, submit, submit_validated, vm_config_member};
use crate::error::{ApiError, Result};

const NO_BALLOON: &str = "Balloon config error: No balloon device found.";
/// Firecracker's answer to `GET /balloon/statistics` when statistics are off.
const STATS_DISABLED: &str =
    "Internal VMM error: Balloon: Received stats query when stats are disabled.";
/// Firecracker's answer to a hinting request on a balloon configured without hinting.
const HINTING_DISABLED: &str =
    "Balloon update error: Balloon: Attempting to use hinting when not enabled";

/// Firecracker serves the balloon's runtime GETs only once the microVM runs.
fn require_started(ctrl: &crate::RuntimeApiController) -> Result<()> {
    if ctrl.snapshot().phase.is_pre_boot() {
        return Err(ApiError::BadRequest(
            squib_config::action::NOT_SUPPORTED_BEFORE_START.to_owned(),
        ));
    }
    Ok(())
}

fn last_segment(uri: &Uri) -> &str {
    uri.path().rsplit('/').next().unwrap_or_default()
}

pub(crate) async fn get(State(ctrl): Ctrl) -> Result<Response> {
    match vm_config_member(&ctrl, "balloon") {
        serde_json::Value::Null => Err(ApiError::BadRequest(NO_BALLOON.to_owned())),
        v => Ok(json_reply(v)),
    }
}

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawBalloonConfig, _>(&ctrl, &body, ApiAction::PutBalloon).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawBalloonUpdate, _>(&ctrl, &body, ApiAction::PatchBalloon).await
}

pub(crate) async fn get_stats(State(ctrl): Ctrl) -> Result<Response> {
    if vm_config_member(&ctrl, "balloon").is_null() {
        return Err(ApiError::BadRequest(NO_BALLOON.to_owned()));
    }
    require_started(&ctrl)?;
    match &ctrl.snapshot().balloon_stats {
        Some(stats) => Ok(json_reply(serde_json::to_value(stats).unwrap_or_default())),
        None => Err(ApiError::BadRequest(STATS_DISABLED.to_owned())),
    }
}

pub(crate) async fn patch_stats(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawBalloonStatsUpdate, _>(&ctrl, &body, ApiAction::PatchBalloonStatistics)
        .await
}

pub(crate) async fn get_hinting(State(ctrl): Ctrl, uri: Uri) -> Result<Response> {
    let op = last_segment(&uri);
    if op != "status" {
        return Err(ApiError::BadRequest(format!(
            "Unrecognized GET request path `/hinting/{op}`."
        )));
    }
    let balloon = vm_config_member(&ctrl, "balloon");
    if balloon.is_null() {
        return Err(ApiError::BadRequest(NO_BALLOON.to_owned()));
    }
    require_started(&ctrl)?;
    match &ctrl.snapshot().balloon_hinting {
        Some(status) => Ok(json_reply(serde_json::to_value(status).unwrap_or_default())),
        None if balloon["free_page_hinting"] != serde_json::Value::Bool(true) => {
            Err(ApiError::BadRequest(HINTING_DISABLED.to_owned()))
        }
        None => Err(ApiError::BadRequest(
            "Balloon config error: Free page hinting has not been started.".to_owned(),
        )),
    }
}

pub(crate) async fn patch_hinting(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let op =
        BalloonHintingOp::from_url_segment(last_segment(&uri)).map_err(ApiError::BadRequest)?;
    let action = match op {
        BalloonHintingOp::Start => {
            let cmd = if body.is_empty() {
                BalloonStartCmd::default()
            } else {
                parse_validated::<RawBalloonStartCmd, _>(&body)?
            };
            ApiAction::StartBalloonHinting(cmd)
        }
        BalloonHintingOp::Status => ApiAction::BalloonHintingStatus,
        BalloonHintingOp::Stop => ApiAction::StopBalloonHinting,
    };
    submit(&ctrl, action).await
}

pub(crate) async fn get_unknown(uri: Uri) -> Response {
    ApiError::BadRequest(format!(
        "Unrecognized GET request path `{}`.",
        last_segment(&uri)
    ))
    .into_response()
}
