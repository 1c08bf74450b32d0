//! `PUT /boot-source`.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::boot_source::RawBootSource};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawBootSource, _>(&ctrl, &body, ApiAction::PutBootSource).await
}
