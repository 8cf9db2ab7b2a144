//! The OpenID AuthZEN 1.0 Access Evaluation API over the same engine as `/v1/decisions`, so
//! existing policy enforcement points can ask AIMS.
//!
//! `POST /access/v1/evaluation` answers one subject–action–resource–context tuple;
//! `POST /access/v1/evaluations` answers several, with top-level defaults and the
//! `evaluations_semantic` option (`execute_all`, `deny_on_first_deny`,
//! `permit_on_first_permit`), and AIMS's own option `aims_preview`: `true` answers every
//! evaluation as a preview (whether the call could be made — `approval_required` reported
//! as such — without opening an approval request or spending a grant), the way an
//! enforcement point filters a listing. The caller is either the agent, with its JWT-SVID or task token,
//! asking about itself (`type: "agent"`, `id`: its name or SPIFFE ID), or a registered
//! resource server — an existing enforcement point — with its client credential (HTTP Basic),
//! asking about any registered agent for resources of its own `system`, optionally passing
//! the agent's task token in `subject.properties.token` to bind task, scopes and delegation
//! chain. Either way the principal is built from the registry and posture, never from the
//! request. A deny is HTTP
//! 200 with `"decision": false`; `approval_required` is a `false` whose `context.reason` says
//! so, with `context.approval_id` and `context.approval_url` naming the approval request to
//! wait on. The discovery document is `/.well-known/authzen-configuration`.

use std::borrow::Cow;

use aims_policy::{Effect, Resource};
use aims_store::ResourceServer;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use aims_core::audit::{Actor, Outcome, action};

use crate::auth::{self, AuthenticatedAgent};
use crate::decisions::{self, Asked, Purpose, Question};
use crate::error::{ApiError, ErrorCode};
use crate::extract::Body;
use crate::state::AppState;

/// Most evaluations in one batch.
const MAX_EVALUATIONS: usize = 64;

/// An AuthZEN subject or resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Further attributes.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// An AuthZEN action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The action's name.
    pub name: String,
    /// Further attributes (unused).
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// One evaluation; in a batch every member may be omitted and taken from the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// Who asks.
    #[serde(default)]
    pub subject: Option<Entity>,
    /// What it wants to do.
    #[serde(default)]
    pub action: Option<Action>,
    /// On what.
    #[serde(default)]
    pub resource: Option<Entity>,
    /// Request facts: `task_id`, `intent`, `arguments`.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// Options of a batch; members AIMS does not know are ignored (AuthZEN 1.0 §7.1).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Options {
    /// `execute_all` (default), `deny_on_first_deny` or `permit_on_first_permit`.
    #[serde(default)]
    pub evaluations_semantic: Option<String>,
    /// Answer every evaluation as a [`Purpose::Preview`] (only with `execute_all`).
    #[serde(default)]
    pub aims_preview: bool,
}

/// `POST /access/v1/evaluations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Defaults for every evaluation.
    #[serde(flatten)]
    pub defaults: Evaluation,
    /// The evaluations; absent or empty, the top-level fields are one evaluation.
    #[serde(default)]
    pub evaluations: Vec<Evaluation>,
    /// Options.
    #[serde(default)]
    pub options: Options,
}

/// `GET /.well-known/authzen-configuration`.
pub async fn configuration(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "policy_decision_point": state.issuer,
        "access_evaluation_endpoint": format!("{}/access/v1/evaluation", state.issuer),
        "access_evaluations_endpoint": format!("{}/access/v1/evaluations", state.issuer),
    }))
}

fn bad(message: &str) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidRequest, message)
}

/// Who asks: an agent about itself (its JWT-SVID or task token), or a registered resource
/// server — an existing enforcement point — about any agent, with its own client credential
/// (HTTP Basic, as at introspection).
pub enum Asker {
    /// The agent itself.
    Agent(Box<AuthenticatedAgent>),
    /// A resource server, for resources of its `system`.
    ResourceServer(ResourceServer),
}

impl Asker {
    /// Who asked, for the audit log.
    fn actor(&self) -> Actor {
        match self {
            Self::Agent(agent) => agent.actor(),
            Self::ResourceServer(server) => Actor::ResourceServer {
                name: server.name.to_string(),
            },
        }
    }
}

impl FromRequestParts<AppState> for Asker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if auth::is_basic(&parts.headers) {
            let server = auth::resource_server_caller(state, &parts.headers).await?;
            return Ok(Self::ResourceServer(server));
        }
        let agent = AuthenticatedAgent::from_request_parts(parts, state).await?;
        Ok(Self::Agent(Box::new(agent)))
    }
}

