//! Human approval at the enforcement points: what an `approval_required` decision becomes,
//! and how waiters learn that a request was answered.
//!
//! [`resolve`] takes an `approval_required` decision of an authenticated agent. If a grant
//! covers the exact call (task, agent, action, resource, arguments digest), the call is
//! decided again with `context.approved = true` and, if that allows it, one use of the grant
//! is spent in the same transaction as the decision's audit event. Otherwise the decision
//! opens an approval request for the call (or joins the pending one), announced on the
//! approval webhook, and the answer names it. The request's terms (approvers, wait, uses,
//! arguments shown, four eyes) are the determining policies' annotations.
//! Waiters are woken through [`crate::approval_watch`].

use std::time::Duration;

use aims_core::approval::{ApprovalRequest, AskedApproval, BoundCall, arguments_digest};
use aims_core::audit::{AuditEvent, Outcome, action};
use aims_core::id::{ApprovalId, TaskId};
use aims_policy::{Decision, DecisionRequest, Effect};
use aims_store::StoreError;
use serde_json::{Value, json};

use crate::auth::{AuthenticatedAgent, Vouched};
use crate::error::ApiError;
use crate::policy::LoadedPolicy;
use crate::state::AppState;
use crate::webhook::{self, Hook};

/// How long a request waits for a human when its policies do not say (15 minutes).
pub const DEFAULT_APPROVAL_TTL_S: u64 = 900;

/// The URL an agent waits on for the answer to approval request `id`.
pub fn wait_url(issuer: &str, id: &ApprovalId) -> String {
    format!("{issuer}/v1/approvals/{id}")
}

/// An `approval_required` decision on its way to the caller, not yet audited.
pub struct Unresolved<'a> {
    /// What was asked (with `context.approved = false`).
    pub request: &'a DecisionRequest,
    /// The resource as `Type::id`.
    pub resource_name: String,
    /// The decision.
    pub decision: Decision,
    /// Its audit event.
    pub event: AuditEvent,
}

/// What an `approval_required` decision became.
pub struct Resolved {
    /// `allow` when a grant covered the call; otherwise the `approval_required` decision.
    pub decision: Decision,
    /// The grant spent, or the approval request opened or joined; `None` when the call
    /// cannot be approved (no open task, or the agent's queue is full).
    pub approval_id: Option<ApprovalId>,
}

