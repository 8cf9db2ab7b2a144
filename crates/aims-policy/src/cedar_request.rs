//! A decision request in Cedar's form: the principal built once per agent and schema, the
//! rest built per request.
//!
//! This module owns [`CedarRequest`], [`PrincipalEntity`] and [`DecisionRequest::to_cedar`] /
//! [`DecisionRequest::to_cedar_as`]. An agent's entity — attributes, tags, its owner and teams
//! as parents — depends only on the agent and the schema, so a caller that holds an agent for
//! many requests (a registry view) builds a [`PrincipalEntity`] once, with its transitive
//! closure computed, and shares it; per request only the resource entity (plus the schema's
//! action entity) and the context are built, from the pieces in `entities`, and added to a
//! copy of the principal's entity store. Without a prebuilt principal everything is built per
//! request. Both ways give the same entities, request and errors; a test checks it. This module
//! also decides which checks Cedar runs against the schema.
//!
//! Entity type names are checked against the schema before use. Everything the schema types
//! is checked by Cedar against the schema (entities, context, request shape), so a wrong type
//! or a missing attribute is a [`RequestError`], which callers turn into a deny. Shapes
//! proven to conform when the schema was loaded (`shapes`) are not checked again.

use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityId, EntityUid, Request, RestrictedExpression};

use crate::declarations::NAMESPACE;
use crate::entities::{
    agent_parts, build_request, context_pairs, object_attrs, schema_type, tags_of, uid,
};
use crate::error::{RequestError, render};
use crate::request::{Agent, DecisionRequest, Resource, ResourceObject};
use crate::schema::Schema;

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

/// An agent as a Cedar principal, built once against one schema and shared by the requests
/// it makes (the entity depends on nothing else): its entity alone in an entity store, with
/// the transitive closure computed, and how much of it Cedar must check per request. It keeps
/// the [`Agent`] it was built from (shared, not copied); a request is assembled around it
/// only when the request names exactly that agent and is checked against that schema, so a
/// stale or foreign principal is never used: the request's own is built instead.
#[derive(Debug, Clone)]
pub struct PrincipalEntity {
    agent: Arc<Agent>,
    /// The id of the schema it was built against.
    schema: u64,
    uid: EntityUid,
    check: Check,
    /// The principal's entity, alone, its transitive closure computed (its parents are not
    /// in the store, so its ancestors are its parents).
    alone: Entities,
}

impl PrincipalEntity {
    /// Build `agent`'s entity against `schema`.
    ///
    /// # Errors
    /// [`RequestError`] when the agent does not conform (the same error
    /// [`DecisionRequest::to_cedar`] gives for a request it makes, once the action is known).
    pub fn new(agent: impl Into<Arc<Agent>>, schema: &Schema) -> Result<Self, RequestError> {
        let agent = agent.into();
        let (entity, check) = agent_entity(&agent, schema)?;
        let uid = entity.uid();
        let alone = Entities::from_entities([entity], None).map_err(|e| entity_error(&e))?;
        Ok(Self {
            agent,
            schema: schema.id,
            uid,
            check,
            alone,
        })
    }

    /// The agent it was built from.
    #[must_use]
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The entity store holding the principal alone, its transitive closure computed.
    #[must_use]
    pub fn entities(&self) -> &Entities {
        &self.alone
    }

    /// Whether it was built against `schema` (this parse of it, or a clone).
    #[must_use]
    pub fn is_for(&self, schema: &Schema) -> bool {
        self.schema == schema.id
    }

    /// Whether `request` may be assembled around it: the same agent, the same schema.
    fn fits(&self, request: &DecisionRequest, schema: &Schema) -> bool {
        self.is_for(schema)
            && (Arc::ptr_eq(&self.agent, &request.principal) || *self.agent == *request.principal)
    }
}

/// The principal of a request being assembled.
#[expect(
    clippy::large_enum_variant,
    reason = "lives on the stack while one request is built; boxing would allocate per request"
)]
enum Principal<'a> {
    /// Built for this request.
    Fresh(Entity, Check),
    /// Built once, shared.
    Prebuilt(&'a PrincipalEntity),
}

