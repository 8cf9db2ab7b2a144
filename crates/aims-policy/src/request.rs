//! The typed decision request and its translation into Cedar's request and entities.
//!
//! This module owns [`DecisionRequest`] (principal agent, action, resource, context) and
//! builds, per request, exactly the entities that request needs: the principal agent and the
//! resource (plus the schema's action entities). It never reads a registry and never copies
//! one: callers pass the agent's and resource's attributes in.
//!
//! Every id travels through Cedar's API as data ([`EntityId::new`],
//! [`EntityUid::from_type_name_and_id`]), never formatted into policy or entity text, so a
//! quote, `::`, a newline or a confusable character in an id is matched literally. Entity
//! type names are checked against the schema before use. Everything the schema types is
//! checked by Cedar against the schema (entities, context, request shape), so a wrong type or
//! a missing attribute is a [`RequestError`], which callers turn into a deny.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{RequestError, render};
use crate::schema::{NAMESPACE, Schema};

/// Deepest nesting accepted in tool-call arguments.
const MAX_ARGUMENT_DEPTH: usize = 16;

/// How many recent `datetime`/`ip` expressions each thread keeps.
const EXTENSION_CACHE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extension {
    Datetime,
    Ip,
}

thread_local! {
    /// Recently built extension-value expressions. Building one parses the extension
    /// function's name inside Cedar (several µs); the expression for a given argument is
    /// always the same, so it is reused. A pure cache: it changes no result.
    static EXTENSION_VALUES: std::cell::RefCell<Vec<(Extension, String, RestrictedExpression)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn extension_value(kind: Extension, arg: &str) -> RestrictedExpression {
    let build = || match kind {
        Extension::Datetime => RestrictedExpression::new_datetime(arg),
        Extension::Ip => RestrictedExpression::new_ip(arg),
    };
    EXTENSION_VALUES
        .try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return build();
            };
            if let Some((_, _, e)) = cache.iter().find(|(k, a, _)| *k == kind && a == arg) {
                return e.clone();
            }
            let e = build();
            if cache.len() >= EXTENSION_CACHE {
                cache.remove(0);
            }
            cache.push((kind, arg.to_owned(), e.clone()));
            e
        })
        .unwrap_or_else(|_| build())
}

/// One question for the decision point: may this agent do this action on this resource now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// An id chosen by the caller (e.g. the audit event id), echoed in the [`crate::Decision`].
    /// The library never generates ids, so decisions are deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The agent making the request.
    pub principal: Agent,
    /// The action id within `Aims::Action` (e.g. `"read"`, `"call_tool"`), taken literally.
    pub action: String,
    /// What the action is on.
    pub resource: Resource,
    /// Request-time facts.
    pub context: RequestContext,
}

/// An agent as Cedar sees it: registry attributes and the latest posture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The agent's name: its entity id (`Aims::Agent::"<name>"`), literal.
    pub name: String,
    /// `spiffe://<trust-domain>/agent/<name>`.
    pub spiffe_id: String,
    /// The accountable owner (a parent: `Aims::Owner::"<owner>"`).
    pub owner: String,
    /// Teams the agent belongs to (parents: `Aims::Team::"<team>"`).
    #[serde(default)]
    pub teams: Vec<String>,
    /// `dev`, `staging` or `prod`.
    pub environment: String,
    /// Lifecycle state: `active`, `suspended`, `quarantined`, `decommissioned`.
    pub state: String,
    /// Operator-assigned trust level.
    pub trust_level: i64,
    /// The model id the agent runs.
    pub model: String,
    /// Framework and tool manifest.
    pub toolchain: Toolchain,
    /// The latest posture result.
    pub posture: Posture,
    /// Registry labels, exposed as Cedar tags.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The agent's toolchain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchain {
    /// Agent framework.
    pub framework: String,
    /// Its version.
    pub version: String,
    /// Digest of the tool manifest, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// The agent's latest posture result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Posture {
    /// The agent proved its identity.
    pub identity_verified: bool,
    /// Runtime checks (model, toolchain, deployment) passed.
    pub runtime_checks_passed: bool,
    /// Measured model weights digest, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// Measured image digest, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// What an action is on: an object (tool, data resource, secret, scope) or an agent
