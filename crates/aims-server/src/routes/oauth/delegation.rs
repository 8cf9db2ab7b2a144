//! Delegation (RFC 8693 with an access token as the subject and the delegate's JWT-SVID as
//! the actor): a narrower token of the same task for another agent, after the structural
//! rules of [`aims_core::delegation`] and a `delegate` decision of the active policies.

use std::sync::Arc;

use aims_api::oauth::{TOKEN_TYPE_JWT, TokenResponse};
use aims_core::audit::Outcome;
use aims_core::delegation::{DelegationRequest, DepthLimits, Grant, Lifetimes, delegated_grant};
use aims_core::id::SpiffeId;
use aims_core::scope::ScopeSet;
use aims_policy::{Agent, Decision, Effect, Resource};
use aims_token::access::{AccessClaims, Actor as ActClaim, Confirmation};
use aims_token::svid::SvidClaims;
use serde_json::{Map, json};

use super::{
    Attempt, Exchange, active_agent, grant_refusal, invalid_grant, invalid_request, issue,
    live_identity, no_randomness, possession, rate_limit, requested_lifetime,
    requested_target_name, target,
};
use crate::decisions::{self, Question};
use crate::error::{ApiError, ErrorCode};
use crate::presented;
use crate::registry::KnownAgent;

/// The two agents of a delegation: who hands over part of its task, and to whom.
struct Parties {
    /// The caller's task token.
    parent: AccessClaims,
    /// The agent holding it.
    delegator: Arc<KnownAgent>,
    /// The delegate's identity (the actor token).
    actor: SvidClaims,
    /// The delegate's registry record.
    delegate: Arc<KnownAgent>,
}

/// Exchanges the task token `subject_token` and the actor's JWT-SVID for a token of the
/// actor's agent.
pub(super) async fn delegate(
    ex: &Exchange<'_>,
    subject_token: &str,
    attempt: &mut Attempt,
) -> Result<TokenResponse, ApiError> {
    let state = ex.state;
    let (parent, delegator) = delegator(ex, subject_token, attempt).await?;
    let bound = parent.cnf.as_ref().map(|c| c.jkt.as_str());
    let proof = possession(ex, bound, bound.is_none())?;
    let parties = actor(ex, parent, delegator).await?;
    let mut grant = structural_grant(ex, &parties).await?;
    let (decision, policy_limit_s, policy_version) = allowed(ex, &parties)?;
    if let Some(limit) = policy_limit_s {
        let policy_expiry = ex
            .asked
            .at
            .unix_timestamp()
            .saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        grant.expires_at = grant.expires_at.min(policy_expiry);
    }

    let Parties {
        parent,
        actor,
        delegate,
        ..
    } = parties;
    let claims = delegated_claims(ex, &parent, &actor, &grant)?;
    let event = attempt
        .event(state, Outcome::Success)
        .request(crate::auth::request_id(ex.headers))
        .intent(parent.intent.clone())
        .chain(claims.delegation_chain())
        .decision(decision.effect.as_str(), decision.determining_policies)
        .details(json!({
            "delegate": claims.client_id,
            "depth": grant.depth,
            "policy_max_token_ttl_s": policy_limit_s,
            "policy_version": policy_version,
        }));
    let minted = issue::Minted {
        claims,
        agent_revision: delegate.revision,
        grant: &grant,
        parent: String::from(parent.jti),
        new_task: None,
        proof,
    };
    issue::issue(state, minted, event).await
}

/// The caller's task token, verified and not revoked, and its active agent.
async fn delegator(
    ex: &Exchange<'_>,
    subject_token: &str,
    attempt: &mut Attempt,
) -> Result<(AccessClaims, Arc<KnownAgent>), ApiError> {
    let state = ex.state;
    let parent = presented::verify_access(state, subject_token, ex.asked.at)
        .map_err(|e| invalid_grant(format!("the subject token was refused: {e}")))?;
    attempt.spiffe_id = Some(parent.client_id.clone());
    rate_limit(state, &parent.client_id)?;
    attempt.parent = Some(parent.jti.to_string());
    attempt.task_id = Some(parent.task_id.clone());
    let holder = SpiffeId::parse(&parent.client_id).map_err(|_| invalid_grant("no such agent"))?;
    let delegator = active_agent(state, &holder).await?;
    attempt.owner = Some(delegator.owner.clone());
    Ok((parent, delegator))
}

