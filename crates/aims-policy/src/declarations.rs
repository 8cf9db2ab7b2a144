//! What a Cedar schema declares, and the facts precomputed from it.
//!
//! This module owns [`Declarations`]: a schema parsed from Cedar schema syntax, with its
//! entity types by name, action entities and their groups, the (principal type, action,
//! resource type) combinations it allows and the declared tool-call arguments. Building a
//! request's entities ([`crate::entities`]) and probing shapes ([`crate::shapes`]) read these
//! facts; [`crate::Schema`] holds them with the proven shapes and is what callers see.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid};

use crate::error::PolicyError;

/// The namespace of every AIMS type and action.
pub const NAMESPACE: &str = "Aims";

/// A parsed Cedar schema plus the facts precomputed from its declarations: everything
/// [`crate::Schema`] knows except the proven request shapes.
#[derive(Debug, Clone)]
pub(crate) struct Declarations {
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
}

/// [`crate::Schema`]'s accessors answer from these; their meaning is documented there.
impl Declarations {
    /// Parse a schema in Cedar schema syntax. `source` names it in errors.
    ///
    /// # Errors
    /// [`PolicyError::Schema`] when it does not parse or is inconsistent.
    pub(crate) fn parse(source: &str, text: &str) -> Result<Self, PolicyError> {
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
        Ok(Self {
            cedar,
            source: source.to_owned(),
            action_type,
            types,
            actions: action_map,
            action_ancestors,
            requestable,
            request_envs,
            arguments,
        })
    }

    #[must_use]
    pub(crate) fn cedar(&self) -> &cedar_policy::Schema {
        &self.cedar
    }

    #[must_use]
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    #[must_use]
    pub(crate) fn is_requestable(&self, action: &EntityUid) -> bool {
        self.requestable.contains(action)
    }

    #[must_use]
    pub(crate) fn action_ancestors(&self, action: &EntityUid) -> &[EntityUid] {
        self.action_ancestors
            .get(action)
            .map_or(&[], |v| v.as_slice())
    }

    #[must_use]
    pub(crate) fn entity_type(&self, name: &str) -> Option<&EntityTypeName> {
        self.types.get(name)
    }

    pub(crate) fn entity_types(&self) -> impl Iterator<Item = &EntityTypeName> {
        self.cedar.entity_types()
    }

    #[must_use]
    pub(crate) fn action_uid(&self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(id))
    }

    pub(crate) fn requestable_actions(&self) -> impl Iterator<Item = &EntityUid> {
        self.requestable.iter()
    }

    #[must_use]
    pub(crate) fn types_for(
        &self,
        action: &EntityUid,
    ) -> Option<(&EntityTypeName, &EntityTypeName)> {
        self.request_envs
            .iter()
            .find(|(_, a, _)| a == action)
            .map(|(p, _, r)| (p, r))
    }

    #[must_use]
    pub(crate) fn action_entity(&self, action: &EntityUid) -> Option<&Entity> {
        self.actions.get(action)
    }

    #[must_use]
    pub(crate) fn allows_request(
        &self,
        principal: &EntityTypeName,
        action: &EntityUid,
        resource: &EntityTypeName,
    ) -> bool {
        self.request_envs
            .contains(&(principal.clone(), action.clone(), resource.clone()))
    }

    #[must_use]
    pub(crate) fn declares_argument(&self, name: &str) -> bool {
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
