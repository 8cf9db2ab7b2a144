//! Request extractors that turn every malformed input into an [`ApiError`] with a stable code:
//! JSON bodies (content type, syntax, unknown fields, size), raw bodies (size), query strings
//! and path segments. Handlers use these, never axum's own `Json`, `Query`, `Path` or `Form`
//! extractors, whose rejections are `text/plain` (the crate's `clippy.toml` forbids those
//! types here), so every refusal is the error map's JSON.

use aims_core::id::{AgentName, UserName};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// A JSON body, refused with a clear code when it is not acceptable.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request(ErrorCode::InvalidJson, "the body is not valid JSON")
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(ErrorCode::InvalidBody, e.body_text())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            "the body is larger than the server accepts",
        ),
        _ => ApiError::bad_request(ErrorCode::InvalidBody, "the body could not be read"),
    }
}

/// A body as bytes, refused with `body_too_large` (413) past the size limit and
/// `invalid_body` when it cannot be read.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(bytes_rejection)
    }
}

/// The refusal of a body that could not be read as bytes.
pub fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            "the body is larger than the server accepts",
        )
    } else {
        ApiError::bad_request(ErrorCode::InvalidBody, "the body could not be read")
    }
}

/// A query string, refused with `invalid_query` when it does not parse.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        #[allow(
            clippy::disallowed_types,
            reason = "the one wrapper of axum's query extractor, mapping its rejection"
        )]
        let parsed = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| v);
        parsed.map(Self).map_err(|e: QueryRejection| {
            ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text())
        })
    }
}

/// Path parameters, refused with `invalid_request` when they do not decode (a segment that is
/// not UTF-8 once percent-decoded, a number that is not one).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        #[allow(
            clippy::disallowed_types,
            reason = "the one wrapper of axum's path extractor, mapping its rejection"
        )]
        let parsed = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| v);
        parsed.map(Self).map_err(path_rejection)
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("the path is not valid: {}", e.body_text()),
        ),
        // No parameters where a route declares some: a routing mistake, not the caller's.
        other => {
            tracing::error!(rejection = %other.body_text(), "path parameters missing");
            ApiError::internal()
        }
    }
}

/// The `{name}` path segment, parsed as an agent name.
pub struct AgentPath(pub AgentName);

impl<S: Send + Sync> FromRequestParts<S> for AgentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_segment(parts, state).await?;
        AgentName::new(raw)
            .map(Self)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidName, e.to_string()))
    }
}

/// The `{name}` path segment, parsed as a user name.
pub struct UserPath(pub UserName);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_segment(parts, state).await?;
        UserName::new(raw)
            .map(Self)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidName, e.to_string()))
    }
}

async fn path_segment<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(v)| v)
        .map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidName, "the name in the path is not valid")
        })
}
