//! `PUT /cpu-config`.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::cpu_config::RawCpuConfig};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawCpuConfig, _>(&ctrl, &body, ApiAction::PutCpuConfig).await
}
