//! A decision request in Cedar's form, built once per request.
//!
//! This module owns [`CedarRequest`] and [`DecisionRequest::to_cedar`]: it builds, per
//! request, exactly the entities that request needs — the principal agent and the resource
//! (plus the schema's action entities) — and the context, from the pieces in
//! `entities`, and decides which checks Cedar runs against the schema.
//!
//! Entity type names are checked against the schema before use. Everything the schema types
//! is checked by Cedar against the schema (entities, context, request shape), so a wrong type
//! or a missing attribute is a [`RequestError`], which callers turn into a deny. Shapes
//! proven to conform when the schema was loaded (`shapes`) are not checked again.

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
