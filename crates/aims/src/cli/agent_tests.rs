//! Tests of `aims agent`: flag parsing, request building and text rendering.

use std::io::Write;

use aims_core::posture::PostureSection;
use clap::{CommandFactory, Parser};
use time::macros::datetime;

use super::*;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    cmd: AgentCommand,
}

fn parse(args: &[&str]) -> Result<AgentCommand, clap::Error> {
    Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.cmd)
}

fn agent(name: &str) -> Agent {
    Agent {
        name: AgentName::new(name).unwrap(),
        owner: Owner::new("alice@acme.example").unwrap(),
        environment: Environment::default(),
        description: String::new(),
        posture_profile: PostureProfile::default(),
        limits: Limits::default(),
        labels: [(LabelKey::new("team").unwrap(), "payments".to_owned())].into(),
        state: LifecycleState::Active,
        created_at: datetime!(2025-01-01 00:00 UTC),
        updated_at: datetime!(2025-01-02 00:00 UTC),
        recertify_by: datetime!(2025-04-01 00:00 UTC),
        revision: 7,
    }
}

fn view(name: &str) -> AgentView {
    AgentView {
        spiffe_id: format!("spiffe://acme.example/agent/{name}"),
        agent: agent(name),
    }
}

fn profile_file(json: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(json.as_bytes()).unwrap();
    file
}

#[test]
fn clap_definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn labels_parse_as_key_value() {
    let (k, v) = parse_label("team=payments").unwrap();
    assert_eq!((k.as_str(), v.as_str()), ("team", "payments"));
    let (k, v) = parse_label("query=a=b").unwrap();
    assert_eq!((k.as_str(), v.as_str()), ("query", "a=b"));
    assert_eq!(parse_label("empty=").unwrap().1, "");
    assert!(parse_label("novalue").unwrap_err().contains("KEY=VALUE"));
    assert!(parse_label("Team=x").is_err());
    assert!(parse_label("=x").is_err());
}

#[test]
fn a_label_given_twice_is_refused() {
    let labels = vec![parse_label("a=1").unwrap(), parse_label("a=2").unwrap()];
    assert_eq!(
        label_map(&labels).unwrap_err().to_string(),
        "label a is given twice"
    );
}

#[test]
fn register_flags_parse() {
    let cmd = parse(&[
        "register",
        "--allow-bearer",
        "coder",
        "--owner",
        "alice@acme.example",
        "--env",
        "prod",
        "--label",
        "team=payments",
        "--label",
        "tier=1",
        "--max-ttl",
        "300",
        "--recertify-days",
        "30",
    ])
    .unwrap();
    let AgentCommand::Register {
        name,
        owner,
        fields,
    } = cmd
    else {
        panic!("not register: {cmd:?}");
    };
    let request = register_request(name, owner, &fields).unwrap();
    assert_eq!(request.name.as_str(), "coder");
    assert_eq!(request.environment.unwrap().as_str(), "prod");
    assert_eq!(
        request.limits,
        Some(Limits {
            max_token_ttl_s: 300,
            max_delegation_depth: 2,
            allow_bearer: true,
        })
    );
    assert_eq!(request.labels.unwrap().len(), 2);
    assert_eq!(request.recertify_days, Some(30));
    assert!(request.posture_profile.is_none());
}

#[test]
fn register_without_limit_flags_sends_no_limits() {
    let request = register_request(
        AgentName::new("a").unwrap(),
        Owner::new("o").unwrap(),
        &AgentFields::default(),
    )
    .unwrap();
    assert!(request.limits.is_none() && request.labels.is_none());
    let body = serde_json::to_value(&request).unwrap();
    assert_eq!(body["name"], "a");
}

#[test]
fn bad_flag_values_are_refused_by_the_parser() {
    for args in [
        &["register", "a/b", "--owner", "o"][..],
        &["register", "a"],
        &["register", "a", "--owner", "o", "--max-ttl", "0"],
        &["register", "a", "--owner", "o", "--max-ttl", "86401"],
        &["register", "a", "--owner", "o", "--max-depth", "17"],
        &["register", "a", "--owner", "o", "--label", "nope"],
        &["register", "a", "--owner", "o", "--allow-bearer=maybe"],
        &["list", "--state", "deleted"],
        &["list", "--limit", "0"],
        &["suspend"],
    ] {
        assert!(parse(args).is_err(), "{args:?}");
    }
    let AgentCommand::List { filter, .. } = parse(&["list", "--state", "quarantined"]).unwrap()
    else {
        panic!("not list");
    };
    assert_eq!(filter.query(None).state, Some(LifecycleState::Quarantined));
    let AgentCommand::Inventory { filter, limit } =
        parse(&["inventory", "--owner", "alice@acme.example", "--limit", "5"]).unwrap()
    else {
        panic!("not inventory");
    };
    assert_eq!(filter.query(limit).limit, Some(5));
    assert!(parse(&["inventory", "--limit", "201"]).is_err());
}

