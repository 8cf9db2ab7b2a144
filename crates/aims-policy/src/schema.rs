//! The Cedar schema AIMS policies are written and validated against.
//!
//! This module owns [`Schema`]: a loaded schema (the embedded default or one from a policy
//! directory) as the engine uses it — what it declares and the facts precomputed from it
//! (requestable actions, action ancestors, declared tool-call arguments; kept by
//! `declarations`), together with the request shapes proven to conform to it when it was
//! loaded (`shapes`). It does not evaluate anything.
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
//! - `lease` (resource `Resource` of kind `database_role`, id `<engine>/<role>`, tags
//!   `engine` and `role`): may the principal get a short-lived role of a database engine.
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

use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{Entity, EntityTypeName, EntityUid};

use crate::declarations::Declarations;
use crate::error::PolicyError;
use crate::shapes::{Shapes, probe_shapes};

/// The AIMS schema text, as shipped in `policies/aims.cedarschema`.
pub const AIMS_SCHEMA: &str = include_str!("../../../policies/aims.cedarschema");

pub use crate::declarations::NAMESPACE;

/// Schemas parsed so far in this process: each parse gets the next number as its id.
static PARSED: AtomicU64 = AtomicU64::new(0);

/// A parsed Cedar schema plus what the engine precomputes from it: the facts from its
/// declarations and the request shapes proven to conform to it.
#[derive(Debug, Clone)]
pub struct Schema {
    /// What the schema declares, and the facts precomputed from it.
    pub(crate) declarations: Declarations,
    /// What the typed request builder is known to produce conforming entities for.
    pub(crate) shapes: Shapes,
    /// Unique to this parse (clones share it): what a [`crate::PrincipalEntity`] built
    /// against this schema remembers, so it is never used with another.
    pub(crate) id: u64,
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
        let declarations = Declarations::parse(source, text)?;
        let shapes = probe_shapes(&declarations);
        Ok(Self {
            declarations,
            shapes,
            id: PARSED.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The Cedar schema.
    #[must_use]
    pub fn cedar(&self) -> &cedar_policy::Schema {
        self.declarations.cedar()
    }

    /// The name this schema was loaded from.
    #[must_use]
    pub fn source(&self) -> &str {
        self.declarations.source()
    }

    /// Is `action` an action a request may name (declared, with `appliesTo`)?
    #[must_use]
    pub fn is_requestable(&self, action: &EntityUid) -> bool {
        self.declarations.is_requestable(action)
    }

    /// The action groups `action` is in (transitively); empty for unknown actions.
    #[must_use]
    pub fn action_ancestors(&self, action: &EntityUid) -> &[EntityUid] {
        self.declarations.action_ancestors(action)
    }

    /// The declared entity type called `name` (`Tool` or `Aims::Tool`); no parsing.
    #[must_use]
    pub fn entity_type(&self, name: &str) -> Option<&EntityTypeName> {
        self.declarations.entity_type(name)
    }

    /// Declared entity types.
    pub fn entity_types(&self) -> impl Iterator<Item = &EntityTypeName> {
        self.declarations.entity_types()
    }

    /// `Aims::Action::"<id>"`, the id taken literally.
    #[must_use]
    pub fn action_uid(&self, id: &str) -> EntityUid {
        self.declarations.action_uid(id)
    }

    /// Actions a request may name.
    pub fn requestable_actions(&self) -> impl Iterator<Item = &EntityUid> {
        self.declarations.requestable_actions()
    }

    /// Some principal and resource type the schema allows for `action`.
    #[must_use]
    pub fn types_for(&self, action: &EntityUid) -> Option<(&EntityTypeName, &EntityTypeName)> {
        self.declarations.types_for(action)
    }

    /// The action's entity (with its groups as parents), for declared actions.
    #[must_use]
    pub fn action_entity(&self, action: &EntityUid) -> Option<&Entity> {
        self.declarations.action_entity(action)
    }

    /// Does the schema allow this principal type, action and resource type together?
    #[must_use]
    pub fn allows_request(
        &self,
        principal: &EntityTypeName,
        action: &EntityUid,
        resource: &EntityTypeName,
    ) -> bool {
        self.declarations
            .allows_request(principal, action, resource)
    }

    /// Whether `Aims::Arguments` declares this attribute.
    #[must_use]
    pub fn declares_argument(&self, name: &str) -> bool {
        self.declarations.declares_argument(name)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::EntityId;

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
