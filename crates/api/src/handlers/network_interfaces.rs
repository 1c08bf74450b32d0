//! `PUT`, `PATCH`, `DELETE /network-interfaces/{iface_id}`.

use axum::{body::Bytes, extract::State, http::Uri};
use squib_config::{
    action::ApiAction,
    schemas::network_interface::{
        NetworkInterfaceConfig, NetworkInterfaceUpdate, RawNetworkInterfaceConfig,
        RawNetworkInterfaceUpdate,
    },
};

use super::{Ctrl, Reply, parse_validated, path_id, submit};
use crate::error::{ApiError, Result};

/// Network interfaces use a different mismatch text than drives.
fn check_same_iface(path: &str, body: &str) -> Result<()> {
    if path == body {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "The id from the path [{path}] does not match the id from the body [{body}]!"
    )))
}

pub(crate) async fn put(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let id = path_id(&uri)?;
    let cfg: NetworkInterfaceConfig = parse_validated::<RawNetworkInterfaceConfig, _>(&body)?;
    check_same_iface(id, cfg.id())?;
    submit(&ctrl, ApiAction::PutNetworkInterface(cfg)).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let id = path_id(&uri)?;
    let upd: NetworkInterfaceUpdate = parse_validated::<RawNetworkInterfaceUpdate, _>(&body)?;
    check_same_iface(id, upd.id())?;
    submit(&ctrl, ApiAction::PatchNetworkInterface(upd)).await
}

pub(crate) async fn delete(State(ctrl): Ctrl, uri: Uri) -> Result<Reply> {
    let id = path_id(&uri)?.to_owned();
    submit(&ctrl, ApiAction::DeleteNetworkInterface(id)).await
}
