//! Differential property test: the indexed engine decides exactly as plain Cedar does on the
//! full policy set, except where AIMS's error-is-deny and approval rules say otherwise — and
//! then exactly as those rules say.
//!
//! Policies are generated with every scope form (`==`, `in` an owner/team/system/resource/
//! action group, `is`, `is … in`, unconstrained, `action in [..]`) and conditions that can
//! error at run time (a missing optional attribute, a missing tag, a missing argument, an
//! attribute the resource type lacks, integer overflow). They are compiled without
//! validation, so those errors are reachable.
//!
//! A second property holds the engine to itself: a request decided with its principal's entity
//! built once and shared (`PrincipalEntity`) gets exactly the answer it gets with the entity
//! built per request.

use std::collections::{BTreeMap, BTreeSet};

use aims_policy::cedar_policy::{Authorizer, Decision as CedarDecision, Entities, Response};
use aims_policy::{
    Agent, DecisionRequest, Effect, Engine, EntityRef, PolicySource, PrincipalEntity, Reason,
    Resource, ResourceObject, Schema, Validation,
};
use proptest::prelude::*;

use crate::fixtures::{agent, context};

const AGENTS: &[&str] = &["a0", "a1", "a2", "a3"];
const TEAMS: &[&str] = &["t0", "t1"];
const OWNERS: &[&str] = &["o0", "o1"];
const SYSTEMS: &[&str] = &["s0", "s1"];
const RESOURCES: &[&str] = &["r0", "r1", "r2"];
/// (action, resource type)
const ACTIONS: &[(&str, &str)] = &[
    ("read", "Resource"),
    ("query", "Resource"),
    ("write", "Resource"),
    ("delete", "Resource"),
    ("call_tool", "Tool"),
    ("retrieve_secret", "Secret"),
    ("export_secret", "Secret"),
    ("obtain", "Scope"),
    ("delegate", "Agent"),
];
const GROUPS: &[&str] = &["read_only", "mutate", "secret_access"];

fn pick(xs: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(xs)
}

fn principal_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("principal".to_owned()),
        pick(AGENTS).prop_map(|a| format!("principal == Aims::Agent::\"{a}\"")),
        pick(TEAMS).prop_map(|t| format!("principal in Aims::Team::\"{t}\"")),
        pick(OWNERS).prop_map(|o| format!("principal in Aims::Owner::\"{o}\"")),
        pick(AGENTS).prop_map(|a| format!("principal in Aims::Agent::\"{a}\"")),
        Just("principal is Aims::Agent".to_owned()),
        pick(TEAMS).prop_map(|t| format!("principal is Aims::Agent in Aims::Team::\"{t}\"")),
    ]
}

fn action_uid(a: &str) -> String {
    format!("Aims::Action::\"{a}\"")
}

