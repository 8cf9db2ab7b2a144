//! `/v1/attest`: an agent proves who it is and what it is, and gets a JWT-SVID.
//!
//! Protocol: the agent fetches a single-use nonce (`POST /v1/attest/nonce`), then sends a proof
//! JWS (`typ: aims-attest+jwt`) signed by its own key, carrying that key in its `jwk` header and
//! the nonce, audience (this issuer), `iat`/`exp` and its runtime evidence in its claims, plus
//! one proof of identity: a join token (first boot), its current SVID (renewal, bound to the
//! same key), or a token of a trusted third-party issuer (federated; see `federation`). Evidence outside the agent's posture profile, or a change its profile forbids
//! since the last accepted snapshot, is drift: the agent is quarantined, everything it holds is
//! revoked, a signed webhook fires, and the answer names no detail (the audit event does).

use aims_api::{AttestRequest, AttestResponse, NonceResponse};
use aims_core::agent::{Agent, LifecycleState};
use aims_core::audit::{Actor, Outcome, action};
use aims_core::credential::{CredentialHash, MAX_CREDENTIAL_LEN};
use aims_core::id::{AgentName, TokenId};
use aims_core::posture::Evidence;
use aims_store::{
    AttestationRecord, IssuedCredential, IssuedKind, JoinTokenUse, PostureSnapshot, StoreError,
};
use aims_token::jws::{self, ClaimChecks};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::error::{ApiError, ErrorCode};
use crate::extract::Body;
use crate::federation::FederationError;
use crate::presented;
use crate::state::AppState;
use crate::webhook;
use aims_token::LEEWAY_S;
use aims_token::svid::{self, SvidClaims};

/// `typ` of attestation proofs.
pub const PROOF_TYP: &str = jws::TYP_ATTESTATION;
/// How long a nonce stays usable.
const NONCE_TTL: Duration = Duration::seconds(120);
/// Longest lifetime of a proof (`exp - iat`).
const PROOF_MAX_LIFETIME_S: i64 = 300;
/// Longest requested audience.
const MAX_AUDIENCE: usize = 512;

fn refused(status: StatusCode, code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

fn unauthorized(code: ErrorCode, message: &str) -> ApiError {
    refused(StatusCode::UNAUTHORIZED, code, message)
}

/// `POST /v1/attest/nonce`: a stateless nonce (nothing is stored; see `aims_token::nonce`),
/// valid for two minutes on every replica.
pub async fn nonce(State(state): State<AppState>) -> Result<Json<NonceResponse>, ApiError> {
    let expires_at = OffsetDateTime::now_utc() + NONCE_TTL;
    let nonce = state
        .attestation_nonces
        .mint(&state.rng, expires_at.unix_timestamp())
        .map_err(|_| ApiError::internal())?;
    Ok(Json(NonceResponse { nonce, expires_at }))
}

/// How the agent proved its identity.
enum IdentityProof {
    JoinToken,
    Renewal { previous_jti: TokenId },
    Federated,
}

impl IdentityProof {
    fn name(&self) -> &'static str {
        match self {
            Self::JoinToken => "join_token",
            Self::Renewal { .. } => "renewal",
            Self::Federated => "federated",
        }
    }
}

/// What the proof of possession established (steps 1–3): the key it is signed by, the nonce
/// it carries (not yet burned) and the runtime evidence.
struct Proved {
    key_thumbprint: String,
    nonce: String,
    nonce_expires_at: OffsetDateTime,
    evidence: Evidence,
}

/// `POST /v1/attest`: each protocol step in order; a refusal at any step changes nothing but
/// what that step says (a burned join token, a quarantine).
pub async fn attest(
    State(state): State<AppState>,
    Body(req): Body<AttestRequest>,
) -> Result<Json<AttestResponse>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let proved = proof_of_possession(&state, &req.proof, now)?;
    let (agent_name, identity) = identify(&state, &req, &proved.key_thumbprint, now).await?;
    burn_nonce(&state, &proved, now).await?;
    let agent = attesting_agent(&state, &agent_name, now).await?;
    check_posture(&state, &agent, &proved.evidence, &identity).await?;
    let audience = requested_audience(&state, req.audience)?;
    issue_svid(&state, &agent, proved, &identity, audience, now)
        .await
        .map(Json)
}

