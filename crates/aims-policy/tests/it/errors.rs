//! Error is deny, and the approval rule.

use aims_policy::cedar_policy::{Authorizer, Decision as CedarDecision};
use aims_policy::{Effect, Reason};

use crate::fixtures::{agent, engine, engine_unvalidated, object, request};

/// Overflows for any trust level of 2 or more (validates in strict mode).
const OVERFLOWING_FORBID: &str = r#"
@id("allow-read") permit(principal, action == Aims::Action::"read", resource);
@id("overflowing-forbid") forbid(principal, action, resource)
  when { principal.trust_level * 4611686018427387904 > 0 };
"#;

#[test]
fn an_erroring_forbid_never_yields_allow() {
    let e = engine(OVERFLOWING_FORBID);
    let r = request(agent("coder", &[]), "read", object("Resource", "repo"));
    let built = r.to_cedar(e.schema()).unwrap();
    // Plain Cedar skips the erroring forbid and allows.
    let plain = Authorizer::new().is_authorized(
        built.request_as_asked(),
        e.cedar_policy_set(),
        built.entities(),
    );
    assert_eq!(plain.decision(), CedarDecision::Allow);
    assert_eq!(plain.diagnostics().errors().count(), 1);
    // AIMS denies.
    let d = e.decide(&r).unwrap();
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.reason, Reason::EvaluationError);
    assert_eq!(d.determining_policies, ["overflowing-forbid"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].message.contains("overflow"), "{:?}", d.errors);
    assert_eq!(d.decision_id.as_deref(), Some("d-1"));
    // No overflow: the permit decides.
    let mut low = agent("coder", &[]);
    low.trust_level = 0;
    let d = e
        .decide(&request(low, "read", object("Resource", "repo")))
        .unwrap();
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.determining_policies, ["allow-read"]);
}

#[test]
fn an_erroring_permit_also_denies() {
    let e = engine_unvalidated(
        r#"
        @id("ok") permit(principal, action, resource);
        @id("missing-attr") permit(principal, action, resource)
          when { principal.posture.model_digest == "abc" };
        "#,
    );
    let d = e
        .decide(&request(agent("a", &[]), "read", object("Resource", "r")))
        .unwrap();
    assert_eq!(
        (d.effect, d.reason),
        (Effect::Deny, Reason::EvaluationError)
    );
    assert_eq!(d.determining_policies, ["missing-attr"]);
}

#[test]
fn an_erroring_policy_blocks_the_approval_path() {
    let e = engine(
        r#"
        @id("with-approval") permit(principal, action, resource) when { context.approved };
        @id("overflow") forbid(principal, action, resource)
          when { principal.trust_level * 4611686018427387904 > 0 };
        "#,
    );
    let d = e
        .decide(&request(agent("a", &[]), "read", object("Resource", "r")))
        .unwrap();
    assert_eq!(
        (d.effect, d.reason),
        (Effect::Deny, Reason::EvaluationError)
    );
}

#[test]
fn approval_required_when_only_approval_is_missing() {
    let e = engine(
        r#"
        @id("export-with-approval") permit(principal, action == Aims::Action::"delete", resource)
          when { context.approved };
        @id("gate") forbid(principal, action == Aims::Action::"write", resource)
          unless { context.approved };
        @id("write") permit(principal, action == Aims::Action::"write", resource);
        @id("never-prod") forbid(principal, action, resource) when { resource.environment == "prod" };
        "#,
    );
    let mut res = object("Resource", "r");
    res.environment = "dev".to_owned();
    for action in ["delete", "write"] {
        let mut r = request(agent("a", &[]), action, res.clone());
        let d = e.decide(&r).unwrap();
        assert_eq!(
            (d.effect, d.reason),
            (Effect::ApprovalRequired, Reason::NeedsApproval)
        );
        assert!(d.errors.is_empty());
        r.context.approved = true;
        assert_eq!(e.decide(&r).unwrap().effect, Effect::Allow, "{action}");
    }
    // A forbid that does not depend on approval wins: no approval path.
    let r = request(agent("a", &[]), "delete", object("Resource", "r"));
    let d = e.decide(&r).unwrap();
    assert_eq!((d.effect, d.reason), (Effect::Deny, Reason::Forbidden));
    assert_eq!(d.determining_policies, ["never-prod"]);
    // Nothing permits at all: plain deny.
    let d = e.decide(&request(agent("a", &[]), "read", res)).unwrap();
    assert_eq!((d.effect, d.reason), (Effect::Deny, Reason::NoPermit));
    assert!(d.determining_policies.is_empty());
}

