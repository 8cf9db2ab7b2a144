//! The report's rules on made-up facts: each kind found where it should be and not elsewhere.

use aims_api::report::Nhi;
use aims_core::audit::Actor;
use aims_core::id::UserName;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);
const TD: &str = "acme.example";

fn spiffe(name: &str) -> String {
    format!("spiffe://{TD}/agent/{name}")
}

fn agent(name: &str, owner: &str) -> AgentFacts {
    let agent = Agent {
        name: name.parse().unwrap(),
        owner: owner.parse().unwrap(),
        environment: "prod".parse().unwrap(),
        description: String::new(),
        posture_profile: Default::default(),
        limits: Default::default(),
        labels: Default::default(),
        state: LifecycleState::Active,
        created_at: NOW - Duration::days(100),
        updated_at: NOW - Duration::days(100),
        recertify_by: NOW + Duration::days(30),
        revision: 1,
    };
    AgentFacts {
        agent,
        last_seen: Some(NOW - Duration::days(1)),
        live_credentials: BTreeMap::new(),
    }
}

fn facts(agents: Vec<AgentFacts>) -> Facts {
    Facts {
        now: NOW,
        window_days: 30,
        agents,
        agents_truncated: false,
        users: ["alice".to_owned()].into(),
        secrets: Vec::new(),
        sightings: Vec::new(),
        audience_environments: BTreeMap::new(),
    }
}

fn event(action_name: &str, agent: &str) -> AuditEvent {
    let mut e = AuditEvent::new(
        NOW - Duration::days(2),
        Actor::System,
        action_name,
        Outcome::Success,
    );
    e.agent = Some(spiffe(agent));
    e
}

fn exchanged(agent: &str, token: &str, scope: &str, audience: &str) -> AuditEvent {
    let mut e = event(action::TOKEN_EXCHANGE, agent);
    e.token_id = Some(token.to_owned());
    e.parent_token_id = Some("svid-1".to_owned());
    e.resource = Some(audience.to_owned());
    e.details = json!({ "scope": scope });
    e
}

fn delegated(from: &str, to: &str, token: &str, parent: &str, scope: &str) -> AuditEvent {
    let mut e = event(action::TOKEN_DELEGATE, from);
    e.token_id = Some(token.to_owned());
    e.parent_token_id = Some(parent.to_owned());
    e.resource = Some("https://tools.example".to_owned());
    e.details = json!({ "scope": scope, "delegate": spiffe(to) });
    e
}

fn decided(agent: &str, token: &str, call: &str, decision: &str) -> AuditEvent {
    let mut e = event(action::DECISION, agent);
    e.token_id = Some(token.to_owned());
    e.resource = Some(call.to_owned());
    e.decision = Some(decision.to_owned());
    e.details = json!({ "preview": false });
    e
}

fn tally(events: &[AuditEvent]) -> Tally {
    let mut tally = Tally::new(TD.parse().unwrap());
    for e in events {
        tally.add(e);
    }
    tally
}

fn of_kind(report: &GovernanceReport, kind: FindingKind) -> Vec<&Finding> {
    report.findings.iter().filter(|f| f.kind == kind).collect()
}

fn subjects(report: &GovernanceReport, kind: FindingKind) -> Vec<String> {
    of_kind(report, kind)
        .iter()
        .map(|f| f.subject.clone())
        .collect()
}

#[test]
fn a_healthy_agent_has_no_finding_and_every_kind_is_summarized() {
    let report = findings(&facts(vec![agent("fine", "alice")]), &tally(&[]));
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.summary.len(), FindingKind::ALL.len());
    assert!(report.summary.iter().all(|k| k.count == 0));
    assert_eq!(report.window_start, NOW - Duration::days(30));
    assert!(!report.not_covered.is_empty());
}

