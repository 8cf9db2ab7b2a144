//! Request shapes proven, when a schema is loaded, to conform to it.
//!
//! This module owns [`Shapes`] and [`probe_shapes`]: for each schema, once, it builds probe
//! entities and contexts with the same builders every request uses ([`crate::entities`])
//! and asks Cedar whether they conform. [`crate::Schema`] keeps the result, and
//! [`crate::cedar_request`] skips Cedar's per-request schema checks for what was proven
//! here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid};
use time::OffsetDateTime;

use crate::declarations::Declarations;
use crate::entities::{agent_parts, build_request, context_pairs, object_attrs, tags_of};
use crate::request::{Agent, Posture, RequestContext, Tags, Toolchain};

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

    pub(crate) fn context_fits(&self, action: &EntityUid) -> bool {
        self.contexts.contains(action)
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
            [(PROBE_ID.to_owned(), PROBE_ID.to_owned())].into()
        } else {
            Tags::default()
        },
    }
}

fn conforms(entities: Vec<Entity>, schema: &Declarations) -> bool {
    Entities::from_entities(entities, Some(schema.cedar())).is_ok()
}

/// Probe which shapes conform to `schema` (see [`Shapes`]).
pub(crate) fn probe_shapes(schema: &Declarations) -> Shapes {
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