/// The delegate named by the actor token: a live identity of another active agent.
async fn actor(
    ex: &Exchange<'_>,
    parent: AccessClaims,
    delegator: Arc<KnownAgent>,
) -> Result<Parties, ApiError> {
    if ex.params.require("actor_token_type")? != TOKEN_TYPE_JWT {
        return Err(invalid_request(
            "actor_token_type must be the JWT URN (the actor's JWT-SVID)",
        ));
    }
    let actor_token = ex.params.require("actor_token")?;
    let actor = live_identity(ex, actor_token, "the actor's identity").await?;
    let delegate = active_agent(ex.state, &actor.sub).await?;
    if delegate.name == delegator.name {
        return Err(invalid_request("an agent cannot delegate to itself"));
    }
    Ok(Parties {
        parent,
        delegator,
        actor,
        delegate,
    })
}

/// The structural rules (scope, audience, depth, lifetime). The policy's lifetime cap is
/// known only after the decision.
async fn structural_grant(ex: &Exchange<'_>, parties: &Parties) -> Result<Grant, ApiError> {
    let (state, params, parent) = (ex.state, ex.params, &parties.parent);
    let parent_grant = Grant {
        scopes: ScopeSet::parse(&parent.scope)
            .map_err(|_| invalid_grant("unacceptable claims: scope is malformed"))?,
        audience: parent.aud.clone(),
        expires_at: parent.exp,
        depth: parent.depth(),
    };
    // A named target (by audience URI or resource-server name) must be the parent's.
    let audience = match requested_target_name(params)? {
        Some(_) => Some(target(state, params).await?.audience),
        None => None,
    };
    let request = DelegationRequest {
        scopes: params
            .get("scope")
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|e| ApiError::oauth(ErrorCode::InvalidScope, e.to_string()))?,
        audience,
    };
    let lifetimes = Lifetimes {
        requested_s: requested_lifetime(params)?,
        policy_limit_s: None,
        agent_limit_s: u64::from(parties.delegate.limits.max_token_ttl_s),
        global_ceiling_s: state.config.max_token_ttl.as_secs(),
    };
    let depth_limits = DepthLimits {
        delegator: u32::from(parties.delegator.limits.max_delegation_depth),
        delegate: u32::from(parties.delegate.limits.max_delegation_depth),
        global: state.config.max_delegation_depth,
    };
    let mut grant = delegated_grant(
        &parent_grant,
        &request,
        ex.asked.at.unix_timestamp(),
        lifetimes,
        depth_limits,
    )
    .map_err(grant_refusal)?;
    grant.expires_at = grant.expires_at.min(parties.actor.exp);
    Ok(grant)
}

/// Policy: may the delegator hand part of this task to this agent? The allowing decision,
/// its `@max_token_ttl_s` and the policy version.
fn allowed(ex: &Exchange<'_>, parties: &Parties) -> Result<(Decision, Option<u64>, u64), ApiError> {
    let state = ex.state;
    let loaded = state.policy.current();
    let parent = &parties.parent;
    let question = Question {
        action: "delegate".to_owned(),
        resource: Resource::Agent(Agent::clone(&parties.delegate.principal)),
        task_id: parent.task_id.to_string(),
        intent: parent.intent.to_string(),
        arguments: Map::new(),
    };
    let delegator = &parties.delegator;
    let mut request = decisions::request_for(delegator, question, ex.asked, None);
    request.context.delegation_depth = i64::from(parent.depth());
    request.context.delegation_chain = parent.delegation_chain();
    let decision = state
        .registry
        .decide(delegator, &loaded.engine, &request)
        .ok();
    let Some(decision) = decision.filter(|d| d.effect == Effect::Allow) else {
        return Err(invalid_grant(format!(
            "policy does not allow {} to delegate to {}",
            parent.client_id, parties.actor.sub
        )));
    };
    let limit = loaded.engine.token_lifetime_limit_s(&decision);
    Ok((decision, limit, loaded.version))
}

/// The delegate's token: the parent's subject and task, the actor's key, the chain extended.
fn delegated_claims(
    ex: &Exchange<'_>,
    parent: &AccessClaims,
    actor: &SvidClaims,
    grant: &Grant,
) -> Result<AccessClaims, ApiError> {
    let state = ex.state;
    let previous = parent.act.clone().unwrap_or(ActClaim {
        sub: parent.client_id.clone(),
        act: None,
    });
    Ok(AccessClaims {
        iss: state.issuer.clone(),
        sub: parent.sub.clone(),
        aud: grant.audience.clone(),
        client_id: actor.sub.to_string(),
        scope: grant.scopes.to_string(),
        jti: aims_token::new_id(&state.rng).map_err(no_randomness)?,
        iat: ex.asked.at.unix_timestamp(),
        exp: grant.expires_at,
        task_id: parent.task_id.clone(),
        intent: parent.intent.clone(),
        cnf: Some(Confirmation {
            jkt: actor.cnf.jkt.clone(),
        }),
        act: Some(ActClaim {
            sub: actor.sub.to_string(),
            act: Some(Box::new(previous)),
        }),
    })
}