/// The agent an evaluation's subject names, as `asker` may ask about it: an agent only about
/// itself; a resource server about any registered agent, with the agent's task token in the
/// subject's `properties.token` when it holds one.
async fn subject_of<'a>(
    state: &AppState,
    asker: &'a Asker,
    subject: Option<&Entity>,
) -> Result<Cow<'a, AuthenticatedAgent>, ApiError> {
    let subject = subject.ok_or_else(|| bad("subject is required"))?;
    if subject.kind != "agent" {
        return Err(bad("the subject must be of type \"agent\""));
    }
    match asker {
        Asker::Agent(caller) => {
            let is_caller = subject.id == caller.agent().name.as_str()
                || subject.id == caller.spiffe_id.to_string();
            if !is_caller {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::SubjectMismatch,
                    "the subject must be the authenticated agent (type \"agent\", its name or SPIFFE ID)",
                ));
            }
            Ok(Cow::Borrowed(caller.as_ref()))
        }
        Asker::ResourceServer(server) => {
            let token = match subject.properties.get("token") {
                None => None,
                Some(Value::String(token)) => Some(token.as_str()),
                Some(_) => return Err(bad("subject.properties.token must be a string")),
            };
            AuthenticatedAgent::vouched_for(state, server, &subject.id, token)
                .await
                .map(Cow::Owned)
        }
    }
}

/// The attributes policies read of every resource; one AIMS cannot tell is decided as a deny
/// without asking Cedar (a policy cannot be trusted to fail closed on a value it never saw).
const RESOURCE_ATTRIBUTES: [&str; 4] = ["system", "environment", "sensitivity", "kind"];

/// What an evaluation asks: a question for the engine, or a resource whose attributes AIMS
/// cannot tell.
enum Posed {
    Question(Box<Question>),
    Unknown {
        /// `action Type::id`, as decisions name what they decide.
        call: String,
        /// The attributes neither the request nor the registry gave.
        missing: Vec<&'static str>,
    },
}

/// The question an evaluation stands for. A resource server asks only about resources of its
/// own `system`; attributes the resource leaves out are its registered ones.
fn question_of(eval: Evaluation, server: Option<&ResourceServer>) -> Result<Posed, ApiError> {
    let action = eval.action.ok_or_else(|| bad("action is required"))?;
    let resource = eval.resource.ok_or_else(|| bad("resource is required"))?;
    let mut object = resource.properties;
    if let Some(server) = server {
        if object
            .get("system")
            .is_some_and(|system| system.as_str() != Some(server.system.as_str()))
        {
            return Err(ApiError::forbidden(
                "a resource server asks only about resources of its own system",
            ));
        }
        for (name, value) in [
            ("system", server.system.clone()),
            ("environment", server.environment.to_string()),
            ("sensitivity", server.sensitivity.clone()),
        ] {
            object.entry(name).or_insert(Value::String(value));
        }
    }
    let missing: Vec<&'static str> = RESOURCE_ATTRIBUTES
        .into_iter()
        .filter(|name| !object.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        return Ok(Posed::Unknown {
            call: format!("{} {}::{}", action.name, resource.kind, resource.id),
            missing,
        });
    }
    object.insert("type".into(), Value::String(resource.kind));
    object.insert("id".into(), Value::String(resource.id));
    let mut context = eval.context.unwrap_or_default();
    let mut text = |name: &str| match context.remove(name) {
        Some(Value::String(s)) => Ok(s),
        None => Ok(String::new()),
        Some(_) => Err(bad("context.task_id and context.intent must be strings")),
    };
    let task_id = text("task_id")?;
    let intent = text("intent")?;
    let arguments = match context.remove("arguments") {
        Some(Value::Object(map)) => map,
        None => Map::new(),
        Some(_) => return Err(bad("context.arguments must be an object")),
    };
    Ok(Posed::Question(Box::new(Question {
        action: action.name,
        resource: Resource::Object(decisions::resource_object(Value::Object(object))?),
        task_id,
        intent,
        arguments,
    })))
}

/// One evaluation's answer: `decision` is true only for allow.
async fn evaluate(
    state: &AppState,
    asker: &Asker,
    eval: Evaluation,
    asked: Asked,
    request_id: Option<String>,
    purpose: Purpose,
) -> Result<Value, ApiError> {
    let caller = subject_of(state, asker, eval.subject.as_ref()).await?;
    let server = match asker {
        Asker::ResourceServer(server) => Some(server),
        Asker::Agent(_) => None,
    };
    let question = match question_of(eval, server)? {
        Posed::Question(question) => *question,
        Posed::Unknown { call, missing } => {
            let event = state
                .event(caller.actor(), action::DECISION, Outcome::Denied)
                .request(request_id)
                .agent(caller.spiffe_id.to_string())
                .owner(caller.agent().owner.to_string())
                .resource(call)
                .decision("deny", Vec::new())
                .details(json!({
                    "reason": "unknown_resource",
                    "missing": missing,
                    "preview": purpose == Purpose::Preview,
                }));
            state.audit.record(event).await?;
            return Ok(json!({"decision": false, "context": {
                "reason": "unknown_resource",
                "message": "AIMS cannot tell this resource's attributes; give them in resource.properties",
                "missing": missing,
            }}));
        }
    };
    let decided =
        decisions::decide_for(state, &caller, question, asked, request_id, purpose).await?;
    let allowed = decided.effect == Effect::Allow;
    let view = decided.view(&state.issuer);
    let mut context = Map::new();
    context.insert("decision_id".into(), json!(view.decision_id));
    context.insert("reason".into(), json!(view.decision));
    context.insert("policies".into(), json!(view.policies));
    context.insert("policy_version".into(), json!(view.policy_version));
    if let (Some(id), Some(url)) = (view.approval_id, view.approval_url) {
        context.insert("approval_id".into(), json!(id));
        context.insert("approval_url".into(), json!(url));
    }
    Ok(json!({ "decision": allowed, "context": context }))
}

