//! The policy index: which policies could apply to a request, found without evaluating the
//! others.
//!
//! Cedar evaluates every policy of a set on every request. This module owns the structure
//! that avoids it. Each policy's scope (`principal`, `action`, `resource` constraints) is
//! turned into index keys; a policy is filed under the keys of **one** of its constrained
//! scope parts (the one whose keys are rarest across the set), in a bucket that holds a
//! ready-made Cedar `PolicySet`. A request computes its own keys — the principal, its
//! ancestors and its type; the action and its groups; the resource, its ancestors and its
//! type — and evaluates only the buckets under those keys plus the bucket of policies with
//! an unconstrained scope.
//!
//! Soundness (the index skips only policies that cannot match):
//! - `== E` and `in E` are filed under `E`; a request looks up its entity **and every
//!   ancestor** in the request's entities, which are the same entities Cedar's `in` uses.
//! - `is T` is filed under `T`; `is T in E` under `E` or `T`; a request looks up its type.
//! - `action in [A, B]` is filed under each of `A`, `B`; the request's action and its
//!   groups (from the schema) are looked up.
//! - A policy with no constrained scope part is always a candidate.
//!
//! A skipped policy's scope is false for the request, and Cedar evaluates the scope before
//! the conditions (`&&` short-circuits), so a skipped policy can neither match nor error:
//! the decision and its diagnostics equal plain Cedar's on the full set. The differential
//! property test checks exactly that.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, PolicySet, PrincipalConstraint, ResourceConstraint,
};

use crate::compile::CompiledPolicy;
use crate::error::{CompileDiagnostic, PolicyError};

/// An index key: one value a scope constraint can be satisfied by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Principal(EntityUid),
    PrincipalType(EntityTypeName),
    Action(EntityUid),
    Resource(EntityUid),
    ResourceType(EntityTypeName),
}

/// A group of policies evaluated together.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) set: PolicySet,
    pub(crate) members: Vec<usize>,
    /// Some member may observe `context.approved`.
    pub(crate) reads_approval: bool,
    /// Some member is a `permit` that may observe `context.approved`.
    pub(crate) approval_permit: bool,
}

/// Keys of one request, ready for lookup.
#[derive(Debug)]
pub(crate) struct RequestKeys<'a> {
    pub(crate) principal: &'a EntityUid,
    pub(crate) principal_ancestors: Vec<&'a EntityUid>,
    pub(crate) action: &'a EntityUid,
    pub(crate) action_ancestors: &'a [EntityUid],
    pub(crate) resource: &'a EntityUid,
    pub(crate) resource_ancestors: Vec<&'a EntityUid>,
}

/// The index over a compiled policy set.
#[derive(Debug)]
pub(crate) struct Index {
    /// Bucket 0 holds the policies whose scope is unconstrained.
    buckets: Vec<Bucket>,
    by_key: HashMap<Key, usize>,
}

/// The ways one policy could be filed: each option is a set of keys (any one may match).
fn options(p: &CompiledPolicy) -> Vec<Vec<Key>> {
    let mut out = Vec::new();
    match p.policy.principal_constraint() {
        PrincipalConstraint::Any => {}
        PrincipalConstraint::Eq(e) | PrincipalConstraint::In(e) => {
            out.push(vec![Key::Principal(e)]);
        }
        PrincipalConstraint::Is(t) => out.push(vec![Key::PrincipalType(t)]),
        PrincipalConstraint::IsIn(t, e) => {
            out.push(vec![Key::Principal(e)]);
            out.push(vec![Key::PrincipalType(t)]);
        }
    }
    match p.policy.resource_constraint() {
        ResourceConstraint::Any => {}
        ResourceConstraint::Eq(e) | ResourceConstraint::In(e) => {
            out.push(vec![Key::Resource(e)]);
        }
        ResourceConstraint::Is(t) => out.push(vec![Key::ResourceType(t)]),
        ResourceConstraint::IsIn(t, e) => {
            out.push(vec![Key::Resource(e)]);
            out.push(vec![Key::ResourceType(t)]);
        }
    }
    match p.policy.action_constraint() {
        ActionConstraint::Any => {}
        ActionConstraint::Eq(a) => out.push(vec![Key::Action(a)]),
        // `action in []` matches nothing; it stays filed as unconstrained (harmless).
        ActionConstraint::In(list) if list.is_empty() => {}
        ActionConstraint::In(list) => out.push(list.into_iter().map(Key::Action).collect()),
    }
    out
}