#[test]
fn registry_findings_name_their_owasp_item() {
    let mut old = agent("old", "alice");
    old.agent.recertify_by = NOW - Duration::days(3);
    let mut idle = agent("idle", "alice");
    idle.last_seen = Some(NOW - Duration::days(31));
    let mut never = agent("never", "alice");
    never.last_seen = None;
    let orphan = agent("orphan", "bob@acme.example");
    let mut bearer = agent("legacy", "alice");
    bearer.agent.limits.allow_bearer = true;
    // A decommissioned agent is offboarded already: nothing to say about it.
    let mut gone = agent("gone", "nobody");
    gone.agent.state = LifecycleState::Decommissioned;
    gone.last_seen = None;
    gone.agent.recertify_by = NOW - Duration::days(3);
    let report = findings(
        &facts(vec![old, idle, never, orphan, bearer, gone]),
        &tally(&[]),
    );
    assert_eq!(subjects(&report, FindingKind::PastRecertification), ["old"]);
    assert_eq!(subjects(&report, FindingKind::Inactive), ["idle", "never"]);
    assert_eq!(subjects(&report, FindingKind::UnknownOwner), ["orphan"]);
    assert_eq!(subjects(&report, FindingKind::BearerAllowed), ["legacy"]);
    let past = of_kind(&report, FindingKind::PastRecertification)[0];
    assert_eq!(
        (past.nhi, past.nhi_title.as_str()),
        (Nhi::ImproperOffboarding, "Improper Offboarding")
    );
    assert_eq!(past.evidence["days_overdue"], 3);
    assert_eq!(
        of_kind(&report, FindingKind::BearerAllowed)[0].nhi,
        Nhi::InsecureAuthentication
    );
    assert_eq!(
        of_kind(&report, FindingKind::Inactive)[1].evidence["last_seen"],
        Value::Null
    );
}

#[test]
fn scopes_used_directly_or_through_a_delegation_are_not_reported() {
    let events = [
        exchanged(
            "planner",
            "t1",
            "read:repo/acme/* write:repo/acme/app deploy:prod",
            "https://tools.example",
        ),
        // The planner itself calls nothing; it delegates reading one repository.
        delegated("planner", "executor", "t2", "t1", "read:repo/acme/app"),
        decided("executor", "t2", "read Resource::repo/acme/app", "allow"),
        // A denied call does not use a scope.
        decided("planner", "t1", "write Resource::repo/acme/app", "deny"),
    ];
    let report = findings(
        &facts(vec![agent("planner", "alice"), agent("executor", "alice")]),
        &tally(&events),
    );
    let unused = of_kind(&report, FindingKind::UnusedScope);
    assert_eq!(unused.len(), 1, "{unused:?}");
    assert_eq!(unused[0].subject, "planner");
    assert_eq!(unused[0].nhi, Nhi::Overprivileged);
    assert_eq!(
        unused[0].evidence["unused"],
        json!(["deploy:prod", "write:repo/acme/app"])
    );
    assert_eq!(unused[0].evidence["used"], json!(["read:repo/acme/*"]));
}

#[test]
fn an_id_holding_the_separator_matches_any_split() {
    let scope = Scope::parse("read:a/b").unwrap();
    assert!(permits(&scope, "read", "Aims::Resource::a/b"));
    assert!(permits(&scope, "read", "Resource::a/b"));
    assert!(!permits(&scope, "read", "Resource::a/c"));
    assert!(!permits(&scope, "write", "Resource::a/b"));
    assert!(!permits(&scope, "read", "a/b"));
}

#[test]
fn denial_rates_are_judged_from_enough_decisions() {
    let mut events = Vec::new();
    for i in 0..4 {
        let answer = if i == 0 { "deny" } else { "allow" };
        events.push(decided("busy", "t", "read Resource::x", answer));
        events.push(decided("few", "t", "read Resource::x", "deny"));
    }
    // Four of five denied; a preview is not a call.
    events.push(decided("busy", "t", "read Resource::x", "deny"));
    let mut preview = decided("busy", "t", "read Resource::x", "deny");
    preview.details = json!({ "preview": true });
    events.push(preview);
    for _ in 0..4 {
        events.push(decided("picky", "t", "read Resource::x", "deny"));
    }
    events.push(decided(
        "picky",
        "t",
        "read Resource::x",
        "approval_required",
    ));
    let report = findings(&facts(vec![]), &tally(&events));
    // busy: 2 of 5 denied (40%); few: 4 of 4 but too few; picky: 4 of 5.
    assert_eq!(
        subjects(&report, FindingKind::HighDenialRate),
        ["busy", "picky"]
    );
    let picky = report
        .decisions
        .iter()
        .find(|d| d.agent == "picky")
        .unwrap();
    assert_eq!(
        (
            picky.agent.as_str(),
            picky.total,
            picky.denied,
            picky.approval_required
        ),
        ("picky", 5, 4, 1)
    );
}

