//! The Cedar schema AIMS policies are written and validated against.
//!
//! This module owns loading a schema (the embedded default or one from a policy directory)
//! and the facts the engine precomputes from it (requestable actions, action ancestors,
//! declared tool-call arguments). It does not evaluate anything.
//!
//! # The AIMS schema (`policies/aims.cedarschema`, namespace `Aims`)
//!
//! **Entity types**
//! - `Aims::Agent in [Owner, Team]` — the principal of every request. Entity id: the agent's
//!   name. Attributes from the registry and the latest posture: `name`, `spiffe_id`,
//!   `owner`, `environment` (`dev`/`staging`/`prod`), `state` (`active`, `suspended`, ...),
//!   `trust_level` (Long), `model`, `toolchain` (`{framework, version, manifest_digest?}`),
//!   `posture` (`{identity_verified, runtime_checks_passed, model_digest?, image_digest?}`).
//!   Labels are entity **tags** (`principal.hasTag("role") && principal.getTag("role") ==
//!   "support"`). Also the resource of `delegate` (the agent delegated to).
//! - `Aims::Owner in [Team]`, `Aims::Team` — parents of agents, for `principal in
//!   Aims::Team::"sre"`.
//! - `Aims::System` — the system a tool or resource belongs to; parent of every resource.
//! - `Aims::Tool`, `Aims::Resource in [Resource, System]`, `Aims::Secret`, `Aims::Scope` —
//!   resources, all with `system`, `environment`, `sensitivity`, `kind` and labels as tags.
//!   A `Resource` may sit inside another (a branch in a repository).
//!
//! **Actions** (`Aims::Action::"…"`)
//! - `call_tool` (resource `Tool`): an MCP `tools/call` or HTTP route through the gateway.
//! - `read`, `query`, `read_metadata` in group `read_only`; `write`, `delete` in group
//!   `mutate` (resource `Resource`).
//! - `retrieve_secret`, `export_secret` in group `secret_access` (resource `Secret`).
//! - `obtain` (resource `Scope`): may this scope be granted in a task token.
//! - `delegate` (resource `Agent`): may the principal hand part of its task to that agent.
//!
//! **Context** (`Aims::RequestContext`, the same record for every action): `time`
//! (`datetime`, UTC, to the second), `posture_age_s` (Long), `task_id`, `intent`, `delegation_depth`
//! (Long), `delegation_chain` (`Set<String>` of SPIFFE ids), `approved` (Bool, see the
//! approval rule in [`crate::engine`]), `environment`, `source_ip` (`ipaddr`), `arguments`
//! (`Aims::Arguments`, a record of optional attributes).
//!
//! Tool-call arguments: only those declared in `Aims::Arguments` are passed to Cedar; the
//! rest are dropped. A policy validated in strict mode cannot read an undeclared attribute,
//! so dropping them changes no decision; declaring one makes it available to policies.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid};

use crate::error::PolicyError;
use crate::request::{Shapes, probe_shapes};

/// The AIMS schema text, as shipped in `policies/aims.cedarschema`.
pub const AIMS_SCHEMA: &str = include_str!("../../../policies/aims.cedarschema");

/// The namespace of every AIMS type and action.
pub const NAMESPACE: &str = "Aims";

/// A parsed Cedar schema plus what the engine precomputes from it.
#[derive(Debug, Clone)]
pub struct Schema {
    cedar: cedar_policy::Schema,
    source: String,
    action_type: EntityTypeName,
    /// Every declared type by qualified name, and `Aims` types also by basename.
    types: HashMap<String, EntityTypeName>,
    /// Action entities (with their groups as parents) and the groups transitively.
    actions: HashMap<EntityUid, Entity>,
    action_ancestors: HashMap<EntityUid, Vec<EntityUid>>,
    requestable: HashSet<EntityUid>,
    /// (principal type, action, resource type) combinations the schema allows.
    request_envs: HashSet<(EntityTypeName, EntityUid, EntityTypeName)>,
    arguments: BTreeSet<String>,
    /// What the typed request builder is known to produce conforming entities for.
    pub(crate) shapes: Shapes,
}

impl Schema {
    /// The embedded AIMS schema.
    ///
    /// # Errors
    /// Only if the embedded schema were broken (a test checks it is not).
    pub fn aims() -> Result<Self, PolicyError> {
        Self::parse("aims.cedarschema", AIMS_SCHEMA)
    }

    /// Parse a schema in Cedar schema syntax. `source` names it in errors.
    ///
    /// # Errors
    /// [`PolicyError::Schema`] when it does not parse or is inconsistent.
    pub fn parse(source: &str, text: &str) -> Result<Self, PolicyError> {
        let schema_err = |message: String| PolicyError::Schema {
            file: source.to_owned(),
            message,
        };
        let (cedar, _warnings) = cedar_policy::Schema::from_cedarschema_str(text)
            .map_err(|e| schema_err(crate::error::render(&e)))?;
        let actions = cedar
            .action_entities()
            .map_err(|e| schema_err(crate::error::render(&e)))?;
        let mut action_ancestors = HashMap::new();
        let mut action_map = HashMap::new();
        for entity in actions.iter() {
            let uid = entity.uid();
            let ancestors = actions
                .ancestors(&uid)
                .map(|it| it.cloned().collect())
                .unwrap_or_default();
            action_ancestors.insert(uid.clone(), ancestors);
            action_map.insert(uid, entity.clone());
        }
        let mut requestable = HashSet::new();
        let mut request_envs = HashSet::new();
        for env in cedar.request_envs() {
            requestable.insert(env.action().clone());
            request_envs.insert((
                env.principal().clone(),
                env.action().clone(),
                env.resource().clone(),
            ));
        }
        let mut types = HashMap::new();
        for ty in cedar.entity_types() {
            types.insert(ty.to_string(), ty.clone());
            if ty.namespace() == NAMESPACE {
                types.insert(ty.basename().to_owned(), ty.clone());
            }
        }
        let action_type = EntityTypeName::from_str(&format!("{NAMESPACE}::Action"))
            .map_err(|e| schema_err(crate::error::render(&e)))?;
        let arguments = declared_arguments(text).map_err(schema_err)?;
        let mut schema = Self {
            cedar,
            source: source.to_owned(),
            action_type,
            types,
            actions: action_map,
            action_ancestors,
            requestable,
            request_envs,
            arguments,
            shapes: Shapes::default(),
        };
        schema.shapes = probe_shapes(&schema);
        Ok(schema)
    }