#[test]
fn an_approval_required_decision_carries_its_policies_approval_terms() {
    let e = engine(
        r#"
        @id("export") @approvers("security, sre") @approval_ttl_s("600") @four_eyes
        permit(principal, action == Aims::Action::"delete", resource) when { context.approved };
        @id("export-too") @approvers("sre") @approval_uses("3")
        permit(principal, action == Aims::Action::"delete", resource) when { context.approved };
        @id("read") permit(principal, action == Aims::Action::"read", resource);
        "#,
    );
    let d = e
        .decide(&request(agent("a", &[]), "delete", object("Resource", "r")))
        .unwrap();
    assert_eq!(d.effect, Effect::ApprovalRequired);
    let terms = e.approval_terms(&d).unwrap();
    assert_eq!(
        terms.approvers,
        Some(std::collections::BTreeSet::from(["sre".to_owned()]))
    );
    assert_eq!(
        (terms.ttl_s, terms.uses, terms.four_eyes),
        (Some(600), 1, true)
    );
    assert!(!terms.show_arguments);
    // Only an approval_required decision has terms.
    let allowed = e
        .decide(&request(agent("a", &[]), "read", object("Resource", "r")))
        .unwrap();
    assert_eq!(e.approval_terms(&allowed), None);
}

#[test]
fn malformed_approval_annotations_fail_compilation() {
    let sources = [aims_policy::PolicySource::new(
        "bad.cedar",
        r#"@id("bad") @approval_ttl_s("forever") permit(principal, action, resource);"#,
    )];
    let err = aims_policy::Engine::compile(
        aims_policy::Schema::aims().unwrap(),
        &sources,
        aims_policy::Validation::Strict,
    )
    .unwrap_err();
    assert!(err.to_string().contains("approval_ttl_s"), "{err}");
}

#[test]
fn batch_answers_each_request_in_order() {
    let e = engine(r#"permit(principal, action == Aims::Action::"read", resource);"#);
    let reqs = vec![
        request(agent("a", &[]), "read", object("Resource", "r")),
        request(agent("a", &[]), "write", object("Resource", "r")),
        request(agent("a", &[]), "nope", object("Resource", "r")),
    ];
    let out = e.decide_batch(&reqs);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ref().unwrap().effect, Effect::Allow);
    assert_eq!(out[1].as_ref().unwrap().effect, Effect::Deny);
    assert!(out[2].is_err());
}

#[test]
fn decisions_serialize_with_snake_case_effects() {
    let e = engine(r#"permit(principal, action, resource) when { context.approved };"#);
    let d = e
        .decide(&request(agent("a", &[]), "read", object("Resource", "r")))
        .unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["effect"], "approval_required");
    assert_eq!(json["reason"], "needs_approval");
    assert_eq!(json["decision_id"], "d-1");
}

#[test]
fn the_strictest_determining_permit_caps_token_lifetimes() {
    let e = engine(
        r#"
@id("read-any") @max_token_ttl_s("600") permit(principal, action == Aims::Action::"read", resource);
@id("coder-read") @max_token_ttl_s("120") permit(principal == Aims::Agent::"coder", action == Aims::Action::"read", resource);
@id("write-any") permit(principal, action == Aims::Action::"write", resource);
"#,
    );
    let read = |who: &str| {
        e.decide(&request(
            agent(who, &[]),
            "read",
            object("Resource", "repo"),
        ))
        .unwrap()
    };
    assert_eq!(e.token_lifetime_limit_s(&read("coder")), Some(120));
    assert_eq!(e.token_lifetime_limit_s(&read("tester")), Some(600));
    let write = e
        .decide(&request(
            agent("coder", &[]),
            "write",
            object("Resource", "repo"),
        ))
        .unwrap();
    assert!(write.is_allowed());
    assert_eq!(e.token_lifetime_limit_s(&write), None);
}