#[test]
fn quarantines_environments_secrets_and_sightings() {
    let mut drift = event(action::POSTURE_DRIFT, "drifted");
    drift.outcome = Outcome::Denied;
    drift.details = json!({ "mismatches": [{ "field": "model.digest", "kind": "changed" }] });
    let events = [
        drift,
        exchanged("roamer", "t1", "read:x", "https://staging.example"),
        exchanged("roamer", "t2", "read:x", "https://prod.example"),
        // Another trust domain's agent is not ours to judge.
        {
            let mut e = exchanged("roamer", "t3", "read:x", "https://staging.example");
            e.agent = Some("spiffe://other.example/agent/roamer".to_owned());
            e
        },
    ];
    let mut f = facts(vec![agent("drifted", "alice"), agent("roamer", "alice")]);
    f.audience_environments = [
        ("https://staging.example".to_owned(), "staging".to_owned()),
        ("https://prod.example".to_owned(), "prod".to_owned()),
    ]
    .into();
    let secret = |name: &str, period_days: Option<u64>, rotated_days_ago: i64| Secret {
        name: name.parse().unwrap(),
        version: 3,
        description: None,
        readers: vec!["gateway".parse().unwrap()],
        rotation_period_s: period_days.map(|d| d * 86_400),
        created_by: UserName::new("alice").unwrap(),
        created_at: NOW - Duration::days(400),
        rotated_at: NOW - Duration::days(rotated_days_ago),
    };
    f.secrets = vec![
        secret("stale", Some(90), 100),
        secret("fresh", Some(90), 10),
        secret("unperiodic", None, 999),
    ];
    let sighting = |source: &str, last_days_ago: i64| Sighting {
        source: source.to_owned(),
        route: "repositories".to_owned(),
        user_agent: "<script>".to_owned(),
        reason: "invalid_token".to_owned(),
        first_seen: NOW - Duration::days(40),
        last_seen: NOW - Duration::days(last_days_ago),
        count: 7,
    };
    f.sightings = vec![
        ("gateway".parse().unwrap(), sighting("203.0.113.7", 1)),
        ("gateway".parse().unwrap(), sighting("203.0.113.8", 31)),
    ];
    let report = findings(&f, &tally(&events));
    let q = of_kind(&report, FindingKind::Quarantine);
    assert_eq!(
        (q.len(), q[0].subject.as_str(), q[0].nhi),
        (1, "drifted", Nhi::Reuse)
    );
    assert_eq!(q[0].evidence["fields"], json!(["model.digest"]));
    let env = of_kind(&report, FindingKind::SeveralEnvironments);
    assert_eq!(env.len(), 1);
    assert_eq!(
        env[0].evidence["elsewhere"],
        json!([{ "audience": "https://staging.example", "environment": "staging" }])
    );
    assert_eq!(env[0].nhi, Nhi::EnvironmentIsolation);
    let secrets = of_kind(&report, FindingKind::SecretRotationOverdue);
    assert_eq!((secrets.len(), secrets[0].subject.as_str()), (1, "stale"));
    assert_eq!(
        (secrets[0].evidence["days_overdue"].as_i64(), secrets[0].nhi),
        (Some(10), Nhi::LongLivedSecrets)
    );
    assert_eq!(
        subjects(&report, FindingKind::UnmanagedCaller),
        ["203.0.113.7"]
    );
    // The report is data: the caller's user agent is passed on as it came, for renderers to
    // escape.
    assert_eq!(
        of_kind(&report, FindingKind::UnmanagedCaller)[0].evidence["user_agent"],
        "<script>"
    );
    assert_eq!(report.coverage.records_examined, 4);
}