/// (the target of `delegate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Resource {
    /// A tool, data resource, secret or scope.
    Object(ResourceObject),
    /// An agent (for `delegate`).
    Agent(Agent),
}

/// A non-agent resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceObject {
    /// Entity type: `Tool`, `Resource`, `Secret`, `Scope` (or fully qualified, `Aims::Tool`).
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Entity id, literal.
    pub id: String,
    /// The system it belongs to (also a parent: `Aims::System::"<system>"`).
    pub system: String,
    /// Environment of the data: `dev`, `staging`, `prod`.
    pub environment: String,
    /// Data sensitivity: e.g. `public`, `internal`, `confidential`, `secret`.
    pub sensitivity: String,
    /// What it is: `repository`, `branch`, `logs`, `ticket`, ...
    pub kind: String,
    /// Labels, exposed as Cedar tags.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Further ancestors policies may test with `in` (e.g. the repository of a branch).
    /// The engine looks nothing up: list every ancestor that matters.
    #[serde(default)]
    pub parents: Vec<EntityRef>,
}

/// A reference to an entity by type and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    /// Entity type (`Resource`, `System`, ... or fully qualified).
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Entity id, literal.
    pub id: String,
}

/// The context record (`Aims::RequestContext`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// Request time. Cedar sees it in UTC, truncated to the second.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Seconds since the last accepted posture attestation.
    pub posture_age_s: i64,
    /// The task id.
    pub task_id: String,
    /// The task's declared intent.
    pub intent: String,
    /// Delegation depth (0 for the agent's own task).
    #[serde(default)]
    pub delegation_depth: i64,
    /// SPIFFE ids of the agents in the delegation chain.
    #[serde(default)]
    pub delegation_chain: Vec<String>,
    /// A human approved exactly this call.
    #[serde(default)]
    pub approved: bool,
    /// The environment the request comes from.
    pub environment: String,
    /// The caller's address.
    pub source_ip: IpAddr,
    /// Tool-call arguments (MCP `tools/call` arguments). Only attributes declared in the
    /// schema's `Aims::Arguments` are passed on.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// A request in Cedar's form: the entities it needs, and what it takes to build the
/// [`Request`] (once as asked, once with `approved = true` for the approval rule).
#[derive(Debug, Clone)]
pub struct CedarRequest {
    pub(crate) principal: EntityUid,
    pub(crate) action: EntityUid,
    pub(crate) resource: EntityUid,
    pub(crate) entities: Entities,
    context: Vec<(String, RestrictedExpression)>,
    pub(crate) approved: bool,
    asked: Request,
}

impl CedarRequest {
    /// The entities built for this request (principal, resource, action entities).
    #[must_use]
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// The Cedar [`Request`] as asked (validated against the schema).
    #[must_use]
    pub fn request_as_asked(&self) -> &Request {
        &self.asked
    }

    /// The same Cedar [`Request`] with `context.approved` set to `approved`. The request as
    /// asked conformed to the schema with a Bool there, so this one does too; it is not
    /// checked again.
    ///
    /// # Errors
    /// [`RequestError`] only if Cedar refuses to build the context.
    pub fn with_approved(&self, approved: bool) -> Result<Request, RequestError> {
        build_request(
            &self.principal,
            &self.action,
            &self.resource,
            &self.context,
            approved,
            None,
        )
    }
}

/// How a request is checked against the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The shapes were proven to conform when the schema was loaded: only the
    /// input-dependent facts are checked (types allowed for the action, parent types).
    Known,
    /// Cedar checks everything against the schema (slower, precise errors).
    Full,
}