/// Steps 1–3: the proof is signed by the key it carries, for us, fresh; it carries a nonce
/// issued here and still valid (checked without the store: it is burned only once the caller
/// has proved an identity, so nobody without one can make the server store anything); and
/// valid evidence.
fn proof_of_possession(
    state: &AppState,
    proof: &str,
    now: OffsetDateTime,
) -> Result<Proved, ApiError> {
    let refused_proof = |e: aims_token::TokenError| {
        unauthorized(
            ErrorCode::InvalidProof,
            &format!("attestation proof refused: {e}"),
        )
    };
    let (proof, key) = jws::verify_self_signed(proof, PROOF_TYP, aims_token::agent_key::ALGS)
        .map_err(refused_proof)?;
    jws::check_claims(
        &proof.claims,
        &ClaimChecks {
            issuer: None,
            audience: &state.issuer,
            now: now.unix_timestamp(),
            leeway_s: LEEWAY_S,
            max_lifetime_s: Some(PROOF_MAX_LIFETIME_S),
        },
    )
    .map_err(refused_proof)?;
    let nonce = proof
        .claims
        .get("nonce")
        .and_then(|n| n.as_str())
        .ok_or_else(|| unauthorized(ErrorCode::InvalidNonce, "the proof carries no nonce"))?;
    let nonce_expires_at = state
        .attestation_nonces
        .check(nonce, now.unix_timestamp())
        .ok()
        .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        .ok_or_else(|| {
            unauthorized(
                ErrorCode::InvalidNonce,
                "the nonce is unknown or expired; fetch a new one",
            )
        })?;
    let invalid_evidence = |why: String| ApiError::bad_request(ErrorCode::InvalidEvidence, why);
    let evidence: Evidence = proof
        .claims
        .get("evidence")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| invalid_evidence(format!("evidence: {e}")))?
        .ok_or_else(|| invalid_evidence("the proof carries no evidence".to_owned()))?;
    evidence
        .validate()
        .map_err(|e| invalid_evidence(format!("evidence: {e}")))?;
    Ok(Proved {
        key_thumbprint: key.thumbprint(),
        nonce: nonce.to_owned(),
        nonce_expires_at,
        evidence,
    })
}

/// Step 4, who: exactly one identity proof, bound to this key.
async fn identify(
    state: &AppState,
    req: &AttestRequest,
    key_thumbprint: &str,
    now: OffsetDateTime,
) -> Result<(AgentName, IdentityProof), ApiError> {
    match (&req.join_token, &req.svid, &req.federated_token) {
        (Some(token), None, None) => by_join_token(state, token, key_thumbprint, now).await,
        (None, Some(current), None) => by_renewal(state, current, key_thumbprint, now).await,
        (None, None, Some(token)) => by_federation(state, token, now).await,
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "send exactly one of join_token, svid or federated_token",
        )),
    }
}

/// A join token, consumed (bound to this key) on first use.
async fn by_join_token(
    state: &AppState,
    token: &str,
    key_thumbprint: &str,
    now: OffsetDateTime,
) -> Result<(AgentName, IdentityProof), ApiError> {
    let invalid = || unauthorized(ErrorCode::InvalidJoinToken, "the join token is not valid");
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err(invalid());
    }
    let used = state
        .store
        .consume_join_token(&CredentialHash::of(token), key_thumbprint, now)
        .await?;
    match used {
        JoinTokenUse::Consumed(agent) => Ok((agent, IdentityProof::JoinToken)),
        JoinTokenUse::AlreadyUsed(_) => Err(unauthorized(
            ErrorCode::JoinTokenUsed,
            "the join token was already used",
        )),
        JoinTokenUse::Expired(_) => Err(unauthorized(
            ErrorCode::JoinTokenExpired,
            "the join token has expired",
        )),
        JoinTokenUse::Unknown => Err(invalid()),
    }
}

/// The agent's current SVID, of this trust domain, bound to this key, still registered.
async fn by_renewal(
    state: &AppState,
    current: &str,
    key_thumbprint: &str,
    now: OffsetDateTime,
) -> Result<(AgentName, IdentityProof), ApiError> {
    let svid = presented::verify_svid(state, current, now).map_err(|e| {
        unauthorized(
            ErrorCode::InvalidSvid,
            &format!("the SVID was refused: {e}"),
        )
    })?;
    if svid.sub.trust_domain() != &state.trust_domain {
        return Err(unauthorized(
            ErrorCode::InvalidSvid,
            "the SVID is from another trust domain",
        ));
    }
    if svid.cnf.jkt != key_thumbprint {
        return Err(unauthorized(
            ErrorCode::KeyMismatch,
            "the proof is not signed by the key the SVID is bound to",
        ));
    }
    let record = state.store.issued_credential(svid.jti.as_str()).await?;
    if record.is_none_or(|r| r.revoked_at.is_some()) {
        return Err(unauthorized(
            ErrorCode::InvalidSvid,
            "the SVID is revoked or unknown",
        ));
    }
    let previous_jti = svid.jti;
    Ok((
        svid.sub.agent().clone(),
        IdentityProof::Renewal { previous_jti },
    ))
}

