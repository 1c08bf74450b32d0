//! `GET`, `PUT`, `PATCH /machine-config`.
//!
//! The body's `cpu_template` names are the host architecture's (Firecracker has one enum per
//! architecture), so an unknown name gets Firecracker's serde text with its position.

use axum::{body::Bytes, extract::State, response::Response};
use squib_config::{
    action::ApiAction,
    schemas::machine_config::{
        Aarch64CpuTemplate, RawMachineConfig, RawMachineConfigUpdate, X86CpuTemplate,
    },
};
use squib_core::GuestArch;

use super::{Ctrl, Reply, json_reply, submit_validated, vm_config_member};
use crate::error::Result;

pub(crate) async fn get(State(ctrl): Ctrl) -> Response {
    json_reply(vm_config_member(&ctrl, "machine-config"))
}

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    let wrap = ApiAction::PutMachineConfig;
    match ctrl.snapshot().profile.arch {
        GuestArch::X86_64 => {
            submit_validated::<RawMachineConfig<X86CpuTemplate>, _>(&ctrl, &body, wrap).await
        }
        GuestArch::Aarch64 => {
            submit_validated::<RawMachineConfig<Aarch64CpuTemplate>, _>(&ctrl, &body, wrap).await
        }
    }
}

pub(crate) async fn patch(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    let wrap = ApiAction::PatchMachineConfig;
    match ctrl.snapshot().profile.arch {
        GuestArch::X86_64 => {
            submit_validated::<RawMachineConfigUpdate<X86CpuTemplate>, _>(&ctrl, &body, wrap).await
        }
        GuestArch::Aarch64 => {
            submit_validated::<RawMachineConfigUpdate<Aarch64CpuTemplate>, _>(&ctrl, &body, wrap)
                .await
        }
    }
}