fn build_request(
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    context: &[(String, RestrictedExpression)],
    approved: bool,
    schema: Option<&Schema>,
) -> Result<Request, RequestError> {
    let pairs = context.iter().cloned().chain([(
        "approved".to_owned(),
        RestrictedExpression::new_bool(approved),
    )]);
    let context = Context::from_pairs(pairs).map_err(|e| RequestError::Context {
        message: render(&e),
    })?;
    Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context,
        schema.map(Schema::cedar),
    )
    .map_err(|e| RequestError::Request {
        message: render(&e),
    })
}

/// What the typed builders were proven (when the schema was loaded) to produce conforming
/// entities and contexts for. Conformance of these shapes does not depend on the values —
/// the Rust types fix every attribute's Cedar type — only on the entity types, on which
/// optional attributes and tags are present, and on parent types. Each is probed with the
/// minimal and the fullest variant, so every variant in between conforms too.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shapes {
    agent: Option<EntityTypeName>,
    agent_tags: bool,
    /// Object types, and whether they accept tags.
    objects: HashMap<EntityTypeName, bool>,
    /// (child type, parent type) pairs the schema allows.
    parents: HashSet<(EntityTypeName, EntityTypeName)>,
    /// Actions whose context conforms when no tool-call argument is present.
    contexts: HashSet<EntityUid>,
}

impl Shapes {
    pub(crate) fn agent_fits(&self, tags: bool) -> bool {
        self.agent.is_some() && (!tags || self.agent_tags)
    }

    pub(crate) fn object_fits(&self, ty: &EntityTypeName, tags: bool) -> bool {
        self.objects.get(ty).is_some_and(|t| !tags || *t)
    }

    pub(crate) fn parent_fits(&self, child: &EntityTypeName, parent: &EntityTypeName) -> bool {
        self.parents.contains(&(child.clone(), parent.clone()))
    }
}

const PROBE_ID: &str = "aims-shape-probe";

fn probe_agent(optionals: bool, tags: bool) -> Agent {
    let opt = |v: &str| optionals.then(|| v.to_owned());
    Agent {
        name: PROBE_ID.to_owned(),
        spiffe_id: PROBE_ID.to_owned(),
        owner: PROBE_ID.to_owned(),
        teams: vec![PROBE_ID.to_owned()],
        environment: PROBE_ID.to_owned(),
        state: PROBE_ID.to_owned(),
        trust_level: 0,
        model: PROBE_ID.to_owned(),
        toolchain: Toolchain {
            framework: PROBE_ID.to_owned(),
            version: PROBE_ID.to_owned(),
            manifest_digest: opt(PROBE_ID),
        },
        posture: Posture {
            identity_verified: false,
            runtime_checks_passed: false,
            model_digest: opt(PROBE_ID),
            image_digest: opt(PROBE_ID),
        },
        labels: if tags {
            BTreeMap::from([(PROBE_ID.to_owned(), PROBE_ID.to_owned())])
        } else {
            BTreeMap::new()
        },
    }
}

fn conforms(entities: Vec<Entity>, schema: &Schema) -> bool {
    Entities::from_entities(entities, Some(schema.cedar())).is_ok()
}

