//! Policy questions about an agent, built and answered in one place for every enforcement
//! point: `/v1/decisions`, AuthZEN, the token endpoint's `obtain` and `delegate` questions,
//! `explain`, and the gateway.
//!
//! A [`Question`] is typed (action, resource, task facts); the principal is always built from
//! the registry record and the last accepted posture ([`KnownAgent`]), never from the
//! caller. [`decide_for`] answers an authenticated agent's question with the policy version
//! in force, within its task token's scopes, and commits the decision's audit event before
//! the answer leaves; an `approval_required` answer is resolved by [`crate::approvals`] (a
//! grant for the exact call allows it once; otherwise it names an approval request). A
//! [`Purpose::Preview`] answers the same question without acting on it: an enforcement point
//! filtering what it shows (the gateway's MCP `tools/list`) opens no approval request and
//! spends no grant.

use std::net::IpAddr;
use std::sync::Arc;

use aims_api::{DecideRequest, DecisionView};
use aims_core::audit::{Outcome, action};
use aims_core::id::{ApprovalId, DecisionId};
use aims_policy::{Decision, DecisionRequest, Effect, RequestContext, Resource, ResourceObject};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::approvals;
use crate::auth::AuthenticatedAgent;
use crate::error::{ApiError, ErrorCode};
use crate::registry::KnownAgent;
use crate::state::AppState;

/// One question about an action of an agent.
#[derive(Debug, Clone)]
pub struct Question {
    /// The action, e.g. `read`, `call_tool`, `obtain`, `delegate`.
    pub action: String,
    /// What it is on: an object, or another agent (for `delegate`).
    pub resource: Resource,
    /// The task the action belongs to.
    pub task_id: String,
    /// The task's declared intent.
    pub intent: String,
    /// Tool-call arguments.
    pub arguments: Map<String, Value>,
}

impl Question {
    /// The question of a `/v1/decisions` (or `explain`) request; its resource must be an
    /// object of the schema's shape.
    pub fn from_wire(request: DecideRequest) -> Result<Self, ApiError> {
        Ok(Self {
            action: request.action,
            resource: Resource::Object(resource_object(request.resource)?),
            task_id: request.task_id,
            intent: request.intent,
            arguments: request.arguments,
        })
    }

    /// `type::id` of the resource, for the audit log.
    pub fn resource_name(&self) -> String {
        match &self.resource {
            Resource::Object(object) => format!("{}::{}", object.entity_type, object.id),
            Resource::Agent(agent) => format!("Agent::{}", agent.name),
        }
    }

    /// The resource's id, as scopes name it.
    fn resource_id(&self) -> &str {
        match &self.resource {
            Resource::Object(object) => &object.id,
            Resource::Agent(agent) => &agent.name,
        }
    }
}

/// A resource object as a caller sent it (JSON), checked against its shape.
pub fn resource_object(value: Value) -> Result<ResourceObject, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, format!("resource: {e}")))
}

/// Where and when a question is asked.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// Now.
    pub at: OffsetDateTime,
    /// The caller's address.
    pub source_ip: IpAddr,
}

/// What a decision is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A call that is about to be made: an `approval_required` answer opens (or joins) an
    /// approval request, or spends the grant for the exact call.
    Call,
    /// Whether a call could be made (a listing of what the agent may do): the answer is the
    /// engine's, `approval_required` included, and nothing is opened or spent. Its audit
    /// event says `"preview": true`.
    Preview,
}

/// The decision request for `known` (an agent with its last accepted posture) asking
/// `question`, under `decision_id` (a decision that is answered on its own has one; the token
/// endpoint's `obtain` and `delegate` questions are part of an issuance and have none).
pub fn request_for(
    known: &KnownAgent,
    question: Question,
    asked: Asked,
    decision_id: Option<DecisionId>,
) -> DecisionRequest {
    let posture_age_s = known.posture.as_ref().map_or(i64::MAX, |s| {
        (asked.at - s.accepted_at).whole_seconds().max(0)
    });
    DecisionRequest {
        decision_id: decision_id.map(String::from),
        principal: Arc::clone(&known.principal),
        action: question.action,
        resource: question.resource,
        context: RequestContext {
            time: asked.at,
            posture_age_s,
            task_id: question.task_id,
            intent: question.intent,
            delegation_depth: 0,
            delegation_chain: Vec::new(),
            approved: false,
            environment: known.environment.to_string(),
            source_ip: asked.source_ip,
            arguments: question.arguments,
        },
    }
}