impl Principal<'_> {
    fn uid(&self) -> EntityUid {
        match self {
            Self::Fresh(entity, _) => entity.uid(),
            Self::Prebuilt(p) => p.uid.clone(),
        }
    }

    fn check(&self) -> Check {
        match self {
            Self::Fresh(_, check) => *check,
            Self::Prebuilt(p) => p.check,
        }
    }

    /// The entity store of the request: the principal and `others`, the transitive closure
    /// computed; checked against `schema` when given, which then also adds its action
    /// entities. Without a schema check, a prebuilt principal's store is copied (its entity
    /// is shared behind Cedar's `Arc`, not copied) and `others` are added to it with Cedar's
    /// `Entities::add_entities`, which computes the closure of what it adds and repairs that
    /// of what lies below it, instead of computing the whole closure again.
    fn entities(
        self,
        others: Vec<Entity>,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<Entities, RequestError> {
        match (self, schema) {
            (Self::Fresh(entity, _), schema) => {
                Entities::from_entities(std::iter::once(entity).chain(others), schema)
            }
            (Self::Prebuilt(p), Some(schema)) => {
                Entities::from_entities(p.alone.iter().cloned().chain(others), Some(schema))
            }
            (Self::Prebuilt(p), None) => p.alone.clone().add_entities(others, None),
        }
        .map_err(|e| entity_error(&e))
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
        self.assemble(schema, None)
    }

    /// As [`DecisionRequest::to_cedar`], with the principal's entity taken from `principal`
    /// instead of built again when it was built from this request's principal against
    /// `schema` (otherwise it is built per request, as `to_cedar` does). The result is the
    /// same either way.
    ///
    /// # Errors
    /// As [`DecisionRequest::to_cedar`].
    pub fn to_cedar_as(
        &self,
        principal: &PrincipalEntity,
        schema: &Schema,
    ) -> Result<CedarRequest, RequestError> {
        let prebuilt = principal.fits(self, schema).then_some(principal);
        self.assemble(schema, prebuilt)
    }

    fn assemble(
        &self,
        schema: &Schema,
        prebuilt: Option<&PrincipalEntity>,
    ) -> Result<CedarRequest, RequestError> {
        let action = schema.action_uid(&self.action);
        if !schema.is_requestable(&action) {
            return Err(RequestError::UnknownAction {
                action: self.action.clone(),
            });
        }
        let shapes = &schema.shapes;
        let principal_entity = match prebuilt {
            Some(p) => Principal::Prebuilt(p),
            None => {
                let (entity, check) = agent_entity(&self.principal, schema)?;
                Principal::Fresh(entity, check)
            }
        };
        let mut check = principal_entity.check();
        let principal = principal_entity.uid();
        let (resource_entity, resource_check) = match &self.resource {
            Resource::Object(obj) => object_entity(obj, schema)?,
            Resource::Agent(agent) => agent_entity(agent, schema)?,
        };
        if resource_check == Check::Full {
            check = Check::Full;
        }
        let resource = resource_entity.uid();
        let mut others = if resource == principal {
            if Resource::Agent(Agent::clone(&self.principal)) != self.resource {
                return Err(RequestError::Entity {
                    message: "principal and resource have the same id but differ".to_owned(),
                });
            }
            Vec::new()
        } else {
            vec![resource_entity]
        };
        let context = context_pairs(&self.context, &schema.declarations)?;
        let has_arguments = self
            .context
            .arguments
            .keys()
            .any(|k| schema.declares_argument(k));
        if has_arguments || !shapes.context_fits(&action) {
            check = Check::Full;
        }
        let entities = match check {
            Check::Full => principal_entity.entities(others, Some(schema.cedar()))?,
            Check::Known => {
                if let Some(a) = schema.action_entity(&action) {
                    others.push(a.clone());
                }
                principal_entity.entities(others, None)?
            }
        };
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
            (check == Check::Full).then_some(&schema.declarations),
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

fn agent_entity(agent: &Agent, schema: &Schema) -> Result<(Entity, Check), RequestError> {
    let (uid_, attrs, tags) = agent_parts(agent, &schema.declarations)?;
    let shapes = &schema.shapes;
    let ty = uid_.type_name().clone();
    let mut check = if shapes.agent_fits(!agent.labels.is_empty()) {
        Check::Known
    } else {
        Check::Full
    };
    let mut parents = vec![uid("Owner", &agent.owner, &schema.declarations)?];
    for team in &agent.teams {
        parents.push(uid("Team", team, &schema.declarations)?);
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

fn object_entity(obj: &ResourceObject, schema: &Schema) -> Result<(Entity, Check), RequestError> {
    let ty = schema_type(&obj.entity_type, &schema.declarations)?;
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
    let mut parents = vec![uid("System", &obj.system, &schema.declarations)?];
    for p in &obj.parents {
        parents.push(uid(&p.entity_type, &p.id, &schema.declarations)?);
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