/// `POST /access/v1/evaluation`.
pub async fn evaluation(
    State(state): State<AppState>,
    asker: Asker,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Body(eval): Body<Evaluation>,
) -> Result<Json<Value>, ApiError> {
    let asked = Asked {
        at: OffsetDateTime::now_utc(),
        source_ip: peer.ip(),
    };
    let request_id = crate::auth::request_id(&headers);
    Ok(Json(
        evaluate(&state, &asker, eval, asked, request_id, Purpose::Call).await?,
    ))
}

/// Whether a batch stops at the first deny (`Some(false)`) or permit (`Some(true)`).
fn stop_on(options: &Options) -> Result<Option<bool>, ApiError> {
    match options.evaluations_semantic.as_deref() {
        None | Some("execute_all") => Ok(None),
        Some("deny_on_first_deny") => Ok(Some(false)),
        Some("permit_on_first_permit") => Ok(Some(true)),
        Some(_) => Err(bad("unknown evaluations_semantic")),
    }
}

/// An evaluation's refusal as its result in a batch (AuthZEN 1.0: a failed evaluation is a
/// `false` decision carrying the error), audited as a refusal; a server error still fails the
/// whole batch.
async fn refused_in_batch(
    state: &AppState,
    asker: &Asker,
    request_id: Option<String>,
    error: ApiError,
) -> Result<Value, ApiError> {
    if error.status.is_server_error() {
        return Err(error);
    }
    let mut event = state.event(asker.actor(), action::REJECT, Outcome::Denied);
    event.code = Some(error.code.as_str().to_owned());
    event.request_id = request_id;
    event.resource = Some("POST /access/v1/evaluations".to_owned());
    state.audit.record(event).await?;
    Ok(json!({"decision": false, "context": {"error": {
        "status": error.status.as_u16(),
        "code": error.code.as_str(),
        "message": error.message,
    }}}))
}

/// `POST /access/v1/evaluations`.
pub async fn evaluations(
    State(state): State<AppState>,
    asker: Asker,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Body(batch): Body<Batch>,
) -> Result<Json<Value>, ApiError> {
    if batch.evaluations.len() > MAX_EVALUATIONS {
        return Err(bad("send at most 64 evaluations"));
    }
    let stop_on = stop_on(&batch.options)?;
    let asked = Asked {
        at: OffsetDateTime::now_utc(),
        source_ip: peer.ip(),
    };
    let request_id = crate::auth::request_id(&headers);
    // No evaluations (absent or empty): the top-level fields are the one evaluation.
    let evaluations = if batch.evaluations.is_empty() {
        vec![Evaluation::default()]
    } else {
        batch.evaluations
    };
    let count = evaluations.len();
    let merged = evaluations.into_iter().map(|eval| Evaluation {
        subject: eval.subject.or_else(|| batch.defaults.subject.clone()),
        action: eval.action.or_else(|| batch.defaults.action.clone()),
        resource: eval.resource.or_else(|| batch.defaults.resource.clone()),
        context: eval.context.or_else(|| batch.defaults.context.clone()),
    });
    let answer = |eval: Evaluation, purpose: Purpose| {
        let (state, asker, request_id) = (&state, &asker, request_id.clone());
        async move {
            match evaluate(state, asker, eval, asked, request_id.clone(), purpose).await {
                Ok(result) => Ok(result),
                Err(error) => refused_in_batch(state, asker, request_id, error).await,
            }
        }
    };
    if batch.options.aims_preview {
        if stop_on.is_some() {
            return Err(bad("aims_preview answers every evaluation (execute_all)"));
        }
        // Previews open nothing, so they are answered together: their audit events share
        // group commits.
        let previews = merged.map(|eval| answer(eval, Purpose::Preview));
        let results = futures_util::future::try_join_all(previews).await?;
        return Ok(Json(json!({ "evaluations": results })));
    }
    let mut results = Vec::with_capacity(count);
    for eval in merged {
        let result = answer(eval, Purpose::Call).await?;
        let decided = result.get("decision").and_then(Value::as_bool);
        results.push(result);
        if stop_on.is_some() && decided == stop_on {
            break;
        }
    }
    Ok(Json(json!({ "evaluations": results })))
}
