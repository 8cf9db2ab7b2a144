//! `explain`: which policies were candidates, matched, or skipped, and why.

use aims_policy::{Effect, PolicyOutcome};

use crate::fixtures::{agent, engine_unvalidated, object, request};

#[test]
fn explain_reports_each_candidate_and_the_index_skips() {
    let e = engine_unvalidated(
        r#"
        @id("match") permit(principal == Aims::Agent::"a", action == Aims::Action::"read", resource);
        @id("cond-false") permit(principal == Aims::Agent::"a", action, resource) when { principal.trust_level > 100 };
        @id("wrong-action") permit(principal == Aims::Agent::"a", action == Aims::Action::"write", resource);
        @id("errors") forbid(principal, action, resource) when { principal.posture.model_digest == "x" };
        @id("other-agent") permit(principal == Aims::Agent::"b", action, resource);
        @id("w2") permit(principal, action == Aims::Action::"write", resource == Aims::Resource::"q1");
        @id("w3") permit(principal, action == Aims::Action::"write", resource == Aims::Resource::"q2");
        @id("other-resource") permit(principal, action, resource == Aims::Resource::"elsewhere");
        "#,
    );
    let x = e
        .explain(&request(agent("a", &[]), "read", object("Resource", "r")))
        .unwrap();
    assert_eq!(x.decision.effect, Effect::Deny);
    let outcome = |id: &str| {
        x.candidates
            .iter()
            .find(|c| c.policy_id == id)
            .map(|c| c.outcome.clone())
    };
    assert_eq!(outcome("match"), Some(PolicyOutcome::Matched));
    assert_eq!(outcome("cond-false"), Some(PolicyOutcome::ConditionFalse));
    assert_eq!(
        outcome("wrong-action"),
        Some(PolicyOutcome::ScopeMismatch {
            part: "action".to_owned()
        })
    );
    assert!(matches!(
        outcome("errors"),
        Some(PolicyOutcome::Errored { .. })
    ));
    assert!(x.skipped_by_index.contains(&"other-agent".to_owned()));
    assert!(x.skipped_by_index.contains(&"other-resource".to_owned()));
    assert_eq!(x.candidates.len() + x.skipped_by_index.len(), e.len());
    let json = serde_json::to_value(&x).unwrap();
    assert_eq!(json["candidates"][0]["status"], "matched");
}
