//! `PUT /serial`.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::serial::RawSerialConfig};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawSerialConfig, _>(&ctrl, &body, ApiAction::PutSerial).await
}