fn action_scope() -> impl Strategy<Value = String> {
    let names: Vec<&str> = ACTIONS.iter().map(|(a, _)| *a).collect();
    let names2 = names.clone();
    prop_oneof![
        Just("action".to_owned()),
        proptest::sample::select(names).prop_map(|a| format!("action == {}", action_uid(a))),
        proptest::sample::subsequence(names2, 1..3).prop_map(|v| format!(
            "action in [{}]",
            v.iter()
                .map(|a| action_uid(a))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        pick(GROUPS).prop_map(|g| format!("action in {}", action_uid(g))),
        (pick(GROUPS), pick(&["read", "write"])).prop_map(|(g, a)| format!(
            "action in [{}, {}]",
            action_uid(g),
            action_uid(a)
        )),
    ]
}

fn resource_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("resource".to_owned()),
        pick(RESOURCES).prop_map(|r| format!("resource == Aims::Resource::\"{r}\"")),
        pick(RESOURCES).prop_map(|r| format!("resource in Aims::Resource::\"{r}\"")),
        pick(SYSTEMS).prop_map(|s| format!("resource in Aims::System::\"{s}\"")),
        pick(&["Tool", "Secret", "Resource", "Agent", "Scope"])
            .prop_map(|t| format!("resource is Aims::{t}")),
        pick(SYSTEMS).prop_map(|s| format!("resource is Aims::Secret in Aims::System::\"{s}\"")),
        pick(AGENTS).prop_map(|a| format!("resource == Aims::Agent::\"{a}\"")),
        pick(TEAMS).prop_map(|t| format!("resource in Aims::Team::\"{t}\"")),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_owned()),
        (-2i64..4).prop_map(|n| format!("principal.trust_level > {n}")),
        (0i64..120).prop_map(|n| format!("context.posture_age_s <= {n}")),
        Just("context.approved".to_owned()),
        Just("resource.environment == \"prod\"".to_owned()),
        // Errors when the resource is an agent (no `sensitivity`).
        Just("resource.sensitivity == \"secret\"".to_owned()),
        // Errors when the optional attribute is absent.
        Just("principal.posture.model_digest == \"d1\"".to_owned()),
        Just(
            "principal.posture has model_digest && principal.posture.model_digest == \"d1\""
                .to_owned()
        ),
        // Overflows when |trust_level| >= 2.
        Just("principal.trust_level * 4611686018427387904 > 0".to_owned()),
        // Errors when the tag is absent.
        Just("principal.getTag(\"role\") == \"ops\"".to_owned()),
        Just("principal.hasTag(\"role\")".to_owned()),
        // Errors when the argument is absent.
        Just("context.arguments.branch == \"main\"".to_owned()),
        pick(TEAMS).prop_map(|t| format!("principal in Aims::Team::\"{t}\"")),
        pick(RESOURCES).prop_map(|r| format!("resource in Aims::Resource::\"{r}\"")),
    ]
}

fn clause() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        condition().prop_map(|c| format!(" when {{ {c} }}")),
        condition().prop_map(|c| format!(" unless {{ {c} }}")),
        (condition(), condition()).prop_map(|(a, b)| format!(" when {{ {a} && {b} }}")),
        (condition(), condition()).prop_map(|(a, b)| format!(" when {{ {a} || {b} }}")),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    (
        prop_oneof![3 => Just("permit"), 1 => Just("forbid")],
        principal_scope(),
        action_scope(),
        resource_scope(),
        clause(),
    )
        .prop_map(|(effect, p, a, r, c)| format!("{effect}({p}, {a}, {r}){c};"))
}

fn gen_agent() -> impl Strategy<Value = Agent> {
    (
        pick(AGENTS),
        pick(OWNERS),
        proptest::sample::subsequence(TEAMS.to_vec(), 0..=2),
        -3i64..4,
        proptest::option::of(pick(&["d1", "d2"])),
        proptest::option::of(pick(&["ops", "dev"])),
    )
        .prop_map(|(name, owner, teams, trust, digest, role)| {
            let mut a = agent(name, &teams);
            a.owner = owner.to_owned();
            a.trust_level = trust;
            a.posture.model_digest = digest.map(str::to_owned);
            if let Some(role) = role {
                a.labels = [("role".to_owned(), role.to_owned())].into();
            }
            a
        })
}

fn gen_request() -> impl Strategy<Value = DecisionRequest> {
    (
        gen_agent(),
        proptest::sample::select(ACTIONS),
        gen_agent(),
        pick(RESOURCES),
        pick(SYSTEMS),
        proptest::option::of(pick(RESOURCES)),
        pick(&["prod", "dev"]),
        0i64..120,
        any::<bool>(),
        proptest::option::of(pick(&["main", "dev"])),
    )
        .prop_map(
            |(
                principal,
                (action, rtype),
                target,
                rid,
                system,
                parent,
                env,
                age,
                approved,
                branch,
            )| {
                let resource = if rtype == "Agent" {
                    Resource::Agent(target)
                } else {
                    Resource::Object(ResourceObject {
                        entity_type: rtype.to_owned(),
                        id: rid.to_owned(),
                        system: system.to_owned(),
                        environment: env.to_owned(),
                        sensitivity: "secret".to_owned(),
                        kind: "k".to_owned(),
                        labels: BTreeMap::new(),
                        parents: match parent {
                            Some(p) if rtype == "Resource" && p != rid => vec![EntityRef {
                                entity_type: "Resource".to_owned(),
                                id: p.to_owned(),
                            }],
                            _ => Vec::new(),
                        },
                    })
                };
                let mut ctx = context();
                ctx.posture_age_s = age;
                ctx.approved = approved;
                if let Some(b) = branch {
                    ctx.arguments
                        .insert("branch".to_owned(), serde_json::json!(b));
                }
                DecisionRequest {
                    decision_id: None,
                    principal: principal.into(),
                    action: action.to_owned(),
                    resource,
                    context: ctx,
                }
            },
        )
}