/// Probe which shapes conform to `schema` (see [`Shapes`]).
pub(crate) fn probe_shapes(schema: &Schema) -> Shapes {
    let mut shapes = Shapes::default();
    let agent_type = schema.entity_type("Agent").cloned();
    let probe = |agent: &Agent| -> Option<Entity> {
        agent_parts(agent, schema)
            .ok()
            .and_then(|(uid, attrs, tags)| Entity::new_with_tags(uid, attrs, [], tags).ok())
    };
    let agent_ok = [(false, false), (true, false)]
        .iter()
        .all(|(o, t)| probe(&probe_agent(*o, *t)).is_some_and(|e| conforms(vec![e], schema)));
    if agent_ok {
        shapes.agent = agent_type.clone();
        shapes.agent_tags =
            probe(&probe_agent(true, true)).is_some_and(|e| conforms(vec![e], schema));
    }
    let all_types: Vec<EntityTypeName> = schema.entity_types().cloned().collect();
    let obj = |ty: &EntityTypeName, tags: bool, parent: Option<EntityUid>| -> Option<Entity> {
        let labels = if tags {
            BTreeMap::from([(PROBE_ID.to_owned(), PROBE_ID.to_owned())])
        } else {
            BTreeMap::new()
        };
        Entity::new_with_tags(
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(PROBE_ID)),
            object_attrs(PROBE_ID, PROBE_ID, PROBE_ID, PROBE_ID),
            parent,
            tags_of(&labels),
        )
        .ok()
    };
    for ty in &all_types {
        if Some(ty) == agent_type.as_ref() {
            continue;
        }
        if obj(ty, false, None).is_some_and(|e| conforms(vec![e], schema)) {
            let tags = obj(ty, true, None).is_some_and(|e| conforms(vec![e], schema));
            shapes.objects.insert(ty.clone(), tags);
        }
    }
    let children: Vec<EntityTypeName> = shapes
        .objects
        .keys()
        .cloned()
        .chain(shapes.agent.clone())
        .collect();
    for child in &children {
        for parent in &all_types {
            let p = EntityUid::from_type_name_and_id(parent.clone(), EntityId::new(PROBE_ID));
            let entity = if Some(child) == shapes.agent.as_ref() {
                agent_parts(&probe_agent(true, false), schema)
                    .ok()
                    .and_then(|(uid, attrs, tags)| {
                        Entity::new_with_tags(uid, attrs, [p], tags).ok()
                    })
            } else {
                obj(child, false, Some(p))
            };
            if entity.is_some_and(|e| conforms(vec![e], schema)) {
                shapes.parents.insert((child.clone(), parent.clone()));
            }
        }
    }
    // Contexts: one probe request per action, with a principal and resource type the
    // schema allows for it.
    if let Ok(context) = context_pairs(&probe_context(), schema) {
        for action in schema.requestable_actions() {
            let Some((p, r)) = schema.types_for(action) else {
                continue;
            };
            let p = EntityUid::from_type_name_and_id(p.clone(), EntityId::new(PROBE_ID));
            let r = EntityUid::from_type_name_and_id(r.clone(), EntityId::new(PROBE_ID));
            if build_request(&p, action, &r, &context, false, Some(schema)).is_ok() {
                shapes.contexts.insert(action.clone());
            }
        }
    }
    shapes
}

fn probe_context() -> RequestContext {
    RequestContext {
        time: OffsetDateTime::UNIX_EPOCH,
        posture_age_s: 0,
        task_id: PROBE_ID.to_owned(),
        intent: PROBE_ID.to_owned(),
        delegation_depth: 0,
        delegation_chain: vec![PROBE_ID.to_owned()],
        approved: false,
        environment: PROBE_ID.to_owned(),
        source_ip: IpAddr::from([127, 0, 0, 1]),
        arguments: serde_json::Map::new(),
    }
}

