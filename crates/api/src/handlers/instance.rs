//! `GET /`, `GET /version`, `GET /vm/config`, `PATCH /vm`.

use axum::{body::Bytes, extract::State, response::Response};
use squib_config::{action::ApiAction, schemas::vm::RawVm};

use super::{Ctrl, Reply, json_reply, submit_validated};
use crate::error::Result;

pub(crate) async fn get_info(State(ctrl): Ctrl) -> Response {
    json_reply(serde_json::to_value(&ctrl.snapshot().instance_info).unwrap_or_default())
}

pub(crate) async fn get_version(State(ctrl): Ctrl) -> Response {
    json_reply(serde_json::to_value(ctrl.snapshot().version()).unwrap_or_default())
}

pub(crate) async fn get_vm_config(State(ctrl): Ctrl) -> Response {
    json_reply(serde_json::to_value(&ctrl.snapshot().vm_config).unwrap_or_default())
}

pub(crate) async fn patch_vm(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawVm, _>(&ctrl, &body, ApiAction::PatchVm).await
}