fn ids<'a>(it: impl Iterator<Item = &'a aims_policy::cedar_policy::PolicyId>) -> Vec<String> {
    it.map(ToString::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn error_ids(r: &Response) -> Vec<String> {
    r.diagnostics()
        .errors()
        .map(|e| {
            let aims_policy::cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            pe.policy_id().to_string()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The generated policies, numbered `p0`, `p1`, ..., compiled without validation.
fn generated_engine(policies: &[String]) -> Engine {
    let text: String = policies
        .iter()
        .enumerate()
        .map(|(i, p)| format!("@id(\"p{i}\")\n{p}\n"))
        .collect();
    Engine::compile(
        Schema::aims().unwrap(),
        &[PolicySource::new("gen.cedar", text)],
        Validation::Skip,
    )
    .unwrap()
}

fn check(engine: &Engine, req: &DecisionRequest) -> Result<(), TestCaseError> {
    let schema = engine.schema();
    let built = match req.to_cedar(schema) {
        Ok(b) => b,
        // A self-delegation with different attributes: refused, never decided.
        Err(_) => return Ok(()),
    };
    // The fast path (shapes proven at load) admits only what Cedar's own schema checks admit.
    let non_action: Vec<_> = built
        .entities()
        .iter()
        .filter(|e| e.uid().type_name().basename() != "Action")
        .cloned()
        .collect();
    prop_assert!(Entities::from_entities(non_action, Some(schema.cedar())).is_ok());
    let asked = built.request_as_asked();
    prop_assert!(
        aims_policy::cedar_policy::Request::new(
            asked.principal().unwrap().clone(),
            asked.action().unwrap().clone(),
            asked.resource().unwrap().clone(),
            asked.context().unwrap().clone(),
            Some(schema.cedar()),
        )
        .is_ok()
    );
    let authorizer = Authorizer::new();
    let plain = authorizer.is_authorized(
        built.request_as_asked(),
        engine.cedar_policy_set(),
        built.entities(),
    );
    let ours = engine.decide_built(&built, None).unwrap();
    let plain_errors = error_ids(&plain);
    let ours_errors: Vec<String> = ours.errors.iter().map(|e| e.policy_id.clone()).collect();
    prop_assert_eq!(&ours_errors, &plain_errors, "error sets differ");
    if !plain_errors.is_empty() {
        // Documented difference: any error is a deny, whatever plain Cedar decided.
        prop_assert_eq!(ours.effect, Effect::Deny);
        prop_assert_eq!(ours.reason, Reason::EvaluationError);
        prop_assert_eq!(&ours.determining_policies, &plain_errors);
        return Ok(());
    }
    let reasons = ids(plain.diagnostics().reason());
    match plain.decision() {
        CedarDecision::Allow => {
            prop_assert_eq!(ours.effect, Effect::Allow);
            prop_assert_eq!(&ours.determining_policies, &reasons);
        }
        CedarDecision::Deny => {
            // Documented difference: deny as asked, clean allow once approved.
            let approved = authorizer.is_authorized(
                &built.with_approved(true).unwrap(),
                engine.cedar_policy_set(),
                built.entities(),
            );
            let approvable = !req.context.approved
                && approved.decision() == CedarDecision::Allow
                && approved.diagnostics().errors().next().is_none();
            if approvable {
                prop_assert_eq!(ours.effect, Effect::ApprovalRequired);
                prop_assert_eq!(
                    &ours.determining_policies,
                    &ids(approved.diagnostics().reason())
                );
            } else {
                prop_assert_eq!(ours.effect, Effect::Deny);
                prop_assert_eq!(&ours.determining_policies, &reasons);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn indexed_engine_decides_like_plain_cedar(
        policies in proptest::collection::vec(policy(), 0..40),
        requests in proptest::collection::vec(gen_request(), 1..12),
    ) {
        let engine = generated_engine(&policies);
        for req in &requests {
            check(&engine, req)?;
        }
    }
}

/// The generators do reach every interesting outcome (guards against a vacuous test).
#[test]
fn generators_cover_errors_allows_and_approvals() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let policies = proptest::collection::vec(policy(), 5..30)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let engine = generated_engine(&policies);
        for _ in 0..10 {
            let req = gen_request().new_tree(&mut runner).unwrap().current();
            if let Ok(d) = engine.decide(&req) {
                seen.insert(format!("{:?}", d.reason));
                if d.evaluated_policies < engine.len() {
                    seen.insert("pruned".to_owned());
                }
            }
        }
    }
    for want in [
        "Permitted",
        "Forbidden",
        "NoPermit",
        "EvaluationError",
        "NeedsApproval",
    ] {
        assert!(seen.contains(want), "never saw {want}: {seen:?}");
    }
}

/// The same request decided with the principal's entity built once and shared
/// ([`PrincipalEntity`]) and built per request: the same Cedar request and entities, the same
/// decision with the same diagnostics, or the same error. A principal built from another agent
/// or against another parse of the schema is not used, and the answer is still the same.
fn check_reuse(
    engine: &Engine,
    req: &DecisionRequest,
    other: &Agent,
    other_schema: &Schema,
) -> Result<(), TestCaseError> {
    let schema = engine.schema();
    let per_request = engine.decide(req).map_err(|e| e.to_string());
    let Ok(principal) = PrincipalEntity::new(req.principal.clone(), schema) else {
        // The principal does not conform: no prebuilt entity, and the request is refused.
        prop_assert!(per_request.is_err());
        return Ok(());
    };
    prop_assert!(principal.is_for(schema));
    match (req.to_cedar(schema), req.to_cedar_as(&principal, schema)) {
        (Ok(fresh), Ok(reused)) => {
            prop_assert!(fresh.entities().deep_eq(reused.entities()));
            prop_assert_eq!(
                fresh.request_as_asked().to_string(),
                reused.request_as_asked().to_string()
            );
        }
        (Err(fresh), Err(reused)) => prop_assert_eq!(fresh.to_string(), reused.to_string()),
        (fresh, reused) => prop_assert!(false, "built {fresh:?} but reused {reused:?}"),
    }
    let reused = engine.decide_as(&principal, req).map_err(|e| e.to_string());
    prop_assert_eq!(&reused, &per_request);
    // Another agent's entity is not used for this request.
    let foreign = PrincipalEntity::new(other.clone(), schema).unwrap();
    let answer = engine.decide_as(&foreign, req).map_err(|e| e.to_string());
    prop_assert_eq!(&answer, &per_request);
    // Nor one built against another parse of the same schema text.
    let elsewhere = PrincipalEntity::new(req.principal.clone(), other_schema).unwrap();
    prop_assert!(!elsewhere.is_for(schema));
    let answer = engine.decide_as(&elsewhere, req).map_err(|e| e.to_string());
    prop_assert_eq!(&answer, &per_request);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn reused_principal_decides_like_one_built_per_request(
        policies in proptest::collection::vec(policy(), 0..40),
        requests in proptest::collection::vec(gen_request(), 1..12),
        other in gen_agent(),
    ) {
        let engine = generated_engine(&policies);
        let other_schema = Schema::aims().unwrap();
        for req in &requests {
            check_reuse(&engine, req, &other, &other_schema)?;
        }
        // A batch shares each agent's entity between its consecutive requests.
        let one_by_one: Vec<_> = requests
            .iter()
            .map(|r| engine.decide(r).map_err(|e| e.to_string()))
            .collect();
        let batch: Vec<_> = engine
            .decide_batch(&requests)
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        prop_assert_eq!(batch, one_by_one);
    }
}

/// A schema where a team is also a resource inside a system, so a request's resource can be
/// one of its principal's parents.
const TEAM_RESOURCE_SCHEMA: &str = r#"
namespace Aims {
  entity System;
  entity Team in [System] = {
    system: String, environment: String, sensitivity: String, kind: String,
  } tags String;
  entity Owner in [Team];
  type Toolchain = { framework: String, version: String, manifest_digest?: String };
  type Posture = {
    identity_verified: Bool, runtime_checks_passed: Bool,
    model_digest?: String, image_digest?: String,
  };
  entity Agent in [Owner, Team] = {
    name: String, spiffe_id: String, owner: String, environment: String, state: String,
    trust_level: Long, model: String, toolchain: Toolchain, posture: Posture,
  } tags String;
  type Arguments = { branch?: String };
  type RequestContext = {
    time: datetime, posture_age_s: Long, task_id: String, intent: String,
    delegation_depth: Long, delegation_chain: Set<String>, approved: Bool,
    environment: String, source_ip: ipaddr, arguments: Arguments,
  };
  action read appliesTo { principal: [Agent], resource: [Team], context: RequestContext };
}
"#;

/// The cases the generators avoid: a resource that is its own parent (a cycle Cedar refuses),
/// and a resource that is one of the principal's parents, so the principal's ancestors grow
/// with the resource's (the shared principal's closure is repaired, not reused as built).
#[test]
fn reused_principal_refuses_and_closes_like_one_built_per_request() {
    let principal = agent("a0", &["t0"]);
    let engine = Engine::compile(
        Schema::aims().unwrap(),
        &[PolicySource::new(
            "p.cedar",
            "@id(\"sys\")\npermit(principal, action, resource in Aims::System::\"s0\");",
        )],
        Validation::Skip,
    )
    .unwrap();
    let prebuilt = PrincipalEntity::new(principal.clone(), engine.schema()).unwrap();
    let cyclic = ResourceObject {
        entity_type: "Resource".to_owned(),
        id: "r0".to_owned(),
        system: "s0".to_owned(),
        environment: "prod".to_owned(),
        sensitivity: "internal".to_owned(),
        kind: "k".to_owned(),
        labels: BTreeMap::new(),
        parents: vec![EntityRef {
            entity_type: "Resource".to_owned(),
            id: "r0".to_owned(),
        }],
    };
    let mut req = DecisionRequest {
        decision_id: None,
        principal: principal.into(),
        action: "read".to_owned(),
        resource: Resource::Object(cyclic),
        context: context(),
    };
    let fresh = engine.decide(&req).unwrap_err().to_string();
    let reused = engine.decide_as(&prebuilt, &req).unwrap_err().to_string();
    assert_eq!(fresh, reused);
    assert!(fresh.contains("transitive closure"), "{fresh}");

    let engine = Engine::compile(
        Schema::parse("team.cedarschema", TEAM_RESOURCE_SCHEMA).unwrap(),
        &[PolicySource::new(
            "p.cedar",
            "@id(\"in-s0\")\npermit(principal in Aims::System::\"s0\", action, resource);",
        )],
        Validation::Strict,
    )
    .unwrap();
    let schema = engine.schema();
    let prebuilt = PrincipalEntity::new(req.principal.clone(), schema).unwrap();
    req.resource = Resource::Object(ResourceObject {
        entity_type: "Team".to_owned(),
        id: "t0".to_owned(),
        system: "s0".to_owned(),
        environment: "prod".to_owned(),
        sensitivity: "internal".to_owned(),
        kind: "team".to_owned(),
        labels: BTreeMap::new(),
        parents: Vec::new(),
    });
    let fresh = req.to_cedar(schema).unwrap();
    let reused = req.to_cedar_as(&prebuilt, schema).unwrap();
    assert!(fresh.entities().deep_eq(reused.entities()));
    let fresh = engine.decide(&req).unwrap();
    assert_eq!(fresh.effect, Effect::Allow, "{fresh:?}");
    assert_eq!(engine.decide_as(&prebuilt, &req).unwrap(), fresh);
}
