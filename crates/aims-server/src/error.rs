//! The one place where failures become HTTP responses.
//!
//! Every refusal carries a stable code ([`ErrorCode`], serialized to the same greppable
//! strings forever: `agent_exists`, `unauthenticated`, …) and a message safe to show the
//! caller; internal details go to the server log only. An [`ApiError`] answers in one of two
//! forms: the API's `{"error", "message"}` or, at the OAuth endpoints, RFC 6749 §5.2's
//! `{"error", "error_description"}`, never cached. A rejected response carries a [`Rejected`]
//! extension so the audit middleware records it.

use aims_api::ErrorBody;
use aims_api::oauth::OAuthError;
use aims_store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Declares [`ErrorCode`] with the string each variant is serialized to.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// The stable code of a refusal, as the `error` member of the body.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The code as it is sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    /// The agent is decommissioned for good.
    AgentDecommissioned = "agent_decommissioned",
    /// An agent of that name is registered.
    AgentExists = "agent_exists",
    /// The agent may not hold credentials in its state.
    AgentNotActive = "agent_not_active",
    /// No agent of that name.
    AgentNotFound = "agent_not_found",
    /// The approval request was answered before.
    ApprovalAlreadyDecided = "approval_already_decided",
    /// The approval request, or its grant, expired.
    ApprovalExpired = "approval_expired",
    /// No such approval request (or not one the caller may see).
    ApprovalNotFound = "approval_not_found",
    /// The approval request was revoked with its task, token, agent or owner.
    ApprovalRevoked = "approval_revoked",
    /// The stored audit log does not match this replica's tree or a signed checkpoint.
    AuditTreeBroken = "audit_tree_broken",
    /// This replica has not yet integrated the audit entries the request needs.
    AuditTreeBehind = "audit_tree_behind",
    /// The audit log cannot be written, so nothing was done.
    AuditUnavailable = "audit_unavailable",
    /// No checkpoint was ever signed for that audit tree size.
    CheckpointNotFound = "checkpoint_not_found",
    /// The body exceeds the size limit.
    BodyTooLarge = "body_too_large",
    /// An audit entry longer than a C2SP tlog-tiles entry bundle can hold (65,535 bytes).
    BundleEntryTooLarge = "bundle_entry_too_large",
    /// The store refused a conflicting change.
    Conflict = "conflict",
    /// An update that changes nothing.
    EmptyUpdate = "empty_update",
    /// Four eyes: the agent's owner, or the human the task acts for, may not approve.
    FourEyes = "four_eyes",
    /// The caller's role does not allow this.
    Forbidden = "forbidden",
    /// A failure whose details are in the server log only.
    Internal = "internal",
    /// The agent named is not acceptable here.
    InvalidAgent = "invalid_agent",
    /// An audience URI that is not acceptable.
    InvalidAudience = "invalid_audience",
    /// A JSON body of the wrong shape.
    InvalidBody = "invalid_body",
    /// Client authentication failed (RFC 6749 §5.2).
    InvalidClient = "invalid_client",
    /// The DPoP proof is missing or refused (RFC 9449).
    InvalidDpopProof = "invalid_dpop_proof",
    /// A push endpoint URL that is not acceptable.
    InvalidEndpointUrl = "invalid_endpoint_url",
    /// SSF events that are not acceptable.
    InvalidEvents = "invalid_events",
    /// Attestation evidence that does not parse or verify.
    InvalidEvidence = "invalid_evidence",
    /// A token of a federated issuer that does not verify.
    InvalidFederatedToken = "invalid_federated_token",
    /// The grant or subject token is refused (RFC 6749 §5.2).
    InvalidGrant = "invalid_grant",
    /// A task intent that is not acceptable.
    InvalidIntent = "invalid_intent",
    /// A join token that is unknown or malformed.
    InvalidJoinToken = "invalid_join_token",
    /// A body that is not JSON.
    InvalidJson = "invalid_json",
    /// A name that is not acceptable.
    InvalidName = "invalid_name",
    /// An attestation nonce that is unknown, used or expired.
    InvalidNonce = "invalid_nonce",
    /// A policy set that does not compile or is malformed.
    InvalidPolicy = "invalid_policy",
    /// A proof of possession that does not verify.
    InvalidProof = "invalid_proof",
    /// An audit leaf index that is not inside the tree asked about.
    IndexBeyondTree = "index_beyond_tree",
    /// Query parameters that are not acceptable.
    InvalidQuery = "invalid_query",
    /// A path under the audit log's tiles that is not a C2SP tlog-tiles tile path.
    InvalidTilePath = "invalid_tile_path",
    /// A reason that is not acceptable.
    InvalidReason = "invalid_reason",
    /// A malformed request (RFC 6749 §5.2).
    InvalidRequest = "invalid_request",
    /// A scope that is malformed or not granted (RFC 6749 §5.2).
    InvalidScope = "invalid_scope",
    /// A state that is not acceptable.
    InvalidState = "invalid_state",
    /// An SSF stream status that is not `enabled`, `paused` or `disabled`.
    InvalidStatus = "invalid_status",
    /// An engine (kind, connection URL, system, sensitivity) that is not acceptable.
    InvalidEngine = "invalid_engine",
    /// A grants file outside the allowed form, or whose grants the engine cannot apply.
    InvalidGrants = "invalid_grants",
    /// A secret value, description, reader list or rotation period that is not acceptable.
    InvalidSecret = "invalid_secret",
    /// A task subject that is not acceptable.
    InvalidSubject = "invalid_subject",
    /// No credential, or a JWT-SVID that is refused.
    InvalidSvid = "invalid_svid",
    /// A target that is unknown or not allowed (RFC 8707).
    InvalidTarget = "invalid_target",
    /// A task id that is malformed.
    InvalidTaskId = "invalid_task_id",
    /// A task token that is refused (RFC 6750).
    InvalidToken = "invalid_token",
    /// A long-poll wait that is not 0 to 60 seconds.
    InvalidWait = "invalid_wait",
    /// A report window that is not 1 to 3650 days.
    InvalidWindow = "invalid_window",
    /// A lifecycle change the agent's state does not allow.
    InvalidTransition = "invalid_transition",
    /// A lifetime out of range.
    InvalidTtl = "invalid_ttl",
    /// A policy version that is not a positive integer.
    InvalidVersion = "invalid_version",
    /// An engine of that name exists.
    EngineExists = "engine_exists",
    /// No such engine.
    EngineNotFound = "engine_not_found",
    /// The engine refused the administrator (wrong password, too few privileges) or a
    /// statement AIMS sent.
    EngineRefused = "engine_refused",
    /// The engine cannot be reached; nothing was created on it.
    EngineUnavailable = "engine_unavailable",
    /// A federated issuer's keys cannot be fetched.
    IssuerUnavailable = "issuer_unavailable",
    /// The join token has expired.
    JoinTokenExpired = "join_token_expired",
    /// The join token was used before.
    JoinTokenUsed = "join_token_used",
    /// The active policies do not allow this lease.
    LeaseDenied = "lease_denied",
    /// No such lease.
    LeaseNotFound = "lease_not_found",
    /// The lease is revoked, expired or ended: it cannot be renewed.
    LeaseNotActive = "lease_not_active",
    /// A key other than the one bound.
    KeyMismatch = "key_mismatch",
    /// The change would leave no administrator.
    LastAdmin = "last_admin",
    /// The route does not take that method.
    MethodNotAllowed = "method_not_allowed",
    /// No such route.
    NoRoute = "no_route",
    /// The caller is not among the approvers the policy names.
    NotAnApprover = "not_an_approver",
    /// Something the request names does not exist.
    NotFound = "not_found",
    /// Another policy version was activated meanwhile.
    PolicyConflict = "policy_conflict",
    /// No such policy version.
    PolicyVersionNotFound = "policy_version_not_found",
    /// The attested posture does not satisfy the profile.
    PostureRejected = "posture_rejected",
    /// The caller's rate limit is spent.
    RateLimited = "rate_limited",
    /// The agent's owner must recertify it before it gets new credentials.
    RecertificationDue = "recertification_due",
    /// A resource server of that name or audience is registered.
    ResourceServerExists = "resource_server_exists",
    /// No such resource server.
    ResourceServerNotFound = "resource_server_not_found",
    /// The engine has a role template of that name.
    RoleExists = "role_exists",
    /// No such role template.
    RoleNotFound = "role_not_found",
    /// The record changed since the revision the caller read.
    RevisionConflict = "revision_conflict",
    /// The replica cannot tell whether a token is revoked.
    RevocationStateStale = "revocation_state_stale",
    /// The replica's view of the registry is too old to decide on.
    RegistryStateStale = "registry_state_stale",
    /// A secret of that name exists.
    SecretExists = "secret_exists",
    /// No such secret (or not one the caller may read).
    SecretNotFound = "secret_not_found",
    /// An internal failure at an OAuth endpoint (RFC 6749 §5.2).
    ServerError = "server_error",
    /// The store's volume is below its free-space reserve.
    StorageReserve = "storage_reserve",
    /// The store failed while committing; the change may have been made.
    StoreOutcomeUnknown = "store_outcome_unknown",
    /// The store cannot be reached; nothing was changed.
    StoreUnavailable = "store_unavailable",
    /// A verification event asked for on a disabled SSF stream, which delivers nothing.
    StreamDisabled = "stream_disabled",
    /// No such SSF stream.
    StreamNotFound = "stream_not_found",
    /// A subject other than the one expected.
    SubjectMismatch = "subject_mismatch",
    /// The route needs a task token (an SVID is not enough).
    TaskTokenRequired = "task_token_required",
    /// The task has ended.
    TaskNotActive = "task_not_active",
    /// No such task.
    TaskNotFound = "task_not_found",
    /// A tile or entry bundle reaching past the tree of the latest signed checkpoint.
    TileBeyondTree = "tile_beyond_tree",
    /// A consistency proof asked from a larger tree to a smaller one.
    TreeSizesOutOfOrder = "tree_sizes_out_of_order",
    /// The OAuth endpoint cannot serve now (RFC 6749 §5.2).
    TemporarilyUnavailable = "temporarily_unavailable",
    /// The receiver has as many SSF streams as it may.
    TooManyStreams = "too_many_streams",
    /// The SSF stream has as many verification events waiting as it may.
    TooManyVerifications = "too_many_verifications",
    /// A transmitter-supplied SSF stream property that is not the transmitter's value.
    TransmitterMismatch = "transmitter_mismatch",
    /// No valid operator credential.
    Unauthenticated = "unauthenticated",
    /// An agent this server does not know.
    UnknownAgent = "unknown_agent",
    /// A body member that the endpoint does not define.
    UnknownMember = "unknown_member",
    /// An SSF delivery method not supported.
    UnsupportedDeliveryMethod = "unsupported_delivery_method",
    /// SSF events not supported.
    UnsupportedEvents = "unsupported_events",
    /// A grant type not supported (RFC 6749 §5.2).
    UnsupportedGrantType = "unsupported_grant_type",
    /// A body that is not JSON by its content type.
    UnsupportedMediaType = "unsupported_media_type",
    /// An issuer that is not federated.
    UntrustedIssuer = "untrusted_issuer",
    /// The DPoP proof must carry the server's nonce (RFC 9449 §8).
    UseDpopNonce = "use_dpop_nonce",
    /// A user of that name exists.
    UserExists = "user_exists",
    /// No such user.
    UserNotFound = "user_not_found",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorCode {
    /// The code of a refusal by the one agent-authentication core.
    pub fn of_refusal(refusal: &aims_token::authn::Refusal) -> Self {
        // Every code the core answers is one of ours (a unit test checks); a refusal stays a
        // refusal whatever it is called.
        Self::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == refusal.code())
            .unwrap_or(Self::InvalidToken)
    }
}