/// A token of a trusted third-party issuer, mapped to an agent by the federation rules.
async fn by_federation(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<(AgentName, IdentityProof), ApiError> {
    let agent = state
        .federation
        .verify(&state.http, token, now)
        .await
        .map_err(|e| match e {
            FederationError::UntrustedIssuer => unauthorized(
                ErrorCode::UntrustedIssuer,
                "the token's issuer is not trusted",
            ),
            FederationError::KeysUnavailable(detail) => {
                tracing::warn!(%detail, "trusted issuer keys unavailable");
                refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::IssuerUnavailable,
                    "the issuer's keys cannot be fetched now",
                )
            }
            other => unauthorized(ErrorCode::InvalidFederatedToken, &other.to_string()),
        })?;
    Ok((agent, IdentityProof::Federated))
}

/// Step 5: the nonce, used once.
async fn burn_nonce(
    state: &AppState,
    proved: &Proved,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let fresh = state
        .store
        .consume_nonce(
            &CredentialHash::of(&proved.nonce),
            proved.nonce_expires_at,
            now,
        )
        .await?;
    if fresh {
        Ok(())
    } else {
        Err(unauthorized(
            ErrorCode::InvalidNonce,
            "the nonce was used before; fetch a new one",
        ))
    }
}

/// Step 6: the agent may attest at all (registered, active, recertified).
async fn attesting_agent(
    state: &AppState,
    name: &AgentName,
    now: OffsetDateTime,
) -> Result<Agent, ApiError> {
    let agent = state
        .store
        .agent(name)
        .await?
        .ok_or_else(|| unauthorized(ErrorCode::UnknownAgent, "no such agent"))?;
    if agent.state != LifecycleState::Active {
        return Err(refused(
            StatusCode::FORBIDDEN,
            ErrorCode::AgentNotActive,
            &format!("the agent is {}", agent.state),
        ));
    }
    if agent.recertify_by <= now {
        return Err(refused(
            StatusCode::FORBIDDEN,
            ErrorCode::RecertificationDue,
            "the agent's owner must recertify it before it may attest",
        ));
    }
    Ok(agent)
}

/// Step 7, posture: against the profile and the last accepted snapshot; drift quarantines.
async fn check_posture(
    state: &AppState,
    agent: &Agent,
    evidence: &Evidence,
    identity: &IdentityProof,
) -> Result<(), ApiError> {
    let last = state.store.posture_snapshot(&agent.name).await?;
    let mismatches = agent
        .posture_profile
        .mismatches(evidence, last.as_ref().map(|s| &s.evidence));
    if mismatches.is_empty() {
        return Ok(());
    }
    quarantine(state, agent, evidence, &mismatches, identity.name()).await?;
    Err(refused(
        StatusCode::FORBIDDEN,
        ErrorCode::PostureRejected,
        "the runtime evidence does not match the agent's posture profile; the agent is quarantined",
    ))
}

/// The audience the SVID is for: the one asked for, or this issuer.
fn requested_audience(state: &AppState, audience: Option<String>) -> Result<String, ApiError> {
    match audience {
        Some(a) if a.is_empty() || a.len() > MAX_AUDIENCE || a.chars().any(char::is_control) => {
            Err(ApiError::bad_request(
                ErrorCode::InvalidAudience,
                "audience must be 1 to 512 printable characters",
            ))
        }
        Some(a) => Ok(a),
        None => Ok(state.issuer.clone()),
    }
}