/// An `approval_required` decision of `caller` under `loaded`, resolved: allowed by a grant
/// for the exact call, or naming the approval request opened or joined for it. Its audit
/// event is durable before this returns.
pub async fn resolve(
    state: &AppState,
    caller: &AuthenticatedAgent,
    loaded: &LoadedPolicy,
    unresolved: Unresolved<'_>,
) -> Result<Resolved, ApiError> {
    let Unresolved {
        request,
        resource_name,
        decision,
        event,
    } = unresolved;
    let decided = |decision: Decision, approval_id| Resolved {
        decision,
        approval_id,
    };
    let now = request.context.time;
    // Only a call of a task can be approved: a grant is bound to the task.
    let Ok(task_id) = TaskId::new(request.context.task_id.clone()) else {
        state.audit.record(event).await?;
        return Ok(decided(decision, None));
    };
    let call = BoundCall {
        task_id,
        agent: caller.agent().name.clone(),
        action: request.action.clone(),
        resource: resource_name,
        arguments_digest: arguments_digest(&request.context.arguments),
    };

    if let Some(grant) = state.store.grant_for(&call, now).await? {
        let mut approved = request.clone();
        approved.context.approved = true;
        let allowed = state
            .registry
            .decide(&caller.known, &loaded.engine, &approved)
            .ok()
            .filter(|d| d.effect == Effect::Allow);
        if let Some(allowed) = allowed {
            let mut used = event.clone();
            used.outcome = Outcome::Success;
            used.decision = Some(allowed.effect.as_str().to_owned());
            used.policy_ids.clone_from(&allowed.determining_policies);
            if let Value::Object(details) = &mut used.details {
                details.insert("approved".into(), Value::Bool(true));
            }
            if state.store.use_grant(&grant, now, &used).await? {
                return Ok(decided(allowed, Some(grant)));
            }
            // Spent by a concurrent call meanwhile: this one needs an approval of its own.
        }
    }

    let Some(task) = state.store.task(call.task_id.as_str()).await? else {
        state.audit.record(event).await?;
        return Ok(decided(decision, None));
    };
    let terms = loaded.engine.approval_terms(&decision).unwrap_or_default();
    let ttl = terms.ttl_s.unwrap_or(DEFAULT_APPROVAL_TTL_S);
    let asked = AskedApproval {
        spiffe_id: caller.spiffe_id.to_string(),
        owner: caller.agent().owner.clone(),
        intent: request.context.intent.clone(),
        task_subject: task.subject,
        delegation_chain: request.context.delegation_chain.clone(),
        credential_id: caller
            .credential_id()
            .map(ToString::to_string)
            .unwrap_or_default(),
        enforcement_point: match &caller.vouched {
            Vouched::ByResourceServer { name, .. } => Some(name.clone()),
            Vouched::Itself(_) => None,
        },
        resource_attributes: serde_json::to_value(&request.resource).unwrap_or(Value::Null),
        arguments: terms
            .show_arguments
            .then(|| request.context.arguments.clone()),
        policy_texts: decision
            .determining_policies
            .iter()
            .filter_map(|p| Some((p.clone(), loaded.engine.policy_text(p)?)))
            .collect(),
        policies: decision.determining_policies.clone(),
        policy_version: loaded.version,
        approvers: terms.approvers.map(|a| a.into_iter().collect()),
        four_eyes: terms.four_eyes,
        uses: terms.uses,
        created_at: now,
        expires_at: now + Duration::from_secs(ttl),
        call,
    };
    let opening = ApprovalRequest::open(
        aims_token::new_id(&state.rng).map_err(|_| ApiError::internal())?,
        asked,
    );
    let opened_event = opened_event(state, &event, &opening);
    match state
        .store
        .open_approval(&opening, &event, &opened_event)
        .await
    {
        Ok(stored) => {
            if stored.id == opening.id {
                announce(state, &stored);
                state.approval_watch.changed();
            }
            Ok(decided(decision, Some(stored.id)))
        }
        // The task closed, or the agent was suspended, meanwhile: nothing to approve.
        Err(StoreError::Conflict { .. }) => {
            state.audit.record(event).await?;
            Ok(decided(decision, None))
        }
        Err(e) => Err(e.into()),
    }
}

/// The `approval.request` event of `request`, opened by the decision recorded in `decision`.
fn opened_event(state: &AppState, decision: &AuditEvent, request: &ApprovalRequest) -> AuditEvent {
    let asked = &request.asked;
    let mut event = state
        .event(
            decision.actor.clone(),
            action::APPROVAL_REQUEST,
            Outcome::Success,
        )
        .request(decision.request_id.clone())
        .agent(asked.spiffe_id.clone())
        .owner(asked.owner.to_string())
        .resource(format!("{} {}", asked.call.action, asked.call.resource))
        .token(asked.credential_id.clone())
        .chain(asked.delegation_chain.clone())
        .decision(Effect::ApprovalRequired.as_str(), asked.policies.clone())
        .details(json!({
            "decision_id": decision.details.get("decision_id"),
            "arguments_digest": asked.call.arguments_digest,
            "approvers": asked.approvers,
            "four_eyes": asked.four_eyes,
            "uses": asked.uses,
            "expires_at": asked.expires_at.unix_timestamp(),
        }));
    event.task_id = Some(asked.call.task_id.to_string());
    event.intent = Some(asked.intent.clone());
    event
}

/// Announces a new request on the approval webhook (never on the decision's path: delivery
/// runs in the background, and its failure leaves the request pending).
fn announce(state: &AppState, request: &ApprovalRequest) {
    let asked = &request.asked;
    webhook::notify(
        state,
        Hook::Approval,
        json!({
            "type": "approval.requested",
            "approval_id": request.id,
            "approval_url": wait_url(&state.issuer, &request.id),
            "agent": asked.spiffe_id,
            "owner": asked.owner,
            "task_id": asked.call.task_id,
            "intent": asked.intent,
            "action": asked.call.action,
            "resource": asked.call.resource,
            "arguments_digest": asked.call.arguments_digest,
            "policies": asked.policies,
            "approvers": asked.approvers,
            "expires_at": asked.expires_at.unix_timestamp(),
        }),
    );
}