impl DecisionRequest {
    /// Translate into Cedar's form against `schema`: checks the action and entity types,
    /// builds the two entities (and the action's) and the context.
    ///
    /// Shapes proven to conform when the schema was loaded are not re-checked by Cedar per
    /// request; everything else (tool-call arguments, unusual schemas) is.
    ///
    /// # Errors
    /// [`RequestError`] for anything that does not conform; never a partial result.
    pub fn to_cedar(&self, schema: &Schema) -> Result<CedarRequest, RequestError> {
        let action = schema.action_uid(&self.action);
        if !schema.is_requestable(&action) {
            return Err(RequestError::UnknownAction {
                action: self.action.clone(),
            });
        }
        let shapes = &schema.shapes;
        let (principal_entity, mut check) = agent_entity(&self.principal, schema)?;
        let principal = principal_entity.uid();
        let (resource_entity, resource_check) = match &self.resource {
            Resource::Object(obj) => object_entity(obj, schema)?,
            Resource::Agent(agent) => agent_entity(agent, schema)?,
        };
        if resource_check == Check::Full {
            check = Check::Full;
        }
        let resource = resource_entity.uid();
        let mut list = if resource == principal {
            if Resource::Agent(self.principal.clone()) != self.resource {
                return Err(RequestError::Entity {
                    message: "principal and resource have the same id but differ".to_owned(),
                });
            }
            vec![principal_entity]
        } else {
            vec![principal_entity, resource_entity]
        };
        let context = context_pairs(&self.context, schema)?;
        let has_arguments = self
            .context
            .arguments
            .keys()
            .any(|k| schema.declares_argument(k));
        if has_arguments || !shapes.contexts.contains(&action) {
            check = Check::Full;
        }
        let entities = match check {
            Check::Full => Entities::from_entities(list, Some(schema.cedar())),
            Check::Known => {
                if let Some(a) = schema.action_entity(&action) {
                    list.push(a.clone());
                }
                Entities::from_entities(list, None)
            }
        }
        .map_err(|e| RequestError::Entity {
            message: render(&e),
        })?;
        if check == Check::Known
            && !schema.allows_request(principal.type_name(), &action, resource.type_name())
        {
            return Err(RequestError::Request {
                message: format!(
                    "action `{}` does not apply to principal type `{}` and resource type `{}`",
                    self.action,
                    principal.type_name(),
                    resource.type_name()
                ),
            });
        }
        let asked = build_request(
            &principal,
            &action,
            &resource,
            &context,
            self.context.approved,
            (check == Check::Full).then_some(schema),
        )?;
        Ok(CedarRequest {
            principal,
            action,
            resource,
            entities,
            context,
            approved: self.context.approved,
            asked,
        })
    }
}

/// The declared type called `name`, or [`RequestError::UnknownEntityType`].
fn schema_type<'s>(name: &str, schema: &'s Schema) -> Result<&'s EntityTypeName, RequestError> {
    schema
        .entity_type(name)
        .ok_or_else(|| RequestError::UnknownEntityType {
            entity_type: name.to_owned(),
        })
}

