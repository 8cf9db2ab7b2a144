//! An agent's own task token for its identity (RFC 7523 JWT bearer, or RFC 8693 with a
//! JWT-SVID as the subject token): one `obtain` decision per requested scope.

use std::collections::BTreeMap;

use aims_api::oauth::TokenResponse;
use aims_core::audit::Outcome;
use aims_core::delegation::{Lifetimes, first_grant};
use aims_core::id::{AgentName, Intent, TaskId};
use aims_core::scope::ScopeSet;
use aims_core::task::{Task, TaskState};
use aims_policy::{Effect, Resource, ResourceObject};
use aims_store::ResourceServer;
use aims_token::access::{AccessClaims, Confirmation};
use aims_token::svid::SvidClaims;
use serde_json::{Map, Value, json};

use super::{
    Attempt, Exchange, active_agent, grant_refusal, invalid_grant, invalid_request, issue,
    live_identity, no_randomness, possession, rate_limit, requested_lifetime, target,
};
use crate::decisions::{self, Question};
use crate::error::{ApiError, ErrorCode};
use crate::registry::KnownAgent;

/// Exchanges the JWT-SVID `identity` for a task token of its agent.
pub(super) async fn exchange(
    ex: &Exchange<'_>,
    identity: &str,
    attempt: &mut Attempt,
) -> Result<TokenResponse, ApiError> {
    let state = ex.state;
    let svid = live_identity(ex, identity, "the identity").await?;
    attempt.spiffe_id = Some(svid.sub.to_string());
    rate_limit(state, &svid.sub.to_string())?;
    attempt.parent = Some(svid.jti.to_string());
    let agent = active_agent(state, &svid.sub).await?;
    attempt.owner = Some(agent.owner.clone());
    let proof = possession(ex, Some(&svid.cnf.jkt), agent.limits.allow_bearer)?;
    let target = target(state, ex.params).await?;
    let requested = requested_scopes(ex)?;
    let expires_in = requested_lifetime(ex.params)?;
    let (task, new_task) = task_for(ex, &agent.name, &svid).await?;
    attempt.task_id = Some(task.id.clone());

    let obtained = obtain(ex, &agent, &task, &target, &requested).await?;
    let lifetimes = Lifetimes {
        requested_s: expires_in,
        policy_limit_s: obtained.policy_limit_s,
        agent_limit_s: u64::from(agent.limits.max_token_ttl_s),
        global_ceiling_s: state.config.max_token_ttl.as_secs(),
    };
    let now = ex.asked.at.unix_timestamp();
    let not_after = task.deadline.unix_timestamp().min(svid.exp);
    let grant = first_grant(
        obtained.granted,
        target.audience.clone(),
        now,
        lifetimes,
        not_after,
    )
    .map_err(grant_refusal)?;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: task.subject.clone(),
        aud: grant.audience.clone(),
        client_id: svid.sub.to_string(),
        scope: grant.scopes.to_string(),
        jti: aims_token::new_id(&state.rng).map_err(no_randomness)?,
        iat: now,
        exp: grant.expires_at,
        task_id: task.id.clone(),
        intent: task.intent.clone(),
        cnf: proof.as_ref().map(|p| Confirmation { jkt: p.jkt.clone() }),
        act: None,
    };
    let event = attempt
        .event(state, Outcome::Success)
        .request(crate::auth::request_id(ex.headers))
        .intent(task.intent.clone())
        .chain(vec![claims.client_id.clone()])
        .details(json!({
            "grant_type": ex.params.get("grant_type"),
            "requested_scope": requested.to_string(),
            "obtain": obtained.decisions,
            "policy_max_token_ttl_s": obtained.policy_limit_s,
            "policy_version": obtained.policy_version,
            "new_task": new_task.is_some(),
        }));
    let minted = issue::Minted {
        claims,
        agent_revision: agent.revision,
        grant: &grant,
        parent: String::from(svid.jti),
        new_task,
        proof,
    };
    issue::issue(state, minted, event).await
}

/// The scopes the client asked for.
fn requested_scopes(ex: &Exchange<'_>) -> Result<ScopeSet, ApiError> {
    let scope = ex
        .params
        .get("scope")
        .ok_or_else(|| ApiError::oauth(ErrorCode::InvalidScope, "scope is required"))?;
    ScopeSet::parse(scope).map_err(|e| ApiError::oauth(ErrorCode::InvalidScope, e.to_string()))
}

