//! `PUT /snapshot/create`, `PUT /snapshot/load`.

use axum::{body::Bytes, extract::State};
use squib_config::{
    action::ApiAction,
    schemas::snapshot::{RawSnapshotCreateParams, RawSnapshotLoadParams},
};

use super::{Ctrl, Reply, submit_validated};
use crate::error::{ApiError, Result};

pub(crate) async fn put_missing() -> ApiError {
    ApiError::BadRequest("Missing snapshot operation type.".to_owned())
}

pub(crate) async fn put_create(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawSnapshotCreateParams, _>(&ctrl, &body, ApiAction::CreateSnapshot).await
}

pub(crate) async fn put_load(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawSnapshotLoadParams, _>(&ctrl, &body, ApiAction::LoadSnapshot).await
}