/// Step 8: the identity, registered with the accepted posture snapshot and its audit event
/// in one transaction.
async fn issue_svid(
    state: &AppState,
    agent: &Agent,
    proved: Proved,
    identity: &IdentityProof,
    audience: String,
    now: OffsetDateTime,
) -> Result<AttestResponse, ApiError> {
    let Proved {
        key_thumbprint,
        evidence,
        ..
    } = proved;
    let ttl = state
        .config
        .svid_ttl
        .min(std::time::Duration::from_secs(u64::from(
            agent.limits.max_token_ttl_s,
        )));
    let expires_at = now + Duration::try_from(ttl).map_err(|_| ApiError::internal())?;
    let spiffe_id = agent.spiffe_id(&state.trust_domain);
    let posture_digest = evidence.digest();
    let signing_failed = |e: aims_token::TokenError| {
        tracing::error!(error = %e, "SVID signing failed");
        ApiError::internal()
    };
    let claims = SvidClaims {
        iss: state.issuer.clone(),
        sub: spiffe_id.clone(),
        aud: audience.clone(),
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
        jti: aims_token::new_id(&state.rng).map_err(signing_failed)?,
        cnf: aims_token::access::Confirmation {
            jkt: key_thumbprint.clone(),
        },
        aims_posture: posture_digest.clone(),
    };
    let svid = svid::mint(&state.keys().current, &state.rng, &claims).map_err(signing_failed)?;
    let actor = Actor::Agent {
        spiffe_id: spiffe_id.to_string(),
    };
    let mut event = state
        .event(actor, action::IDENTITY_ISSUE, Outcome::Success)
        .agent(spiffe_id.to_string())
        .owner(agent.owner.to_string())
        .token(claims.jti.clone())
        .details(json!({
            "proof": identity.name(),
            "audience": audience,
            "posture_digest": posture_digest,
            "key_thumbprint": key_thumbprint,
            "expires_at": expires_at.unix_timestamp(),
        }));
    if let IdentityProof::Renewal { previous_jti } = identity {
        event = event.parent_token(previous_jti.clone());
    }
    let record = AttestationRecord {
        snapshot: PostureSnapshot {
            agent: agent.name.clone(),
            evidence,
            digest: posture_digest.clone(),
            key_thumbprint: key_thumbprint.clone(),
            accepted_at: now,
        },
        credential: IssuedCredential {
            id: String::from(claims.jti),
            kind: IssuedKind::Svid,
            agent: agent.name.clone(),
            parent: None,
            key_thumbprint: Some(key_thumbprint),
            issued_at: now,
            expires_at,
            revoked_at: None,
            task_id: None,
            audience: Some(audience),
        },
    };
    match state.store.record_attestation(&record, &event).await {
        Ok(()) => {
            state.apply_own_registry_changes().await;
            Ok(AttestResponse {
                svid,
                spiffe_id: spiffe_id.to_string(),
                expires_at,
                posture_digest,
            })
        }
        Err(StoreError::Conflict { .. }) => Err(refused(
            StatusCode::FORBIDDEN,
            ErrorCode::AgentNotActive,
            "the agent left the active state during attestation",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Moves `agent` to quarantined (revoking everything it holds, in the same transaction as the
/// audit event that names the mismatching fields), then notifies the webhook.
async fn quarantine(
    state: &AppState,
    agent: &Agent,
    evidence: &Evidence,
    mismatches: &[aims_core::posture::Mismatch],
    proof: &str,
) -> Result<(), ApiError> {
    let now = OffsetDateTime::now_utc();
    let mut next = agent.clone();
    next.state = agent
        .state
        .apply(aims_core::agent::LifecycleAction::Quarantine)
        .map_err(|_| ApiError::internal())?;
    next.updated_at = now;
    next.revision = agent.revision.saturating_add(1);
    let spiffe_id = agent.spiffe_id(&state.trust_domain).to_string();
    let event = state
        .event(Actor::System, action::POSTURE_DRIFT, Outcome::Denied)
        .agent(spiffe_id.clone())
        .owner(agent.owner.to_string())
        .code(ErrorCode::PostureRejected.as_str())
        .details(json!({
        "from": agent.state,
        "to": next.state,
        "mismatches": mismatches,
        "evidence_digest": evidence.digest(),
        "proof": proof,
        "remediation": "quarantined; every live credential of the agent revoked",
        }));
    match state
        .store
        .update_agent(&next, agent.revision, &event)
        .await
    {
        // The agent's credentials were revoked with it.
        Ok(()) => {
            state.apply_own_revocations().await;
            state.apply_own_registry_changes().await;
        }
        // Changed concurrently (e.g. already quarantined by a parallel attestation): the
        // attestation is refused either way.
        Err(StoreError::Conflict { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    webhook::notify(
        state,
        webhook::Hook::Drift,
        json!({
            "type": "agent.quarantined",
            "agent": spiffe_id,
            "owner": agent.owner,
            "cause": "posture_drift",
            "fields": mismatches.iter().map(|m| m.field).collect::<Vec<_>>(),
            "time": now.unix_timestamp(),
        }),
    );
    Ok(())
}
