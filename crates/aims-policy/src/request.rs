//! The decision request on the wire: what callers build and send.
//!
//! This module owns [`DecisionRequest`] (principal agent, action, resource, context) and the
//! types it is made of, with their JSON form (serde, unknown fields refused). It only
//! describes a request: turning one into Cedar's entities, context and request is
//! [`crate::cedar_request`]'s job. The engine never reads a registry and never copies one:
//! callers pass the agent's and resource's attributes in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One question for the decision point: may this agent do this action on this resource now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// An id chosen by the caller (e.g. the audit event id), echoed in the [`crate::Decision`].
    /// The library never generates ids, so decisions are deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The agent making the request: shared, so a caller that keeps agents (a registry view)
    /// hands out its copy instead of cloning it per request.
    pub principal: Arc<Agent>,
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
    pub labels: Tags,
}

/// An agent's registry labels as its Cedar tags: key-value pairs sorted by key, each key once,
/// read and written as a JSON object. Held in one slice rather than a map because a registry
/// view keeps one per agent and a B-tree node is sized for eleven entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Box<[(String, String)]>);

impl Tags {
    /// The pairs, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Whether there is no tag.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeMap<String, String>> for Tags {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map.into_iter().collect())
    }
}

/// The pairs; of two with one key, the later one is kept, as a map's `insert` would.
impl FromIterator<(String, String)> for Tags {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        pairs.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl<const N: usize> From<[(String, String); N]> for Tags {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Self::from)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn tags_are_sorted_with_one_value_per_key_the_last_given() {
        let tags: Tags = [pair("team", "b"), pair("role", "coding"), pair("team", "a")].into();
        let held: Vec<_> = tags.iter().collect();
        assert_eq!(
            held,
            [
                (&"role".to_owned(), &"coding".to_owned()),
                (&"team".to_owned(), &"a".to_owned())
            ]
        );
        assert!(!tags.is_empty() && Tags::default().is_empty());
    }

    #[test]
    fn tags_are_a_json_object_both_ways() {
        let tags: Tags = [pair("team", "x"), pair("role", "y")].into();
        let json = serde_json::to_string(&tags).unwrap();
        assert_eq!(json, r#"{"role":"y","team":"x"}"#);
        assert_eq!(serde_json::from_str::<Tags>(&json).unwrap(), tags);
        assert!(serde_json::from_str::<Tags>(r#"[["role","y"]]"#).is_err());
        assert!(serde_json::from_str::<Tags>(r#"{"role":1}"#).is_err());
    }
}
