//! The one error type of the SDK, [`SdkError`], and how HTTP answers become it.
//!
//! Errors carry the server's stable code and message, or a description of what went wrong on
//! the way; they never carry the caller's credential.

use aims_api::ErrorBody;
use aims_api::oauth::OAuthError;

/// Longest excerpt of a non-JSON error body kept in [`SdkError::Http`].
const BODY_EXCERPT_MAX: usize = 200;

/// Why an SDK call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The server refused the call and said why in its JSON error body.
    #[error("{code}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The server's stable error code, e.g. `agent_exists`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// An OAuth endpoint (token, introspection, revocation) refused the request with an
    /// RFC 6749 §5.2 error.
    #[error("{error}{}", excerpt_suffix(.description.as_deref().unwrap_or_default()))]
    OAuth {
        /// HTTP status code (400, or 401 for `invalid_client`).
        status: u16,
        /// The RFC error code: `invalid_request`, `invalid_client`, `invalid_grant`,
        /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`,
        /// `invalid_target`, `invalid_dpop_proof`, ...
        error: String,
        /// The server's explanation, if it gave one.
        description: Option<String>,
    },
    /// The server (or something in front of it) answered with an error status and a body that
    /// is not an AIMS error body.
    #[error("unexpected HTTP {status} response{}", excerpt_suffix(.body))]
    Http {
        /// HTTP status code.
        status: u16,
        /// A short, sanitized excerpt of the body (may be empty).
        body: String,
    },
    /// The request could not be sent or the response could not be read (connection refused,
    /// timeout, TLS failure, ...).
    #[error("cannot reach the AIMS server: {0}")]
    Transport(String),
    /// The server answered with success, but the body is not what the API promises.
    #[error("cannot decode the server's response: {0}")]
    Decode(String),
    /// The server address is not a usable `http://` or `https://` base URL.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The API token holds characters that cannot be sent in an HTTP header.
    #[error("the API token contains characters that are not allowed in an HTTP header")]
    InvalidToken,
    /// The call needs an API token and the client has none.
    #[error("this call needs an API token, and none was configured")]
    MissingToken,
    /// A credential handed to the SDK (an SVID, an access token, a client name or secret)
    /// cannot be sent: it is empty or holds characters an HTTP header or form cannot carry.
    /// `what` names which one; the value itself is never shown.
    #[error("the {what} is empty or contains characters that cannot be sent")]
    InvalidCredential {
        /// Which credential, e.g. `access token`.
        what: &'static str,
    },
    /// A request the SDK was asked to send is not well-formed, so it was not sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Signing a proof with the agent's key failed (the random number generator failed).
    #[error("cannot sign the proof: {0}")]
    Signing(String),
}

impl SdkError {
    /// The HTTP status of a refused call, if the server answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::OAuth { status, .. } | Self::Http { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The server's stable error code (for OAuth errors, the RFC 6749 code), if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The error for a non-success answer of an OAuth endpoint: an RFC 6749 error body
    /// (`error`, optional `error_description`) if the body is one, else as
    /// [`SdkError::from_response`] reads it. An AIMS error body (which has a `message`) stays
    /// an [`SdkError::Api`], so nothing the server said is dropped.
    pub(crate) fn from_oauth_response(status: u16, body: &[u8]) -> Self {
        if serde_json::from_slice::<ErrorBody>(body).is_ok() {
            return Self::from_response(status, body);
        }
        match serde_json::from_slice::<OAuthError>(body) {
            Ok(err) => Self::OAuth {
                status,
                error: excerpt(err.error.as_bytes()),
                description: err.error_description.map(|d| excerpt(d.as_bytes())),
            },
            Err(_) => Self::from_response(status, body),
        }
    }

    /// The error for a response with a non-success `status` and `body`.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(err) => Self::Api {
                status,
                code: err.error,
                message: err.message,
            },
            Err(_) => Self::Http {
                status,
                body: excerpt(body),
            },
        }
    }

    /// A transport error, with the whole chain of causes (reqwest's own message alone says
    /// little more than "error sending request").
    pub(crate) fn transport(err: &reqwest::Error) -> Self {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            // hyper and reqwest sometimes repeat the same message one level down.
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        Self::Transport(text)
    }
}

fn excerpt_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A printable, bounded excerpt of an untrusted body: control characters become spaces, runs
/// of whitespace collapse, and long bodies are cut with an ellipsis.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cleaned = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    let words = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > BODY_EXCERPT_MAX {
        let cut: String = words.chars().take(BODY_EXCERPT_MAX).collect();
        format!("{cut}…")
    } else {
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_bodies_become_api_errors() {
        let err = SdkError::from_response(
            409,
            br#"{"error":"agent_exists","message":"agent coder already exists"}"#,
        );
        assert_eq!(
            err,
            SdkError::Api {
                status: 409,
                code: "agent_exists".into(),
                message: "agent coder already exists".into(),
            }
        );
        assert_eq!(err.to_string(), "agent_exists: agent coder already exists");
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.code(), Some("agent_exists"));
    }

    #[test]
    fn other_error_bodies_are_excerpted_and_sanitized() {
        let err = SdkError::from_response(502, b"<html>\n\x1b[31mBad   gateway</html>");
        assert_eq!(
            err.to_string(),
            "unexpected HTTP 502 response: <html> [31mBad gateway</html>"
        );
        let long = "x".repeat(1000);
        let SdkError::Http { body, .. } = SdkError::from_response(500, long.as_bytes()) else {
            unreachable!("a non-JSON body is an Http error");
        };
        assert_eq!(body.chars().count(), BODY_EXCERPT_MAX + 1);
        assert_eq!(
            SdkError::from_response(404, b"").to_string(),
            "unexpected HTTP 404 response"
        );
    }

    #[test]
    fn oauth_error_bodies_carry_the_rfc_code() {
        let err = SdkError::from_oauth_response(
            400,
            br#"{"error":"invalid_scope","error_description":"write:repo/* is not allowed"}"#,
        );
        assert_eq!(
            err,
            SdkError::OAuth {
                status: 400,
                error: "invalid_scope".into(),
                description: Some("write:repo/* is not allowed".into()),
            }
        );
        assert_eq!(err.code(), Some("invalid_scope"));
        assert_eq!(err.status(), Some(400));
        assert_eq!(
            err.to_string(),
            "invalid_scope: write:repo/* is not allowed"
        );
        let bare = SdkError::from_oauth_response(401, br#"{"error":"invalid_client"}"#);
        assert_eq!(bare.to_string(), "invalid_client");
        assert_eq!(bare.status(), Some(401));
        // An AIMS error body or a proxy's page still decodes as before.
        let api = SdkError::from_oauth_response(
            503,
            br#"{"error":"unavailable","message":"store down"}"#,
        );
        assert!(matches!(api, SdkError::Api { .. }), "{api:?}");
        assert!(matches!(
            SdkError::from_oauth_response(502, b"<html>"),
            SdkError::Http { .. }
        ));
    }

    #[test]
    fn client_side_errors_have_no_status() {
        assert_eq!(SdkError::MissingToken.status(), None);
        assert_eq!(SdkError::Transport("refused".into()).code(), None);
    }
}
