//! The axum router and the helpers every resource handler uses.
//!
//! Routing follows Firecracker's table (`firecracker-notes.md` §1.2/§1.4): one module per
//! resource, an explicit route per (method, path), and for everything else the
//! `Invalid request method and/or path: <METHOD> </path>.` fault. A middleware enforces the
//! generic body-presence rules first (`GET request cannot have a body.`, `Empty PUT request.`,
//! ...) and stamps `Server: Firecracker API` on every response.
//!
//! Handlers never use axum extractors that can reject with non-JSON bodies: bodies arrive as
//! `Bytes`, ids are taken from the raw URI path.

mod actions;
mod balloon;
mod boot_source;
mod cpu_config;
mod drives;
mod entropy;
mod hotplug_memory;
mod instance;
mod logger;
mod machine_config;
mod metrics;
mod mmds;
mod network_interfaces;
mod pmem;
mod serial;
mod snapshot;
mod vsock;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::Request,
    http::{HeaderValue, Method, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde::de::DeserializeOwned;
use squib_config::action::{ApiAction, ApiResponse};

use crate::{
    controller::RuntimeApiController,
    error::{ApiError, Result},
    server::FIRECRACKER_SERVER_HEADER,
};

/// Shared handler state.
pub(crate) type Ctrl = axum::extract::State<Arc<RuntimeApiController>>;

/// Build the Firecracker API router around `controller`.
pub fn router(controller: Arc<RuntimeApiController>) -> Router {
    Router::new()
        .route("/", get(instance::get_info))
        .route("/version", get(instance::get_version))
        .route("/vm", axum::routing::patch(instance::patch_vm))
        .route("/vm/config", get(instance::get_vm_config))
        .route("/actions", put(actions::put))
        .route(
            "/machine-config",
            get(machine_config::get)
                .put(machine_config::put)
                .patch(machine_config::patch),
        )
        .route("/cpu-config", put(cpu_config::put))
        .route("/boot-source", put(boot_source::put))
        .route(
            "/drives",
            put(missing_id).patch(missing_id).delete(missing_id),
        )
        .route(
            "/drives/{id}",
            put(drives::put).patch(drives::patch).delete(drives::delete),
        )
        .route(
            "/pmem",
            put(missing_id).patch(missing_id).delete(missing_id),
        )
        .route(
            "/pmem/{id}",
            put(pmem::put).patch(pmem::patch).delete(pmem::delete),
        )
        .route(
            "/network-interfaces",
            put(missing_id).patch(missing_id).delete(missing_id),
        )
        .route(
            "/network-interfaces/{id}",
            put(network_interfaces::put)
                .patch(network_interfaces::patch)
                .delete(network_interfaces::delete),
        )
        .route("/vsock", put(vsock::put))
        .route(
            "/balloon",
            get(balloon::get).put(balloon::put).patch(balloon::patch),
        )
        .route(
            "/balloon/statistics",
            get(balloon::get_stats).patch(balloon::patch_stats),
        )
        .route(
            "/balloon/hinting/{op}",
            get(balloon::get_hinting).patch(balloon::patch_hinting),
        )
        .route("/balloon/{other}", get(balloon::get_unknown))
        .route("/logger", put(logger::put))
        .route("/metrics", put(metrics::put))
        .route("/serial", put(serial::put))
        .route("/entropy", put(entropy::put))
        .route("/mmds", get(mmds::get).put(mmds::put).patch(mmds::patch))
        .route("/mmds/config", put(mmds::put_config))
        .route("/mmds/{other}", put(mmds::put_unknown))
        .route(
            "/hotplug/memory",
            get(hotplug_memory::get)
                .put(hotplug_memory::put)
                .patch(hotplug_memory::patch),
        )
        .route("/snapshot", put(snapshot::put_missing))
        .route("/snapshot/create", put(snapshot::put_create))
        .route("/snapshot/load", put(snapshot::put_load))
        .fallback(invalid_route)
        .method_not_allowed_fallback(invalid_route)
        .layer(middleware::from_fn(precheck))
        .with_state(controller)
}

/// Generic request rules, request logging (Firecracker's lines), request metrics and the
/// `Server` header.
async fn precheck(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let request = if has_body {
        let (parts, body) = request.into_parts();
        // The codec already bounded the body by the payload limit.
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        tracing::info!(
            "The API server received a {}.",
            describe(&method, &path, Some(&bytes))
        );
        Request::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        tracing::info!(
            "The API server received a {}.",
            describe(&method, &path, None)
        );
        request
    };

    let rule = match method {
        Method::GET if has_body => Some("GET request cannot have a body."),
        Method::PUT if !has_body => Some("Empty PUT request."),
        Method::PATCH if !has_body && !path.starts_with("/balloon/hinting/") => {
            Some("Empty PATCH request.")
        }
        Method::DELETE if has_body => Some("Empty Delete request."),
        _ => None,
    };
    let mut response = if let Some(msg) = rule {
        ApiError::BadRequest(msg.to_owned()).into_response()
    } else {
        let counters = crate::metrics::request_counters(&method, &path);
        if let Some((count, _)) = counters {
            count.inc();
        }
        let (response, dispatched) = crate::metrics::track_dispatch(next.run(request)).await;
        if !dispatched
            && response.status().is_client_error()
            && let Some((_, Some(fails))) = counters
        {
            fails.inc();
        }
        response
    };
    response.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static(FIRECRACKER_SERVER_HEADER),
    );
    tracing::debug!(
        "Total previous API call duration: {} us.",
        squib_core::metrics::elapsed_us(started)
    );
    response
}