    /// The Cedar schema.
    #[must_use]
    pub fn cedar(&self) -> &cedar_policy::Schema {
        &self.cedar
    }

    /// The name this schema was loaded from.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Is `action` an action a request may name (declared, with `appliesTo`)?
    #[must_use]
    pub fn is_requestable(&self, action: &EntityUid) -> bool {
        self.requestable.contains(action)
    }

    /// The action groups `action` is in (transitively); empty for unknown actions.
    #[must_use]
    pub fn action_ancestors(&self, action: &EntityUid) -> &[EntityUid] {
        self.action_ancestors
            .get(action)
            .map_or(&[], |v| v.as_slice())
    }

    /// The declared entity type called `name` (`Tool` or `Aims::Tool`); no parsing.
    #[must_use]
    pub fn entity_type(&self, name: &str) -> Option<&EntityTypeName> {
        self.types.get(name)
    }

    /// Declared entity types.
    pub fn entity_types(&self) -> impl Iterator<Item = &EntityTypeName> {
        self.cedar.entity_types()
    }

    /// `Aims::Action::"<id>"`, the id taken literally.
    #[must_use]
    pub fn action_uid(&self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(id))
    }

    /// Actions a request may name.
    pub fn requestable_actions(&self) -> impl Iterator<Item = &EntityUid> {
        self.requestable.iter()
    }

    /// Some principal and resource type the schema allows for `action`.
    #[must_use]
    pub fn types_for(&self, action: &EntityUid) -> Option<(&EntityTypeName, &EntityTypeName)> {
        self.request_envs
            .iter()
            .find(|(_, a, _)| a == action)
            .map(|(p, _, r)| (p, r))
    }

    /// The action's entity (with its groups as parents), for declared actions.
    #[must_use]
    pub fn action_entity(&self, action: &EntityUid) -> Option<&Entity> {
        self.actions.get(action)
    }

    /// Does the schema allow this principal type, action and resource type together?
    #[must_use]
    pub fn allows_request(
        &self,
        principal: &EntityTypeName,
        action: &EntityUid,
        resource: &EntityTypeName,
    ) -> bool {
        self.request_envs
            .contains(&(principal.clone(), action.clone(), resource.clone()))
    }

    /// Whether `Aims::Arguments` declares this attribute.
    #[must_use]
    pub fn declares_argument(&self, name: &str) -> bool {
        self.arguments.contains(name)
    }
}

/// The attribute names of the common type `Aims::Arguments`, read from the schema's JSON form.
fn declared_arguments(text: &str) -> Result<BTreeSet<String>, String> {
    let (fragment, _warnings) = cedar_policy::SchemaFragment::from_cedarschema_str(text)
        .map_err(|e| crate::error::render(&e))?;
    let json = fragment
        .to_json_value()
        .map_err(|e| crate::error::render(&e))?;
    let attrs = json
        .get(NAMESPACE)
        .and_then(|ns| ns.get("commonTypes"))
        .and_then(|ct| ct.get("Arguments"))
        .and_then(|a| a.get("attributes"))
        .and_then(serde_json::Value::as_object);
    Ok(attrs
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Aims::Action").unwrap(),
            EntityId::new(id),
        )
    }

    #[test]
    fn embedded_schema_parses_with_its_facts() {
        let s = Schema::aims().unwrap();
        assert!(s.is_requestable(&action("read")));
        assert!(
            !s.is_requestable(&action("read_only")),
            "groups are not requestable"
        );
        assert!(!s.is_requestable(&action("fly")));
        assert_eq!(s.action_ancestors(&action("read")), &[action("read_only")]);
        assert!(s.declares_argument("branch"));
        assert!(!s.declares_argument("password"));
        let tool = EntityTypeName::from_str("Aims::Tool").unwrap();
        assert_eq!(s.entity_type("Tool"), Some(&tool));
        assert_eq!(s.entity_type("Aims::Tool"), Some(&tool));
        assert_eq!(s.entity_type("Banana"), None);
        assert_eq!(s.action_uid("read"), action("read"));
        assert!(s.shapes.agent_fits(true), "{:?}", s.shapes);
        assert!(s.shapes.object_fits(&tool, true));
        let system = EntityTypeName::from_str("Aims::System").unwrap();
        let team = EntityTypeName::from_str("Aims::Team").unwrap();
        assert!(s.shapes.parent_fits(&tool, &system));
        assert!(!s.shapes.parent_fits(&tool, &team));
    }

    #[test]
    fn broken_schema_is_an_error() {
        let err =
            Schema::parse("bad.cedarschema", "namespace X { entity A in [Nope]; }").unwrap_err();
        assert!(err.to_string().contains("bad.cedarschema"), "{err}");
    }
}