fn uid(ty: &str, id: &str, schema: &Schema) -> Result<EntityUid, RequestError> {
    Ok(EntityUid::from_type_name_and_id(
        schema_type(ty, schema)?.clone(),
        EntityId::new(id),
    ))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn record(
    field: &str,
    pairs: Vec<(String, RestrictedExpression)>,
) -> Result<RestrictedExpression, RequestError> {
    RestrictedExpression::new_record(pairs).map_err(|e| RequestError::InvalidValue {
        field: field.to_owned(),
        message: render(&e),
    })
}

fn tags_of(labels: &BTreeMap<String, String>) -> Vec<(String, RestrictedExpression)> {
    labels.iter().map(|(k, v)| (k.clone(), string(v))).collect()
}

type Parts = (
    EntityUid,
    Vec<(String, RestrictedExpression)>,
    Vec<(String, RestrictedExpression)>,
);

fn agent_parts(agent: &Agent, schema: &Schema) -> Result<Parts, RequestError> {
    let mut toolchain = vec![
        ("framework".to_owned(), string(&agent.toolchain.framework)),
        ("version".to_owned(), string(&agent.toolchain.version)),
    ];
    if let Some(d) = &agent.toolchain.manifest_digest {
        toolchain.push(("manifest_digest".to_owned(), string(d)));
    }
    let mut posture = vec![
        (
            "identity_verified".to_owned(),
            RestrictedExpression::new_bool(agent.posture.identity_verified),
        ),
        (
            "runtime_checks_passed".to_owned(),
            RestrictedExpression::new_bool(agent.posture.runtime_checks_passed),
        ),
    ];
    if let Some(d) = &agent.posture.model_digest {
        posture.push(("model_digest".to_owned(), string(d)));
    }
    if let Some(d) = &agent.posture.image_digest {
        posture.push(("image_digest".to_owned(), string(d)));
    }
    let attrs = vec![
        ("name".to_owned(), string(&agent.name)),
        ("spiffe_id".to_owned(), string(&agent.spiffe_id)),
        ("owner".to_owned(), string(&agent.owner)),
        ("environment".to_owned(), string(&agent.environment)),
        ("state".to_owned(), string(&agent.state)),
        (
            "trust_level".to_owned(),
            RestrictedExpression::new_long(agent.trust_level),
        ),
        ("model".to_owned(), string(&agent.model)),
        ("toolchain".to_owned(), record("toolchain", toolchain)?),
        ("posture".to_owned(), record("posture", posture)?),
    ];
    Ok((
        uid("Agent", &agent.name, schema)?,
        attrs,
        tags_of(&agent.labels),
    ))
}

fn agent_entity(agent: &Agent, schema: &Schema) -> Result<(Entity, Check), RequestError> {
    let (uid_, attrs, tags) = agent_parts(agent, schema)?;
    let shapes = &schema.shapes;
    let ty = uid_.type_name().clone();
    let mut check = if shapes.agent_fits(!agent.labels.is_empty()) {
        Check::Known
    } else {
        Check::Full
    };
    let mut parents = vec![uid("Owner", &agent.owner, schema)?];
    for team in &agent.teams {
        parents.push(uid("Team", team, schema)?);
    }
    if parents
        .iter()
        .any(|p| !shapes.parent_fits(&ty, p.type_name()))
    {
        check = Check::Full;
    }
    let entity = Entity::new_with_tags(uid_, attrs, parents, tags).map_err(|e| entity_error(&e))?;
    Ok((entity, check))
}

fn object_attrs(
    system: &str,
    environment: &str,
    sensitivity: &str,
    kind: &str,
) -> Vec<(String, RestrictedExpression)> {
    vec![
        ("system".to_owned(), string(system)),
        ("environment".to_owned(), string(environment)),
        ("sensitivity".to_owned(), string(sensitivity)),
        ("kind".to_owned(), string(kind)),
    ]
}

fn object_entity(obj: &ResourceObject, schema: &Schema) -> Result<(Entity, Check), RequestError> {
    let ty = schema_type(&obj.entity_type, schema)?;
    if ty.basename() == "Agent" && ty.namespace() == NAMESPACE {
        return Err(RequestError::Entity {
            message: format!("`{}` is not an object type", obj.entity_type),
        });
    }
    let shapes = &schema.shapes;
    let mut check = if shapes.object_fits(ty, !obj.labels.is_empty()) {
        Check::Known
    } else {
        Check::Full
    };
    let mut parents = vec![uid("System", &obj.system, schema)?];
    for p in &obj.parents {
        parents.push(uid(&p.entity_type, &p.id, schema)?);
    }
    if parents
        .iter()
        .any(|p| !shapes.parent_fits(ty, p.type_name()))
    {
        check = Check::Full;
    }
    let entity = Entity::new_with_tags(
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(&obj.id)),
        object_attrs(&obj.system, &obj.environment, &obj.sensitivity, &obj.kind),
        parents,
        tags_of(&obj.labels),
    )
    .map_err(|e| entity_error(&e))?;
    Ok((entity, check))
}

fn entity_error(e: &impl miette::Diagnostic) -> RequestError {
    RequestError::Entity { message: render(e) }
}

/// The context record without `approved` (added when the request is built).
fn context_pairs(
    ctx: &RequestContext,
    schema: &Schema,
) -> Result<Vec<(String, RestrictedExpression)>, RequestError> {
    let mut arguments = Vec::new();
    for (name, value) in &ctx.arguments {
        if schema.declares_argument(name) {
            arguments.push((name.clone(), json_value(name, value, 0)?));
        }
    }
    Ok(vec![
        (
            "time".to_owned(),
            extension_value(Extension::Datetime, &datetime(ctx.time)?),
        ),
        (
            "posture_age_s".to_owned(),
            RestrictedExpression::new_long(ctx.posture_age_s),
        ),
        ("task_id".to_owned(), string(&ctx.task_id)),
        ("intent".to_owned(), string(&ctx.intent)),
        (
            "delegation_depth".to_owned(),
            RestrictedExpression::new_long(ctx.delegation_depth),
        ),
        (
            "delegation_chain".to_owned(),
            RestrictedExpression::new_set(ctx.delegation_chain.iter().map(|s| string(s))),
        ),
        ("environment".to_owned(), string(&ctx.environment)),
        (
            "source_ip".to_owned(),
            extension_value(Extension::Ip, &ctx.source_ip.to_string()),
        ),
        ("arguments".to_owned(), record("arguments", arguments)?),
    ])
}

