//! The one place where failures become HTTP responses.
//!
//! Every refusal carries a stable, greppable code (`agent_exists`, `unauthenticated`, …) and a
//! message safe to show the caller; internal details go to the server log only. A rejected
//! response carries a [`Rejected`] extension so the audit middleware records it.

use aims_api::ErrorBody;
use aims_store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A refused or failed API call.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for the caller (no secrets, no internals).
    pub message: String,
    /// A `WWW-Authenticate` challenge to send with a 401.
    pub challenge: Option<String>,
    /// Seconds to send in `Retry-After` (with a 429).
    pub retry_after: Option<u64>,
}

/// Marks a response as a refusal, for the audit middleware.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The stable code of the refusal.
    pub code: &'static str,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }

    /// The same error with a `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: String) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The same error with `Retry-After: seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with a specific code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409 with a specific code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 401: no or unknown credential.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid operator credential is required (Authorization: Bearer <token>)",
        )
    }

    /// 403: the credential's role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 503: the audit log could not be written, so nothing was done or answered.
    pub fn audit_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log cannot be written; the request was refused",
        )
    }

    /// 500 for a failure whose details belong in the server log only.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// Maps a store failure that the handler did not classify itself.
    pub fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what } => {
                Self::not_found("not_found", format!("{what} not found"))
            }
            StoreError::Conflict { reason } => Self::conflict("conflict", reason),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; nothing was changed",
                )
            }
            StoreError::LowSpace { .. } => {
                tracing::error!(error = %err, "write refused: the store's volume is below its free-space reserve");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_reserve",
                    "the server is low on storage and refuses writes; nothing was changed",
                )
            }
            StoreError::OutcomeUnknown(detail) => {
                tracing::error!(%detail, "store commit outcome unknown");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_outcome_unknown",
                    "the store failed while committing; the change may have been made: \
                     read it back before retrying",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::internal()
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::from_store(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(value) = self
            .challenge
            .and_then(|c| axum::http::HeaderValue::from_str(&c).ok())
        {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
            .extensions_mut()
            .insert(Rejected { code: self.code });
        response
    }
}
