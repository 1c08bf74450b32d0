//! `GET`, `PUT`, `PATCH /mmds` and `PUT /mmds/config`.
//!
//! The data store is any JSON value, bounded by the payload limit on the way in and by
//! `--mmds-size-limit` (413) once merged (checked by the controller).

use axum::{
    body::Bytes,
    extract::State,
    http::Uri,
    response::{IntoResponse, Response},
};
use squib_config::{action::ApiAction, schemas::mmds::RawMmdsConfig};

use super::{Ctrl, Reply, json_reply, parse_json, submit, submit_validated};
use crate::error::{ApiError, Result};

pub(crate) async fn get(State(ctrl): Ctrl) -> Response {
    let snap = ctrl.snapshot();
    json_reply(
        snap.vm_config
            .mmds()
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
    )
}

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    let value: serde_json::Value = parse_json(&body)?;
    submit(&ctrl, ApiAction::PutMmds(value)).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    let value: serde_json::Value = parse_json(&body)?;
    submit(&ctrl, ApiAction::PatchMmds(value)).await
}

pub(crate) async fn put_config(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawMmdsConfig, _>(&ctrl, &body, ApiAction::PutMmdsConfig).await
}

pub(crate) async fn put_unknown(uri: Uri) -> Response {
    let sub = uri.path().rsplit('/').next().unwrap_or_default();
    ApiError::BadRequest(format!("Unrecognized PUT request path `{sub}`.")).into_response()
}