impl Index {
    /// Build the index. Deterministic: the same policies give the same buckets.
    pub(crate) fn build(policies: &[CompiledPolicy]) -> Result<Self, PolicyError> {
        let all: Vec<Vec<Vec<Key>>> = policies.iter().map(options).collect();
        let mut freq: HashMap<&Key, usize> = HashMap::new();
        for opts in &all {
            for opt in opts {
                for k in opt {
                    *freq.entry(k).or_default() += 1;
                }
            }
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new()];
        let mut by_key: HashMap<Key, usize> = HashMap::new();
        for (i, opts) in all.iter().enumerate() {
            let cost = |opt: &Vec<Key>| -> usize {
                opt.iter().map(|k| freq.get(k).copied().unwrap_or(0)).sum()
            };
            // The first option with the lowest cost (ties: principal, resource, action).
            let best = opts.iter().fold(None::<&Vec<Key>>, |acc, o| match acc {
                Some(a) if cost(a) <= cost(o) => Some(a),
                _ => Some(o),
            });
            match best {
                None => {
                    if let Some(always) = members.first_mut() {
                        always.push(i);
                    }
                }
                Some(keys) => {
                    for k in keys {
                        let next = members.len();
                        let b = *by_key.entry(k.clone()).or_insert(next);
                        if b == next {
                            members.push(Vec::new());
                        }
                        if let Some(m) = members.get_mut(b) {
                            m.push(i);
                        }
                    }
                }
            }
        }
        let mut buckets = Vec::with_capacity(members.len());
        for m in members {
            let set = PolicySet::from_policies(
                m.iter()
                    .filter_map(|i| policies.get(*i))
                    .map(|p| p.policy.clone()),
            )
            .map_err(|e| PolicyError::Validation {
                diagnostics: vec![CompileDiagnostic {
                    location: None,
                    policy_id: None,
                    message: crate::error::render(&e),
                }],
            })?;
            let members = || m.iter().filter_map(|i| policies.get(*i));
            let reads_approval = members().any(|p| p.reads_approval);
            let approval_permit =
                members().any(|p| p.reads_approval && p.effect() == cedar_policy::Effect::Permit);
            buckets.push(Bucket {
                set,
                members: m,
                reads_approval,
                approval_permit,
            });
        }
        Ok(Self { buckets, by_key })
    }

    /// The buckets a request must evaluate, each once, in ascending order.
    pub(crate) fn candidates(&self, keys: &RequestKeys<'_>) -> Vec<&Bucket> {
        let mut ids: Vec<usize> = vec![0];
        let mut look = |k: Key| {
            if let Some(b) = self.by_key.get(&k) {
                ids.push(*b);
            }
        };
        look(Key::Principal(keys.principal.clone()));
        for a in &keys.principal_ancestors {
            look(Key::Principal((*a).clone()));
        }
        look(Key::PrincipalType(keys.principal.type_name().clone()));
        look(Key::Action(keys.action.clone()));
        for a in keys.action_ancestors {
            look(Key::Action(a.clone()));
        }
        look(Key::Resource(keys.resource.clone()));
        for a in &keys.resource_ancestors {
            look(Key::Resource((*a).clone()));
        }
        look(Key::ResourceType(keys.resource.type_name().clone()));
        ids.sort_unstable();
        ids.dedup();
        ids.iter().filter_map(|i| self.buckets.get(*i)).collect()
    }

