//! `GET`, `PUT`, `PATCH /machine-config`.

use axum::{body::Bytes, extract::State, response::Response};
use squib_config::{
    action::ApiAction,
    schemas::machine_config::{RawMachineConfig, RawMachineConfigUpdate},
};

use super::{Ctrl, Reply, json_reply, submit_validated, vm_config_member};
use crate::error::Result;

pub(crate) async fn get(State(ctrl): Ctrl) -> Response {
    json_reply(vm_config_member(&ctrl, "machine-config"))
}

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawMachineConfig, _>(&ctrl, &body, ApiAction::PutMachineConfig).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawMachineConfigUpdate, _>(&ctrl, &body, ApiAction::PatchMachineConfig).await
}