/// Firecracker's request description: `Put request on "/x" with body "{...}"` (no body for
/// `/mmds` or bodiless requests; the CPU template only at Debug level).
fn describe(method: &Method, path: &str, body: Option<&[u8]>) -> String {
    let method = match *method {
        Method::GET => "Get",
        Method::PUT => "Put",
        Method::PATCH => "Patch",
        Method::DELETE => "Delete",
        ref other => other.as_str(),
    };
    match body {
        Some(_) if path == "/cpu-config" && !tracing::enabled!(tracing::Level::DEBUG) => format!(
            "{method} request on {path:?}. To view the CPU template received by the API, configure log-level to DEBUG"
        ),
        Some(body) if path != "/mmds" => {
            let body = std::str::from_utf8(body).unwrap_or("inconvertible to UTF-8");
            format!("{method} request on {path:?} with body {body:?}")
        }
        _ => format!("{method} request on {path:?}"),
    }
}

/// Unknown path, or a method the path does not have.
async fn invalid_route(method: Method, uri: Uri) -> ApiError {
    ApiError::BadRequest(format!(
        "Invalid request method and/or path: {method} {}.",
        uri.path()
    ))
}

/// `/drives`, `/pmem`, `/network-interfaces` without an id.
async fn missing_id() -> ApiError {
    ApiError::BadRequest(squib_core::IdError::Empty.to_string())
}

/// A successful reply, possibly flagged deprecated.
#[derive(Debug)]
pub(crate) struct Reply {
    response: ApiResponse,
    deprecated: bool,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = match self.response {
            ApiResponse::NoContent => StatusCode::NO_CONTENT.into_response(),
            ApiResponse::Json(value) => (StatusCode::OK, Json(value)).into_response(),
            ApiResponse::Fault { status, message } => {
                ApiError::Vmm { status, message }.into_response()
            }
        };
        if self.deprecated {
            response
                .headers_mut()
                .insert("deprecation", HeaderValue::from_static("true"));
        }
        if response.status().is_success() {
            tracing::info!(
                "The request was executed successfully. Status code: {}.",
                response.status()
            );
        }
        response
    }
}

/// Dispatch `action` through the controller (counting deprecated inputs and, for pause,
/// resume and snapshots, the API-side latency as Firecracker does).
pub(crate) async fn submit(ctrl: &RuntimeApiController, action: ApiAction) -> Result<Reply> {
    crate::metrics::mark_dispatched();
    let deprecation = action.deprecation();
    if let Some(msg) = deprecation {
        squib_core::metrics::METRICS
            .deprecated_api
            .deprecated_http_api_calls
            .inc();
        tracing::warn!("{msg}");
    }
    let latency = crate::metrics::latency_metric(&action);
    let started = std::time::Instant::now();
    let response = ctrl.dispatch(action).await?;
    if let Some((metric, label)) = latency
        && response.is_success()
    {
        let us = squib_core::metrics::elapsed_us(started);
        metric.store(us);
        tracing::info!("'{label}' API request took {us} us.");
    }
    Ok(Reply {
        response,
        deprecated: deprecation.is_some(),
    })
}

/// Parse and validate `body` as `R` → `T`, wrap it into an action and dispatch it.
pub(crate) async fn submit_validated<R, T>(
    ctrl: &RuntimeApiController,
    body: &[u8],
    wrap: fn(T) -> ApiAction,
) -> Result<Reply>
where
    R: DeserializeOwned,
    T: TryFrom<R, Error = String>,
{
    let value = parse_validated::<R, T>(body)?;
    submit(ctrl, wrap(value)).await
}

/// Deserialize a JSON body with Firecracker's error text.
pub(crate) fn parse_json<R: DeserializeOwned>(body: &[u8]) -> Result<R> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })
}

/// Deserialize a `Raw*` body and validate it into its domain type.
pub(crate) fn parse_validated<R, T>(body: &[u8]) -> Result<T>
where
    R: DeserializeOwned,
    T: TryFrom<R, Error = String>,
{
    T::try_from(parse_json::<R>(body)?).map_err(ApiError::BadRequest)
}

/// The `{id}` segment of `/<resource>/{id}`, validated with Firecracker's id rules.
pub(crate) fn path_id(uri: &Uri) -> Result<&str> {
    let id = uri.path().rsplit('/').next().unwrap_or_default();
    squib_core::validate_resource_id(id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(id)
}

/// Firecracker's path/body id mismatch text (drives, pmem).
pub(crate) fn check_same_id(path: &str, body: &str) -> Result<()> {
    if path == body {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "The id from the path does not match the id from the body!".into(),
        ))
    }
}

/// Serialize a mirrored value for a 200 reply.
pub(crate) fn json_reply(value: serde_json::Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

/// One member of the mirrored `GET /vm/config` document.
pub(crate) fn vm_config_member(ctrl: &RuntimeApiController, key: &str) -> serde_json::Value {
    let snap = ctrl.snapshot();
    match serde_json::to_value(&snap.vm_config) {
        Ok(serde_json::Value::Object(mut map)) => map.remove(key).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}