#[test]
fn profiles_are_read_strictly_and_errors_name_the_file() {
    let good = profile_file(r#"{"model":{"id":["gpt-x"]},"may_change":["deployment"]}"#);
    let profile = read_profile(good.path()).unwrap();
    assert_eq!(profile.may_change, vec![PostureSection::Deployment]);

    let path = good.path().display().to_string();
    let unknown = profile_file(r#"{"modle":{}}"#);
    let err = format!("{:#}", read_profile(unknown.path()).unwrap_err());
    assert!(err.contains(&unknown.path().display().to_string()), "{err}");
    assert!(err.contains("modle"), "{err}");

    let invalid = profile_file(r#"{"model":{"digest":["sha256:nope"]}}"#);
    let err = format!("{:#}", read_profile(invalid.path()).unwrap_err());
    assert!(err.contains(&invalid.path().display().to_string()), "{err}");
    assert!(err.contains("model.digest"), "{err}");

    let missing = format!("{path}.missing");
    let err = format!("{:#}", read_profile(Path::new(&missing)).unwrap_err());
    assert!(err.contains(&missing), "{err}");
}

#[test]
fn updates_merge_limits_and_labels_into_the_current_record() {
    let cmd = parse(&[
        "update",
        "coder",
        "--max-depth",
        "4",
        "--allow-bearer=false",
        "--label",
        "tier=1",
        "--remove-label",
        "team",
    ])
    .unwrap();
    let AgentCommand::Update {
        owner,
        fields,
        remove_labels,
        revision,
        ..
    } = cmd
    else {
        panic!("not update");
    };
    assert!(fields.needs_current());
    let mut current = agent("coder");
    current.limits.allow_bearer = true;
    current.limits.max_token_ttl_s = 60;
    let request = update_request(owner, &fields, &remove_labels, revision, Some(&current)).unwrap();
    assert_eq!(
        request.limits,
        Some(Limits {
            max_token_ttl_s: 60,
            max_delegation_depth: 4,
            allow_bearer: false,
        })
    );
    let labels = request.labels.unwrap();
    assert_eq!(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        ["tier=1"]
    );
    assert_eq!(
        request.revision,
        Some(7),
        "guards against concurrent changes"
    );
    assert!(request.owner.is_none() && request.description.is_none());
}

#[test]
fn an_explicit_revision_wins_and_simple_updates_need_no_read() {
    let fields = AgentFields {
        description: Some("new".into()),
        ..AgentFields::default()
    };
    assert!(!fields.needs_current());
    let request = update_request(None, &fields, &[], Some(3), None).unwrap();
    let body = serde_json::to_value(&request).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"description": "new", "revision": 3})
    );
}

#[test]
fn an_empty_update_or_a_missing_label_is_refused() {
    let err = update_request(None, &AgentFields::default(), &[], Some(1), None).unwrap_err();
    assert!(err.to_string().starts_with("nothing to update"), "{err}");
    let missing = [LabelKey::new("nope").unwrap()];
    let err = update_request(
        None,
        &AgentFields::default(),
        &missing,
        None,
        Some(&agent("coder")),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "agent coder has no label nope");
}

#[test]
fn join_tokens_render_with_expiry_and_a_warning() {
    let issued = JoinTokenIssued {
        spiffe_id: "spiffe://acme.example/agent/coder".into(),
        join_token: "aims_jt_abc".into(),
        join_token_expires_at: datetime!(2025-01-01 00:15 UTC),
        agent: view("coder"),
    };
    let now = datetime!(2025-01-01 00:00 UTC);
    assert_eq!(
        render_join_token(&issued, true, now),
        "Registered agent coder (owner alice@acme.example, env dev).\n\
         SPIFFE ID   spiffe://acme.example/agent/coder\n\
         Join token  aims_jt_abc\n\
         Expires     2025-01-01T00:15:00Z (in 15m)\n\
         The join token is shown only once: give it to the agent for its first attestation.\n"
    );
    assert!(render_join_token(&issued, false, now).starts_with("New join token for agent coder"));
}

#[test]
fn agent_lists_render_as_a_table() {
    let list = AgentList {
        agents: vec![view("coder"), view("ci")],
        next_after: None,
    };
    assert_eq!(
        render_agent_list(&list),
        "NAME   OWNER               ENV  STATE   SPIFFE_ID\n\
         coder  alice@acme.example  dev  active  spiffe://acme.example/agent/coder\n\
         ci     alice@acme.example  dev  active  spiffe://acme.example/agent/ci\n"
    );
    let more = AgentList {
        agents: vec![view("coder")],
        next_after: Some("coder".into()),
    };
    assert!(render_agent_list(&more).ends_with("continue with --after coder\n"));
    let none = AgentList {
        agents: vec![],
        next_after: None,
    };
    assert_eq!(render_agent_list(&none), "No agents.\n");
}

#[test]
fn one_agent_renders_as_fields() {
    let mut v = view("coder");
    v.agent.posture_profile.model.id = Some(vec!["gpt-x".into(), "gpt-y".into()]);
    v.agent.posture_profile.may_change = vec![PostureSection::Deployment];
    let text = render_agent(&v);
    for line in [
        "Name            coder\n",
        "SPIFFE ID       spiffe://acme.example/agent/coder\n",
        "Labels          team=payments\n",
        "Max token TTL   900s\n",
        "Bearer tokens   refused (DPoP required)\n",
        "Posture         model.id: gpt-x, gpt-y\n",
        "                may change without approval: deployment\n",
        "Recertify by    2025-04-01T00:00:00Z\n",
        "Revision        7\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(render_agent(&view("x")).contains("Posture         no checks\n"));
}