    /// Number of buckets (for diagnostics and tests).
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{EntityId, Policy, PolicyId};

    use super::*;

    fn compiled(texts: &[&str]) -> Vec<CompiledPolicy> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| CompiledPolicy {
                id: format!("p{i}"),
                file: "t.cedar".to_owned(),
                policy: Policy::parse(Some(PolicyId::new(format!("p{i}"))), *t).unwrap(),
                reads_approval: true,
                max_token_ttl_s: None,
                approval: crate::approval::ApprovalTerms::default(),
            })
            .collect()
    }

    fn uid(ty: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(EntityTypeName::from_str(ty).unwrap(), EntityId::new(id))
    }

    fn members(index: &Index, keys: &RequestKeys<'_>) -> Vec<usize> {
        let mut m: Vec<usize> = index
            .candidates(keys)
            .iter()
            .flat_map(|b| b.members.iter().copied())
            .collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    #[test]
    fn candidates_follow_scope_keys_and_ancestors() {
        let policies = compiled(&[
            r#"permit(principal, action, resource);"#,
            r#"permit(principal == Aims::Agent::"a", action, resource);"#,
            r#"permit(principal in Aims::Team::"t", action, resource);"#,
            r#"permit(principal == Aims::Agent::"b", action, resource);"#,
            r#"permit(principal, action in [Aims::Action::"read_only"], resource);"#,
            r#"permit(principal, action, resource is Aims::Tool);"#,
            r#"permit(principal, action, resource in Aims::System::"s");"#,
            r#"permit(principal is Aims::Agent in Aims::Team::"t", action, resource);"#,
        ]);
        let index = Index::build(&policies).unwrap();
        let a = uid("Aims::Agent", "a");
        let team = uid("Aims::Team", "t");
        let read = uid("Aims::Action", "read");
        let group = [uid("Aims::Action", "read_only")];
        let tool = uid("Aims::Tool", "x");
        let sys = uid("Aims::System", "s");
        let keys = RequestKeys {
            principal: &a,
            principal_ancestors: vec![&team],
            action: &read,
            action_ancestors: &group,
            resource: &tool,
            resource_ancestors: vec![&sys],
        };
        assert_eq!(members(&index, &keys), [0, 1, 2, 4, 5, 6, 7]);
        // Without the ancestors, `in` policies are not candidates (p7, `is Agent in Team`,
        // is filed under its rarer key, the type, so it stays a candidate).
        let write = uid("Aims::Action", "write");
        let repo = uid("Aims::Resource", "r");
        let keys = RequestKeys {
            principal: &a,
            principal_ancestors: vec![],
            action: &write,
            action_ancestors: &[],
            resource: &repo,
            resource_ancestors: vec![],
        };
        assert_eq!(members(&index, &keys), [0, 1, 7]);
    }

    #[test]
    fn each_policy_is_filed_under_its_rarest_scope_part() {
        // Every policy names action `read`; each names its own agent: filed by agent.
        let policies = compiled(&[
            r#"permit(principal == Aims::Agent::"a", action == Aims::Action::"read", resource);"#,
            r#"permit(principal == Aims::Agent::"b", action == Aims::Action::"read", resource);"#,
            r#"permit(principal == Aims::Agent::"c", action == Aims::Action::"read", resource);"#,
        ]);
        let index = Index::build(&policies).unwrap();
        assert_eq!(index.bucket_count(), 4, "always-bucket + one per agent");
        let a = uid("Aims::Agent", "a");
        let read = uid("Aims::Action", "read");
        let r = uid("Aims::Resource", "r");
        let keys = RequestKeys {
            principal: &a,
            principal_ancestors: vec![],
            action: &read,
            action_ancestors: &[],
            resource: &r,
            resource_ancestors: vec![],
        };
        assert_eq!(members(&index, &keys), [0]);
    }
}