/// An answered question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The decision's id (also in its audit event).
    pub id: DecisionId,
    /// Allow, deny or approval required.
    pub effect: Effect,
    /// The policies that determined it.
    pub policies: Vec<String>,
    /// The policy version that decided.
    pub policy_version: u64,
    /// The approval request an `approval_required` decision opened or joined, or the grant
    /// an allow spent.
    pub approval_id: Option<ApprovalId>,
}

impl Decided {
    /// The `/v1/decisions` answer; `issuer` is this server's public URL.
    pub fn view(self, issuer: &str) -> DecisionView {
        let pending = (self.effect == Effect::ApprovalRequired)
            .then_some(self.approval_id.as_ref())
            .flatten();
        DecisionView {
            approval_url: pending.map(|id| approvals::wait_url(issuer, id)),
            decision_id: self.id,
            decision: self.effect.as_str().to_owned(),
            policies: self.policies,
            policy_version: self.policy_version,
            approval_id: self.approval_id,
        }
    }
}

/// Answers `question` of an authenticated agent with the policy version in force, for
/// `purpose`, and commits its audit event before returning. With a task token the task and intent are the token's
/// (a question may not claim another task), and a question outside its scopes is denied
/// without asking Cedar.
pub async fn decide_for(
    state: &AppState,
    caller: &AuthenticatedAgent,
    mut question: Question,
    asked: Asked,
    request_id: Option<String>,
    purpose: Purpose,
) -> Result<Decided, ApiError> {
    if let Some(token) = &caller.task {
        if !question.task_id.is_empty() && question.task_id != token.claims.task_id.as_str() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "task_id differs from the token's task",
            ));
        }
        question.task_id = token.claims.task_id.to_string();
        question.intent = token.claims.intent.to_string();
    }
    let known = &caller.known;
    let id: DecisionId = aims_token::new_id(&state.rng).map_err(|_| ApiError::internal())?;
    let in_scope = caller
        .task
        .as_ref()
        .is_none_or(|t| t.scopes.permits(&question.action, question.resource_id()));
    let chain = caller
        .task
        .as_ref()
        .map(|t| t.claims.delegation_chain())
        .unwrap_or_default();
    let resource_name = question.resource_name();
    let resource = format!("{} {}", question.action, resource_name);
    let (task_id, intent) = (question.task_id.clone(), question.intent.clone());
    let mut request = request_for(known, question, asked, Some(id.clone()));
    if let Some(token) = &caller.task {
        request.context.delegation_depth = i64::from(token.claims.depth());
        request.context.delegation_chain.clone_from(&chain);
    }
    let posture_age_s = request.context.posture_age_s;
    let loaded = state.policy.current();
    let decision = if in_scope {
        state
            .registry
            .decide(known, &loaded.engine, &request)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?
    } else {
        Decision::outside_scope(id.to_string())
    };

    let outcome = if decision.effect == Effect::Allow {
        Outcome::Success
    } else {
        Outcome::Denied
    };
    let mut event = state
        .event(caller.actor(), action::DECISION, outcome)
        .request(request_id)
        .agent(caller.spiffe_id.to_string())
        .owner(known.owner.to_string())
        .resource(resource)
        .chain(chain)
        .decision(
            decision.effect.as_str(),
            decision.determining_policies.clone(),
        )
        .details(json!({
            "decision_id": id,
            "policy_version": loaded.version,
            "reason": decision.reason,
            "posture_age_s": posture_age_s,
            "posture_digest": known.posture.as_ref().map(|s| s.digest.clone()),
            "errors": decision.errors,
            "preview": purpose == Purpose::Preview,
        }));
    event.task_id = (!task_id.is_empty()).then_some(task_id);
    event.intent = (!intent.is_empty()).then_some(intent);
    event.token_id = caller.credential_id().map(ToString::to_string);
    if decision.effect == Effect::ApprovalRequired && purpose == Purpose::Call {
        let unresolved = approvals::Unresolved {
            request: &request,
            resource_name,
            decision,
            event,
        };
        let resolved = approvals::resolve(state, caller, &loaded, unresolved).await?;
        return Ok(Decided {
            id,
            effect: resolved.decision.effect,
            policies: resolved.decision.determining_policies,
            policy_version: loaded.version,
            approval_id: resolved.approval_id,
        });
    }
    // Audit first: no answer leaves unless its record is durable.
    state.audit.record(event).await?;
    Ok(Decided {
        id,
        effect: decision.effect,
        policies: decision.determining_policies,
        policy_version: loaded.version,
        approval_id: None,
    })
}