/// How a refusal is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `{"error": code, "message": …}`.
    Api,
    /// RFC 6749 §5.2: `{"error": code, "error_description": …}`, with `Cache-Control:
    /// no-store`.
    OAuth,
}

/// A refused or failed API call.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: ErrorCode,
    /// Message for the caller (no secrets, no internals).
    pub message: String,
    /// A `WWW-Authenticate` challenge to send with a 401.
    pub challenge: Option<String>,
    /// Seconds to send in `Retry-After` (with a 429).
    pub retry_after: Option<u64>,
    /// How the body is written.
    pub form: Form,
}

/// Marks a response as a refusal, for the audit middleware.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The stable code of the refusal.
    pub code: ErrorCode,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
            form: Form::Api,
        }
    }

    /// A refusal at an OAuth endpoint (RFC 6749 §5.2): 400, except `invalid_client` (401,
    /// with a Basic challenge), `temporarily_unavailable` (503), `server_error` (500) and
    /// `rate_limited` (429).
    pub fn oauth(code: ErrorCode, description: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        let refusal = Self::new(status, code, description).in_form(Form::OAuth);
        if code == ErrorCode::InvalidClient {
            refusal.with_challenge("Basic realm=\"aims\"".to_owned())
        } else {
            refusal
        }
    }

    /// The same error written in `form`.
    pub fn in_form(mut self, form: Form) -> Self {
        self.form = form;
        self
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
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with a specific code.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409 with a specific code.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 401: no or unknown credential, with the Bearer challenge RFC 7235 §3.1 asks for.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "a valid operator credential is required (Authorization: Bearer <token>)",
        )
        .with_challenge("Bearer realm=\"aims\"".to_owned())
    }

    /// 403: the credential's role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 503: the audit log could not be written, so nothing was done or answered.
    pub fn audit_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AuditUnavailable,
            "the audit log cannot be written; the request was refused",
        )
    }

    /// 500 for a failure whose details belong in the server log only.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the server log",
        )
    }

    /// Maps a store failure that the handler did not classify itself.
    pub fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what } => {
                Self::not_found(ErrorCode::NotFound, format!("{what} not found"))
            }
            StoreError::Conflict { reason } => Self::conflict(ErrorCode::Conflict, reason),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StoreUnavailable,
                    "the store is unavailable; nothing was changed",
                )
            }
            StoreError::LowSpace { .. } => {
                tracing::error!(error = %err, "write refused: the store's volume is below its free-space reserve");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StorageReserve,
                    "the server is low on storage and refuses writes; nothing was changed",
                )
            }
            StoreError::OutcomeUnknown(detail) => {
                tracing::error!(%detail, "store commit outcome unknown");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StoreOutcomeUnknown,
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

    /// Maps a store failure at an OAuth endpoint, where nothing is ever half-issued: a token
    /// whose registration failed was never handed out, so "outcome unknown" is "unavailable"
    /// to the client.
    pub fn oauth_from_store(err: StoreError) -> Self {
        let (code, description) = match &err {
            StoreError::Conflict { reason } => (ErrorCode::InvalidGrant, (*reason).to_owned()),
            StoreError::NotFound { what } => (ErrorCode::InvalidGrant, format!("{what} not found")),
            StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_) => (
                ErrorCode::TemporarilyUnavailable,
                "the store is unavailable; nothing was issued".to_owned(),
            ),
            StoreError::LowSpace { .. } => (
                ErrorCode::TemporarilyUnavailable,
                "the server is low on storage; nothing was issued".to_owned(),
            ),
            _ => (
                ErrorCode::ServerError,
                "internal error; nothing was issued".to_owned(),
            ),
        };
        if code != ErrorCode::InvalidGrant {
            tracing::error!(error = %err, "store failure at an OAuth endpoint");
        }
        Self::oauth(code, description)
    }
}

