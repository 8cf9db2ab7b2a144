//! What a request to an OAuth endpoint carries: who sent it, its headers, and its form
//! parameters.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::invalid_request;
use crate::error::{ApiError, ErrorCode, Form};

/// Most form parameters in one request.
const MAX_PARAMS: usize = 32;

/// Form parameters, each at most once (RFC 6749 §3.2), bounded in number and size.
pub(super) struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form {
            return Err(invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        let mut params = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.len() >= MAX_PARAMS {
                return Err(invalid_request("too many parameters"));
            }
            if value.len() > aims_token::jws::MAX_TOKEN_LEN || name.len() > 64 {
                return Err(invalid_request("a parameter is too long"));
            }
            let name = name.into_owned();
            if params.contains_key(&name) {
                return Err(invalid_request(format!(
                    "parameter {name} appears more than once"
                )));
            }
            params.insert(name, value.into_owned());
        }
        Ok(Self(params))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A parameter that must be there.
    pub(super) fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| invalid_request(format!("{name} is required")))
    }
}

/// A POST to an OAuth endpoint: the peer it came from, its headers and its body, read as
/// they are (the endpoint parses the body itself, after authenticating the caller).
pub struct FormPost {
    /// The peer address.
    pub(super) peer: SocketAddr,
    /// The request headers.
    pub(super) headers: HeaderMap,
    /// The raw body.
    pub(super) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for FormPost {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, state)
            .await
            .map_err(|_| {
                ApiError::oauth(ErrorCode::ServerError, "internal error").into_response()
            })?;
        let headers = parts.headers.clone();
        // A body too large or unreadable is refused in the OAuth error form, like every other
        // refusal here.
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| {
                let refusal = crate::extract::bytes_rejection(e);
                let code = if refusal.status == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::BodyTooLarge
                } else {
                    ErrorCode::InvalidRequest
                };
                ApiError::new(refusal.status, code, refusal.message)
                    .in_form(Form::OAuth)
                    .into_response()
            })?;
        Ok(Self {
            peer,
            headers,
            body,
        })
    }
}