/// The task a token is for: the named one (the agent's own, still open) or a new one.
async fn task_for(
    ex: &Exchange<'_>,
    agent: &AgentName,
    svid: &SvidClaims,
) -> Result<(Task, Option<Task>), ApiError> {
    let (state, params, now) = (ex.state, ex.params, ex.asked.at);
    if let Some(id) = params.get("task_id") {
        let id = TaskId::new(id).map_err(|_| invalid_request("task_id is malformed"))?;
        let task = state
            .store
            .task(id.as_str())
            .await
            .map_err(ApiError::oauth_from_store)?
            .ok_or_else(|| invalid_grant("unknown task"))?;
        if task.agent != *agent {
            return Err(invalid_grant("the task belongs to another agent"));
        }
        if !task.is_open(now) {
            return Err(invalid_grant("the task has ended"));
        }
        if params
            .get("intent")
            .is_some_and(|i| i != task.intent.as_str())
        {
            return Err(invalid_request(
                "intent differs from the task's declared intent",
            ));
        }
        return Ok((task, None));
    }
    let intent = params
        .get("intent")
        .ok_or_else(|| invalid_request("intent is required for a new task"))?;
    let intent = Intent::new(intent).map_err(|_| {
        invalid_request("intent must be 1 to 1024 characters without control characters")
    })?;
    let task = Task {
        id: aims_token::new_id(&state.rng).map_err(no_randomness)?,
        agent: agent.clone(),
        intent,
        subject: svid.sub.to_string(),
        state: TaskState::Active,
        created_at: now,
        deadline: now + state.config.task_ttl,
        ended_at: None,
    };
    Ok((task.clone(), Some(task)))
}

/// What the `obtain` decisions granted.
struct Obtained {
    /// The scopes policy allows.
    granted: ScopeSet,
    /// The least `@max_token_ttl_s` of the allowing policies.
    policy_limit_s: Option<u64>,
    /// Each requested scope's decision and determining policies, for the audit log.
    decisions: Map<String, Value>,
    /// The policy version that decided.
    policy_version: u64,
}

/// Asks the active policies whether `agent` may obtain each requested scope for `target`;
/// refuses when none is granted.
async fn obtain(
    ex: &Exchange<'_>,
    agent: &KnownAgent,
    task: &Task,
    target: &ResourceServer,
    requested: &ScopeSet,
) -> Result<Obtained, ApiError> {
    let state = ex.state;
    let loaded = state.policy.current();
    let mut granted = Vec::new();
    let mut policy_limit_s: Option<u64> = None;
    let mut decisions = Map::new();
    for scope in requested.iter() {
        let question = Question {
            action: "obtain".to_owned(),
            resource: Resource::Object(ResourceObject {
                entity_type: "Scope".to_owned(),
                id: scope.to_string(),
                system: target.system.clone(),
                environment: target.environment.as_str().to_owned(),
                sensitivity: target.sensitivity.clone(),
                kind: scope.action().to_owned(),
                labels: BTreeMap::from([("resource".to_owned(), scope.resource().to_owned())]),
                parents: Vec::new(),
            }),
            task_id: task.id.to_string(),
            intent: task.intent.to_string(),
            arguments: Map::new(),
        };
        let request = decisions::request_for(agent, question, ex.asked, None);
        let decision = state.registry.decide(agent, &loaded.engine, &request).ok();
        let effect = decision.as_ref().map_or("error", |d| d.effect.as_str());
        decisions.insert(
            scope.to_string(),
            json!({
                "decision": effect,
                "policies": decision.as_ref().map(|d| d.determining_policies.clone()),
            }),
        );
        if let Some(allowed) = decision.filter(|d| d.effect == Effect::Allow) {
            let limit = loaded.engine.token_lifetime_limit_s(&allowed);
            policy_limit_s = policy_limit_s.into_iter().chain(limit).min();
            granted.push(scope.clone());
        }
    }
    if granted.is_empty() {
        return Err(ApiError::oauth(
            ErrorCode::InvalidScope,
            "policy grants none of the requested scopes",
        ));
    }
    Ok(Obtained {
        granted: ScopeSet::from_scopes(granted),
        policy_limit_s,
        decisions,
        policy_version: loaded.version,
    })
}