impl From<crate::registry::LookupError> for ApiError {
    fn from(err: crate::registry::LookupError) -> Self {
        match err {
            crate::registry::LookupError::Stale(stale) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RegistryStateStale,
                stale.to_string(),
            ),
            crate::registry::LookupError::Store(err) => Self::from_store(err),
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
        let error = self.code.as_str().to_owned();
        let mut response = match self.form {
            Form::Api => (
                self.status,
                Json(ErrorBody {
                    error,
                    message: self.message,
                }),
            )
                .into_response(),
            Form::OAuth => no_store(
                (
                    self.status,
                    Json(OAuthError {
                        error,
                        error_description: Some(self.message),
                    }),
                )
                    .into_response(),
            ),
        };
        if let Some(value) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
            .extensions_mut()
            .insert(Rejected { code: self.code });
        response
    }
}

/// Marks a response as not to be cached (RFC 6749 §5.1): token responses and refusals, SSF
/// management and polls.
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
        }
    }

    #[test]
    fn every_authentication_refusal_has_its_own_code() {
        use aims_token::TokenError;
        use aims_token::authn::{Refusal, Scheme};
        let scheme = Scheme::Dpop;
        for refusal in [
            Refusal::NoCredential,
            Refusal::Stale,
            Refusal::Token {
                error: TokenError::Expired,
                scheme,
            },
            Refusal::Revoked { scheme },
            Refusal::Identity(TokenError::Expired),
            Refusal::BoundTokenAsBearer,
            Refusal::UnboundTokenAsDpop,
            Refusal::MissingProof,
            Refusal::Proof(TokenError::Expired),
            Refusal::KeyMismatch,
            Refusal::UseNonce,
            Refusal::Replay,
        ] {
            assert_eq!(
                ErrorCode::of_refusal(&refusal).as_str(),
                refusal.code(),
                "{refusal:?}"
            );
        }
    }
}
