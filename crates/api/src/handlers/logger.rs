//! `PUT /logger`.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::logger::RawLoggerConfig};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawLoggerConfig, _>(&ctrl, &body, ApiAction::PutLogger).await
}
