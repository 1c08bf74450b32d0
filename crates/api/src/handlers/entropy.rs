//! `PUT /entropy`.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::entropy::RawEntropyConfig};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawEntropyConfig, _>(&ctrl, &body, ApiAction::PutEntropy).await
}
