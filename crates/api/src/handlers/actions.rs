//! `PUT /actions`: InstanceStart, FlushMetrics, SendCtrlAltDel.

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::actions::RawInstanceActionInfo};

use super::{Ctrl, Reply, submit_validated};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawInstanceActionInfo, _>(&ctrl, &body, ApiAction::Instance).await
}
