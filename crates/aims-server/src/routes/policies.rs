//! `/v1/policies` (operators push and read versioned policy sets) and `/v1/decisions` (an
//! agent asks whether it may do one action, decided by the active policy set).
//!
//! A push compiles the whole set in strict mode against its schema before anything is stored;
//! a set that does not compile is refused with Cedar's diagnostics and the active version
//! stays. Every decision is audited before the answer leaves.

use std::collections::BTreeMap;

use aims_api::{
    DecideRequest, DecisionView, ExplainRequest, PolicySetView, PolicyVersion, PolicyVersionList,
    PolicyVersionSummary, PushPolicyRequest,
};
use aims_core::audit::{Outcome, action};
use aims_core::id::DecisionId;
use aims_store::{PolicySetVersion, StoreError};
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Allowed, AuthenticatedAgent, Caller, ToAdminister, ToRead};
use crate::decisions::{self, Asked, Purpose, Question};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Body, Path};
use crate::policy::{self, LoadedPolicy};
use crate::registry::KnownAgent;
use crate::state::AppState;

/// The decision id an explanation carries (it decides nothing).
const EXPLAIN_DECISION_ID: &str = "explain";
/// Most files in one policy set.
const MAX_FILES: usize = 256;

fn view(loaded: &LoadedPolicy, files: Vec<String>) -> PolicySetView {
    PolicySetView {
        version: loaded.version,
        policies: loaded.engine.len(),
        policy_ids: loaded.engine.policy_ids().map(str::to_owned).collect(),
        files,
    }
}

fn check_file_names(files: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPolicy,
            "a policy set has 1 to 256 files",
        ));
    }
    let ok = |name: &str| {
        name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            && [".cedar", ".cedarschema", ".test.json"]
                .iter()
                .any(|ext| name.ends_with(ext))
    };
    match files.keys().find(|name| !ok(name)) {
        Some(name) => Err(ApiError::bad_request(
            ErrorCode::InvalidPolicy,
            format!(
                "{name:?}: file names are [A-Za-z0-9._-], ending in .cedar, .cedarschema or .test.json"
            ),
        )),
        None => Ok(()),
    }
}

/// Compiles `files`, stores them as the next version and puts it in force; `rollback_of` names
/// the version whose files these are, for a rollback.
async fn activate(
    state: &AppState,
    caller: &Caller,
    files: BTreeMap<String, String>,
    rollback_of: Option<u64>,
) -> Result<PolicySetView, ApiError> {
    check_file_names(&files)?;
    let engine = policy::compile(&files)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPolicy, e.to_string()))?;
    let previous = state.store.active_policy_version().await?;
    let set = PolicySetVersion {
        version: previous.saturating_add(1),
        files,
        created_by: caller.user.name.to_string(),
        created_at: OffsetDateTime::now_utc(),
    };
    let event = state
        .event(caller.actor(), action::POLICY_ACTIVATE, Outcome::Success)
        .request(caller.request_id.clone())
        .details(json!({
        "version": set.version,
        "previous_version": previous,
        "rollback_of": rollback_of,
        "files": set.files.keys().collect::<Vec<_>>(),
        "policy_ids": engine.policy_ids().collect::<Vec<_>>(),
        }));
    match state.store.activate_policy_set(&set, &event).await {
        Ok(()) => {}
        Err(StoreError::Conflict { reason }) => {
            return Err(ApiError::conflict(ErrorCode::PolicyConflict, reason));
        }
        Err(e) => return Err(e.into()),
    }
    let loaded = LoadedPolicy {
        version: set.version,
        engine,
    };
    let answer = view(&loaded, set.files.into_keys().collect());
    state.policy.install(loaded);
    Ok(answer)
}

/// `POST /v1/policies`.
pub async fn push(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<PushPolicyRequest>,
) -> Result<(StatusCode, Json<PolicySetView>), ApiError> {
    let answer = activate(&state, &caller, req.files, None).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The `{version}` path segment.
/// A policy version named in a path: 1 to `i64::MAX` (versions are counted from 1 and
/// stored as signed 64-bit integers), anything else refused before the store is asked.
fn version_path(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidVersion,
                "a policy version is an integer from 1 to 9223372036854775807",
            )
        })
}

