//! `PUT /vsock`.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::vsock::RawVsockConfig};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawVsockConfig, _>(&ctrl, &body, ApiAction::PutVsock).await
}
