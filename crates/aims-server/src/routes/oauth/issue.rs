//! Minting a task token and registering it, with its new task, its DPoP proof and its audit
//! event, in one store transaction.

use aims_api::oauth::{TOKEN_TYPE_ACCESS_TOKEN, TokenResponse};
use aims_core::audit::AuditEvent;
use aims_core::delegation::Grant;
use aims_core::task::Task;
use aims_store::{AccessTokenIssue, IssuedCredential, IssuedKind};
use aims_token::access::{self, AccessClaims};
use aims_token::dpop::VerifiedProof;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// A token about to be issued.
pub(super) struct Minted<'a> {
    /// Its claims; the holder is the agent named by `client_id`.
    pub(super) claims: AccessClaims,
    /// The revision of the holder's record the token was decided on.
    pub(super) agent_revision: u64,
    /// The grant it carries.
    pub(super) grant: &'a Grant,
    /// The credential it derives from (an SVID or the parent token).
    pub(super) parent: String,
    /// The task it opens, if it is the task's first token.
    pub(super) new_task: Option<Task>,
    /// The DPoP proof it was requested with, burned for every replica.
    pub(super) proof: Option<VerifiedProof>,
}

/// Signs `minted`, registers it together with `event`, and answers it.
pub(super) async fn issue(
    state: &AppState,
    minted: Minted<'_>,
    event: AuditEvent,
) -> Result<TokenResponse, ApiError> {
    let Minted {
        claims,
        agent_revision,
        grant,
        parent,
        new_task,
        proof,
    } = minted;
    let server_error = |why: &'static str| ApiError::oauth(ErrorCode::ServerError, why);
    let keys = state.keys();
    let token = access::mint(&keys.current, &state.rng, &claims)
        .map_err(|_| server_error("the token could not be signed"))?;
    let holder = aims_core::id::SpiffeId::parse(&claims.client_id)
        .map(|id| id.agent().clone())
        .map_err(|_| server_error("bad client id"))?;
    let expires_at =
        OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| server_error("bad expiry"))?;
    let issued_at = OffsetDateTime::from_unix_timestamp(claims.iat)
        .map_err(|_| server_error("bad issue time"))?;
    let token_type = if claims.cnf.is_some() {
        "DPoP"
    } else {
        "Bearer"
    };
    let mut event = event.token(claims.jti.clone()).resource(claims.aud.clone());
    if let Value::Object(details) = &mut event.details {
        details.insert("scope".to_owned(), Value::String(claims.scope.clone()));
        details.insert("expires_at".to_owned(), json!(claims.exp));
        details.insert("token_type".to_owned(), json!(token_type));
    }
    let issue = AccessTokenIssue {
        credential: IssuedCredential {
            id: claims.jti.to_string(),
            kind: IssuedKind::AccessToken,
            agent: holder,
            parent: Some(parent),
            key_thumbprint: claims.cnf.as_ref().map(|c| c.jkt.clone()),
            issued_at,
            expires_at,
            revoked_at: None,
            task_id: Some(claims.task_id.to_string()),
            audience: Some(claims.aud.clone()),
        },
        agent_revision,
        new_task,
        dpop_proof: proof.as_ref().and_then(|p| {
            OffsetDateTime::from_unix_timestamp(p.forget_after())
                .ok()
                .map(|t| (p.replay_key(), t))
        }),
    };
    if let Err(failed) = state.store.issue_access_token(&issue, &event).await {
        // Signed but not registered, so never handed out: should it leak anyway (a core dump,
        // a log), this replica refuses it like a revoked one.
        state
            .revocations
            .refuse_unissued(claims.jti.as_str(), claims.exp);
        return Err(ApiError::oauth_from_store(failed));
    }
    let expires_in = u64::try_from(claims.exp.saturating_sub(claims.iat)).unwrap_or(0);
    Ok(TokenResponse {
        access_token: token,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.to_owned(),
        token_type: token_type.to_owned(),
        expires_in,
        scope: grant.scopes.to_string(),
        task_id: claims.task_id,
    })
}
