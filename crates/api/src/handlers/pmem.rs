//! `PUT`, `PATCH`, `DELETE /pmem/{id}`.

use axum::{body::Bytes, extract::State, http::Uri};
use squib_config::{
    action::ApiAction,
    schemas::pmem::{PmemConfig, PmemUpdate, RawPmemConfig, RawPmemUpdate},
};

use super::{Ctrl, Reply, check_same_id, parse_validated, path_id, submit};
use crate::error::Result;

pub(crate) async fn put(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let id = path_id(&uri)?;
    let cfg: PmemConfig = parse_validated::<RawPmemConfig, _>(&body)?;
    check_same_id(id, cfg.id())?;
    submit(&ctrl, ApiAction::PutPmem(cfg)).await
}

pub(crate) async fn patch(State(ctrl): Ctrl, uri: Uri, body: Bytes) -> Result<Reply> {
    let id = path_id(&uri)?;
    let upd: PmemUpdate = parse_validated::<RawPmemUpdate, _>(&body)?;
    check_same_id(id, upd.id())?;
    submit(&ctrl, ApiAction::PatchPmem(upd)).await
}

pub(crate) async fn delete(State(ctrl): Ctrl, uri: Uri) -> Result<Reply> {
    let id = path_id(&uri)?.to_owned();
    submit(&ctrl, ApiAction::DeletePmem(id)).await
}
