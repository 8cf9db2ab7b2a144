//! The HTTP plumbing every client of the SDK shares: one way to build the `reqwest` client
//! (timeouts, no redirects, a user agent), to check a base URL, and to turn an answer into a
//! typed body or an [`SdkError`].
//!
//! It holds no endpoint knowledge, save the one path both [`crate::AdminClient`] (lease reads
//! and revocation) and [`crate::TokenClient`] (renewal and the holder's revocation) build:
//! [`lease_path`].

use std::time::Duration;

use reqwest::{RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use crate::SdkError;

/// How long to wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request, body included, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `reqwest` client every SDK client uses: bounded connect and request time, no redirects.
pub(crate) fn http_client() -> Result<reqwest::Client, SdkError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        // An API answers, it does not redirect; following one could carry the request (and
        // its credentials) somewhere unexpected.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aims-sdk/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SdkError::transport(&e))
}

/// Checks that `raw` is an absolute `http(s)` URL that can serve as a base, and returns it
/// without trailing slashes so paths can be appended.
pub(crate) fn parse_base_url(raw: &str) -> Result<String, SdkError> {
    let raw = raw.trim();
    let url = Url::parse(raw).map_err(|e| {
        SdkError::InvalidUrl(format!(
            "{e}; give a full URL such as http://127.0.0.1:8700"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SdkError::InvalidUrl(format!(
            "the scheme must be http or https, not {}; give a full URL such as http://127.0.0.1:8700",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SdkError::InvalidUrl("the URL has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SdkError::InvalidUrl(
            "credentials in the URL are not supported; use the API token".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SdkError::InvalidUrl(
            "a base URL cannot have a query or fragment".into(),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Sends the request and decodes a successful JSON body as `T`.
pub(crate) async fn receive<T: DeserializeOwned>(builder: RequestBuilder) -> Result<T, SdkError> {
    let body = send(builder).await?;
    serde_json::from_slice(&body).map_err(|e| SdkError::Decode(e.to_string()))
}

/// Sends the request and ignores a successful body.
pub(crate) async fn receive_empty(builder: RequestBuilder) -> Result<(), SdkError> {
    send(builder).await.map(drop)
}

/// Sends the request; a non-success status becomes an error built from the body.
async fn send(builder: RequestBuilder) -> Result<Vec<u8>, SdkError> {
    send_with(builder, SdkError::from_response).await
}

/// Sends the request; a non-success status becomes the error `refused` builds from the body.
async fn send_with(
    builder: RequestBuilder,
    refused: fn(u16, &[u8]) -> SdkError,
) -> Result<Vec<u8>, SdkError> {
    let response = builder.send().await.map_err(|e| SdkError::transport(&e))?;
    read_with(response, refused).await
}

/// Decodes a successful JSON body of an answer already received as `T`.
pub(crate) async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, SdkError> {
    let body = read_with(response, SdkError::from_response).await?;
    serde_json::from_slice(&body).map_err(|e| SdkError::Decode(e.to_string()))
}

/// Reads an answer's body; a non-success status becomes the error `refused` builds from it.
async fn read_with(
    response: Response,
    refused: fn(u16, &[u8]) -> SdkError,
) -> Result<Vec<u8>, SdkError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| SdkError::transport(&e))?;
    if status.is_success() {
        Ok(body.to_vec())
    } else {
        Err(refused(status.as_u16(), &body))
    }
}

/// Like [`receive`], for the OAuth endpoints: an error body is read as an RFC 6749 error first.
pub(crate) async fn receive_oauth<T: DeserializeOwned>(
    builder: RequestBuilder,
) -> Result<T, SdkError> {
    let body = send_with(builder, SdkError::from_oauth_response).await?;
    serde_json::from_slice(&body).map_err(|e| SdkError::Decode(e.to_string()))
}

/// Like [`receive_empty`], for the OAuth endpoints.
pub(crate) async fn receive_oauth_empty(builder: RequestBuilder) -> Result<(), SdkError> {
    send_with(builder, SdkError::from_oauth_response)
        .await
        .map(drop)
}

/// `/v1/leases/{id}{suffix}`; refuses an id that is not a token id (base64url characters),
/// so nothing else lands in the path.
pub(crate) fn lease_path(id: &str, suffix: &str) -> Result<String, SdkError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SdkError::InvalidCredential { what: "lease id" });
    }
    Ok(format!("/v1/leases/{id}{suffix}"))
}
