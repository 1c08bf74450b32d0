//! `GET`, `PUT`, `PATCH /hotplug/memory` (virtio-mem).
//!
//! `GET` answers from the mirror in any phase (seed rule): the VMM's published status once it
//! has one, else the configured sizes with nothing plugged yet.

use axum::{body::Bytes, extract::State, response::Response};
use squib_config::{
    action::ApiAction,
    schemas::hotplug_memory::{RawHotplugMemoryConfig, RawHotplugMemoryUpdate},
};

use super::{Ctrl, Reply, json_reply, submit_validated, vm_config_member};
use crate::error::{ApiError, Result};

pub(crate) async fn get(State(ctrl): Ctrl) -> Result<Response> {
    if let Some(status) = &ctrl.snapshot().hotplug_status {
        return Ok(json_reply(serde_json::to_value(status).unwrap_or_default()));
    }
    match vm_config_member(&ctrl, "memory-hotplug") {
        serde_json::Value::Object(mut cfg) => {
            cfg.insert("plugged_size_mib".into(), 0.into());
            cfg.insert("requested_size_mib".into(), 0.into());
            Ok(json_reply(serde_json::Value::Object(cfg)))
        }
        _ => Err(ApiError::BadRequest(
            "Memory hotplug config error: No memory hotplug device found.".to_owned(),
        )),
    }
}

pub(crate) async fn put(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawHotplugMemoryConfig, _>(&ctrl, &body, ApiAction::PutHotplugMemory).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, body: Bytes) -> Result<Reply> {
    submit_validated::<RawHotplugMemoryUpdate, _>(&ctrl, &body, ApiAction::PatchHotplugMemory).await
}
