//! `PUT`, `PATCH`, `DELETE /drives/{drive_id}`.

use axum::{body::Bytes, extract::State, http::Uri};
use squib_config::{
    action::ApiAction,
    schemas::drive::{DriveConfig, DriveUpdate, RawDriveConfig, RawDriveUpdate},
};

use super::{Ctrl, Reply, check_same_id, parse_validated, path_id, submit};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let id = path_id(&uri)?;
    let cfg: DriveConfig = parse_validated::<RawDriveConfig, _>(&body)?;
    check_same_id(id, cfg.id())?;
    submit(&ctrl, ApiAction::PutDrive(cfg)).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let id = path_id(&uri)?;
    let upd: DriveUpdate = parse_validated::<RawDriveUpdate, _>(&body)?;
    check_same_id(id, upd.id())?;
    submit(&ctrl, ApiAction::PatchDrive(upd)).await
}

pub(crate) async fn delete(State(ctrl): Ctrl, uri: Uri) -> Result<Reply> {
    let id = path_id(&uri)?.to_owned();
    submit(&ctrl, ApiAction::DeleteDrive(id)).await
}