async fn stored(state: &AppState, version: u64) -> Result<PolicySetVersion, ApiError> {
    state.store.policy_set(version).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::PolicyVersionNotFound,
            format!("no policy version {version}"),
        )
    })
}

/// `GET /v1/policies`: the newest stored versions.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
) -> Result<Json<PolicyVersionList>, ApiError> {
    let versions = state
        .store
        .policy_versions(100)
        .await?
        .into_iter()
        .map(|v| PolicyVersionSummary {
            version: v.version,
            created_by: v.created_by,
            created_at: v.created_at,
            files: v.files.into_keys().collect(),
        })
        .collect();
    Ok(Json(PolicyVersionList {
        active_version: state.policy.current().version,
        versions,
    }))
}

/// `GET /v1/policies/{version}`: one version with its files.
pub async fn show(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Path(raw): Path<String>,
) -> Result<Json<PolicyVersion>, ApiError> {
    let set = stored(&state, version_path(&raw)?).await?;
    Ok(Json(PolicyVersion {
        version: set.version,
        created_by: set.created_by,
        created_at: set.created_at,
        files: set.files,
    }))
}

/// `POST /v1/policies/{version}/rollback`: activates the files of an older version again, as a
/// new version (history stays linear and audited).
pub async fn rollback(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Path(raw): Path<String>,
) -> Result<(StatusCode, Json<PolicySetView>), ApiError> {
    let version = version_path(&raw)?;
    let set = stored(&state, version).await?;
    let answer = activate(&state, &caller, set.files, Some(version)).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /v1/policies/active`.
pub async fn active(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
) -> Result<Json<PolicySetView>, ApiError> {
    let loaded = state.policy.current();
    let files = match state.store.policy_set(loaded.version).await? {
        Some(set) => set.files.into_keys().collect(),
        None => Vec::new(),
    };
    Ok(Json(view(&loaded, files)))
}

/// `POST /v1/policies/explain`: for operators, how the active policies answer a request by a
/// registered agent — which policies the index selected or skipped, which matched, which
/// conditions were false, which errored. Nothing is decided or granted.
pub async fn explain(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToRead>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Body(req): Body<ExplainRequest>,
) -> Result<Json<aims_policy::Explanation>, ApiError> {
    let agent = state.store.agent(&req.agent).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::AgentNotFound,
            format!("no agent named {}", req.agent),
        )
    })?;
    let snapshot = state.store.posture_snapshot(&agent.name).await?;
    let question = Question::from_wire(req.request)?;
    let resource = format!("{} {}", question.action, question.resource_name());
    let asked = Asked {
        at: OffsetDateTime::now_utc(),
        source_ip: peer.ip(),
    };
    let known = KnownAgent::new(&state.trust_domain, agent, snapshot);
    let request = decisions::request_for(
        &known,
        question,
        asked,
        Some(DecisionId::new(EXPLAIN_DECISION_ID).map_err(|_| ApiError::internal())?),
    );
    let explanation = state
        .policy
        .current()
        .engine
        .explain(&request)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?;
    let event = state
        .event(caller.actor(), action::POLICY_EXPLAIN, Outcome::Success)
        .request(caller.request_id.clone())
        .agent(known.principal.spiffe_id.clone())
        .resource(resource);
    state.audit.record(event).await?;
    Ok(Json(explanation))
}

/// `POST /v1/decisions`: one decision for the agent presenting a task token or its SVID.
pub async fn decide(
    State(state): State<AppState>,
    caller: AuthenticatedAgent,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Body(req): Body<DecideRequest>,
) -> Result<Json<DecisionView>, ApiError> {
    let question = Question::from_wire(req)?;
    let asked = Asked {
        at: OffsetDateTime::now_utc(),
        source_ip: peer.ip(),
    };
    let request_id = crate::auth::request_id(&headers);
    let decided =
        decisions::decide_for(&state, &caller, question, asked, request_id, Purpose::Call).await?;
    Ok(Json(decided.view(&state.issuer)))
}
