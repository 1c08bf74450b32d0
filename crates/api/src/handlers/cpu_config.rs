//! `PUT /cpu-config`: a custom CPU template, parsed for the host's guest architecture with
//! Firecracker's texts (`squib_config::schemas::cpu_config`).

use axum::{body::Bytes, extract::State};
use squib_config::{action::ApiAction, schemas::cpu_config::CpuConfig};

use super::{Ctrl, Reply, submit};
use crate::error::{ApiError, Result};

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    let arch = ctrl.snapshot().profile.arch;
    let template = CpuConfig::from_json(&body, arch).map_err(|e| {
        ApiError::BadRequest(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })?;
    submit(&ctrl, ApiAction::PutCpuConfig(template)).await
}