/// Cedar's datetime literal form, in UTC, truncated to the second (policies compare times
/// to the second; it also lets consecutive requests share one expression).
fn datetime(t: OffsetDateTime) -> Result<String, RequestError> {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        return Err(RequestError::InvalidValue {
            field: "time".to_owned(),
            message: "year outside 0000-9999".to_owned(),
        });
    }
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}

/// A JSON argument as a Cedar value: strings, integers, booleans, arrays (sets) and objects
/// (records). `null` and non-integer numbers have no Cedar form and are refused.
fn json_value(
    field: &str,
    v: &serde_json::Value,
    depth: usize,
) -> Result<RestrictedExpression, RequestError> {
    use serde_json::Value;
    let bad = |message: &str| RequestError::InvalidValue {
        field: format!("arguments.{field}"),
        message: message.to_owned(),
    };
    if depth > MAX_ARGUMENT_DEPTH {
        return Err(bad("nested too deeply"));
    }
    match v {
        Value::String(s) => Ok(string(s)),
        Value::Bool(b) => Ok(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(RestrictedExpression::new_long)
            .ok_or_else(|| bad("only 64-bit integers are supported")),
        Value::Array(items) => Ok(RestrictedExpression::new_set(
            items
                .iter()
                .map(|i| json_value(field, i, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(map) => {
            let pairs = map
                .iter()
                .map(|(k, v)| Ok((k.clone(), json_value(field, v, depth + 1)?)))
                .collect::<Result<Vec<_>, RequestError>>()?;
            record(field, pairs)
        }
        Value::Null => Err(bad("null has no Cedar value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_to_the_second() {
        let t = time::macros::datetime!(2026-03-01 10:15:30.750 +02:00);
        assert_eq!(datetime(t).unwrap(), "2026-03-01T08:15:30Z");
        let far = time::macros::datetime!(-0001-01-01 0:00 UTC);
        assert!(datetime(far).is_err());
    }

    #[test]
    fn cached_extension_values_equal_fresh_ones() {
        for i in 0..(EXTENSION_CACHE * 2) {
            let arg = format!("10.0.0.{}", i % 40);
            let cached = extension_value(Extension::Ip, &arg);
            let again = extension_value(Extension::Ip, &arg);
            let fresh = RestrictedExpression::new_ip(&arg);
            assert_eq!(format!("{cached:?}"), format!("{fresh:?}"));
            assert_eq!(format!("{again:?}"), format!("{fresh:?}"));
        }
        let d = extension_value(Extension::Datetime, "2026-03-01T08:15:30Z");
        let fresh = RestrictedExpression::new_datetime("2026-03-01T08:15:30Z");
        assert_eq!(format!("{d:?}"), format!("{fresh:?}"));
    }

    #[test]
    fn json_arguments_map_to_cedar_values() {
        let v = serde_json::json!({"a": [1, "x", true], "b": {"c": 2}});
        assert!(json_value("x", &v, 0).is_ok());
        assert!(json_value("x", &serde_json::json!(1.5), 0).is_err());
        assert!(json_value("x", &serde_json::Value::Null, 0).is_err());
        let mut deep = serde_json::json!(1);
        for _ in 0..40 {
            deep = serde_json::json!([deep]);
        }
        assert!(json_value("x", &deep, 0).is_err());
    }
}
