//! API errors and their wire form.
//!
//! [`ApiError`] is the single place where a failure becomes an HTTP status and a
//! `fault_message`. Every error body is exactly `{"fault_message":"..."}` — valid JSON, unlike
//! Firecracker's own HTTP-parser errors.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use squib_config::action::AdmissionError;

/// The error body: `{"fault_message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultMessage {
    /// Human-readable reason.
    pub fault_message: String,
}

/// Every way an API request can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Parse, validation or state-machine error (Firecracker answers all of these with 400).
    #[error("{0}")]
    BadRequest(String),
    /// MMDS data store over its size limit (Firecracker's only 413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Refused by phase or capability admission.
    #[error("{0}")]
    Admission(#[from] AdmissionError),
    /// The per-class timeout fired; the action is still pending in the VMM (squib-only 504).
    #[error("VMM action timed out: {0}")]
    Timeout(&'static str),
    /// The VMM event loop dropped the channel or the reply.
    #[error("VMM event loop is gone")]
    EventLoopGone,
    /// The VMM answered with a fault.
    #[error("{message}")]
    Vmm {
        /// Status the VMM asked for.
        status: u16,
        /// Its `fault_message`.
        message: String,
    },
    /// Connection limit reached.
    #[error("Too many open connections")]
    TooManyConnections,
}

/// `Result` with [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The HTTP status of this error. The one status mapping in squib.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Admission(AdmissionError::ShutDown) | Self::EventLoopGone => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::BadRequest(_) | Self::Admission(_) => StatusCode::BAD_REQUEST,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Vmm { status, .. } => StatusCode::from_u16(*status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_REQUEST),
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The wire body.
    pub fn fault(&self) -> FaultMessage {
        FaultMessage {
            fault_message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        tracing::info!(
            "Received Error. Status code: {} {}. Message: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self
        );
        (status, Json(self.fault())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_map_every_error_to_one_status() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::PayloadTooLarge("x".into()), 413),
            (ApiError::Admission(AdmissionError::BeforeStart), 400),
            (ApiError::Admission(AdmissionError::ShutDown), 500),
            (ApiError::Timeout("PATCH /vm"), 504),
            (ApiError::EventLoopGone, 500),
            (
                ApiError::Vmm {
                    status: 413,
                    message: "x".into(),
                },
                413,
            ),
            (
                ApiError::Vmm {
                    status: 200,
                    message: "x".into(),
                },
                400,
            ),
            (
                ApiError::Vmm {
                    status: 999,
                    message: "x".into(),
                },
                400,
            ),
            (ApiError::TooManyConnections, 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
        }
        assert_eq!(
            ApiError::Timeout("PATCH /vm").fault().fault_message,
            "VMM action timed out: PATCH /vm"
        );
    }
}
