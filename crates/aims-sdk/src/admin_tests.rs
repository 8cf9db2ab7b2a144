//! Tests of [`AdminClient`] against a scripted HTTP/1.1 server on loopback: what goes on the
//! wire (method, path, query, token, body) and how answers are decoded.

use std::net::TcpListener;

use aims_api::oauth::{RegisterResourceServerRequest, RevokeRequest, RevokeTarget};
use aims_api::{
    AddUserRequest, AgentList, AgentQuery, AgentView, JoinTokenIssued, LifecycleRequest,
    RegisterAgentRequest,
};
use aims_core::agent::{Agent, LifecycleState, Limits};
use aims_core::id::{AgentName, Environment, Owner, ResourceServerName, UserName};
use aims_core::posture::PostureProfile;
use aims_core::task::TaskState;
use aims_core::user::Role;
use time::macros::datetime;

use super::*;
use crate::test_server::{Reply, Seen, json, serve};

const TOKEN: &str = "aims_u_s3cr3t-token-value";

fn client(base: &str) -> AdminClient {
    AdminClient::new(base, Some(TOKEN.to_owned())).unwrap()
}

fn name(value: &str) -> AgentName {
    AgentName::new(value).unwrap()
}

fn agent_view(agent: &str) -> AgentView {
    AgentView {
        spiffe_id: format!("spiffe://acme.example/agent/{agent}"),
        agent: Agent {
            name: name(agent),
            owner: Owner::new("alice@acme.example").unwrap(),
            environment: Environment::default(),
            description: String::new(),
            posture_profile: PostureProfile::default(),
            limits: Limits::default(),
            labels: Default::default(),
            state: LifecycleState::Active,
            created_at: datetime!(2025-01-01 00:00 UTC),
            updated_at: datetime!(2025-01-01 00:00 UTC),
            recertify_by: datetime!(2025-04-01 00:00 UTC),
            revision: 1,
        },
    }
}

fn page(names: &[&str], next_after: Option<&str>) -> Reply {
    let list = AgentList {
        agents: names.iter().map(|n| agent_view(n)).collect(),
        next_after: next_after.map(str::to_owned),
    };
    json(200, serde_json::to_string(&list).unwrap())
}

#[test]
fn base_urls_must_be_http_and_lose_trailing_slashes() {
    for (raw, want) in [
        ("http://127.0.0.1:8700", "http://127.0.0.1:8700"),
        ("http://127.0.0.1:8700/", "http://127.0.0.1:8700"),
        (
            "  https://aims.acme.example//  ",
            "https://aims.acme.example",
        ),
        ("https://acme.example/aims/", "https://acme.example/aims"),
        ("HTTP://LOCALHOST:1", "http://localhost:1"),
    ] {
        assert_eq!(parse_base_url(raw).unwrap(), want, "{raw}");
    }
    for raw in [
        "",
        "127.0.0.1:8700",
        "localhost:8700",
        "ftp://acme.example",
        "unix:///run/aims.sock",
        "http://alice:pw@acme.example",
        "http://acme.example/?x=1",
        "http://acme.example/#top",
    ] {
        let err = parse_base_url(raw).unwrap_err();
        assert!(matches!(err, SdkError::InvalidUrl(_)), "{raw}: {err:?}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
    assert!(
        parse_base_url("localhost:8700")
            .unwrap_err()
            .to_string()
            .contains("http://127.0.0.1:8700")
    );
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let client = client("http://127.0.0.1:8700/");
    let debug = format!("{client:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("<redacted>") && debug.contains("http://127.0.0.1:8700"));
    assert!(client.has_token());
    assert_eq!(client.base_url(), "http://127.0.0.1:8700");
}

#[test]
fn bad_and_empty_tokens() {
    let err = AdminClient::new("http://x", Some("bad\ntoken".into())).unwrap_err();
    assert_eq!(err, SdkError::InvalidToken);
    assert!(!err.to_string().contains("bad"));
    assert!(
        !AdminClient::new("http://x", Some("  ".into()))
            .unwrap()
            .has_token()
    );
    assert!(!AdminClient::new("http://x", None).unwrap().has_token());
}

#[tokio::test]
async fn authenticated_calls_need_a_token_before_any_request() {
    // Nothing listens here; the error must come before a connection is attempted.
    let client = AdminClient::new("http://127.0.0.1:9", None).unwrap();
    assert_eq!(client.users().await.unwrap_err(), SdkError::MissingToken);
    assert_eq!(
        client.agent(&name("coder")).await.unwrap_err(),
        SdkError::MissingToken
    );
}

#[tokio::test]
async fn register_posts_the_request_with_the_bearer_token() {
    let issued = JoinTokenIssued {
        spiffe_id: "spiffe://acme.example/agent/coder".into(),
        join_token: "jt-123".into(),
        join_token_expires_at: datetime!(2025-01-01 00:15 UTC),
        agent: agent_view("coder"),
    };
    let (base, seen) = serve(vec![json(201, serde_json::to_string(&issued).unwrap())]);
    let request = RegisterAgentRequest {
        name: name("coder"),
        owner: Owner::new("alice@acme.example").unwrap(),
        environment: None,
        description: Some("writes code".into()),
        posture_profile: None,
        limits: None,
        labels: None,
        recertify_days: Some(30),
    };
    let got = client(&base).register_agent(&request).await.unwrap();
    assert_eq!(got.join_token, "jt-123");
    assert_eq!(got.agent, issued.agent);

    let req = seen.recv().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/v1/agents");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body["name"], "coder");
    assert_eq!(body["recertify_days"], 30);
}

#[tokio::test]
async fn queries_are_url_encoded() {
    let (base, seen) = serve(vec![page(&["a"], None)]);
    let query = AgentQuery {
        owner: Some(Owner::new("team a&b@acme.example").unwrap()),
        state: Some(LifecycleState::Suspended),
        environment: Some(Environment::new("prod").unwrap()),
        after: None,
        limit: Some(10),
    };
    let list = client(&base).list_agents(&query).await.unwrap();
    assert_eq!(list.agents.len(), 1);
    assert_eq!(
        seen.recv().unwrap().target,
        "/v1/agents?owner=team+a%26b%40acme.example&state=suspended&environment=prod&limit=10"
    );
}

#[tokio::test]
async fn each_endpoint_uses_its_method_and_path() {
    let view = serde_json::to_string(&agent_view("coder")).unwrap();
    let credential = r#"{"user":{"name":"bob","role":"auditor","created_at":"2025-01-01T00:00:00Z","credential_rotated_at":"2025-01-01T00:00:00Z"},"token":"t"}"#;
    let keys = r#"{"sequence":3,"keys":[{"kid":"k1","alg":"ES256","state":"current","created_at":"2025-01-01T00:00:00Z"}]}"#;
    let (base, seen) = serve(vec![
        json(200, view.clone()),
        json(200, view.clone()),
        json(200, view.clone()),
        json(200, view),
        json(201, credential),
        Reply {
            status: 204,
            headers: vec![],
            body: String::new(),
        },
        json(200, credential),
        json(200, keys),
        json(200, keys),
        json(200, r#"{"records":[]}"#),
        json(200, r#"{"intact":true,"records":0,"head_hash":"00"}"#),
    ]);
    let c = client(&base);
    let coder = name("coder");
    let bob = UserName::new("bob").unwrap();
    let why = LifecycleRequest {
        reason: Some("maintenance".into()),
    };
    c.agent(&coder).await.unwrap();
    c.suspend_agent(&coder, &why).await.unwrap();
    c.resume_agent(&coder, &LifecycleRequest::default())
        .await
        .unwrap();
    c.decommission_agent(&coder, &why).await.unwrap();
    let added = c
        .add_user(&AddUserRequest {
            name: bob.clone(),
            role: Role::Auditor,
        })
        .await
        .unwrap();
    assert_eq!(added.user.role, Role::Auditor);
    c.remove_user(&bob).await.unwrap();
    c.rotate_user(&bob).await.unwrap();
    assert_eq!(c.keys().await.unwrap().sequence, 3);
    c.rotate_keys().await.unwrap();
    c.audit(&aims_api::AuditQuery {
        after: Some(5),
        limit: None,
    })
    .await
    .unwrap();
    assert!(c.verify_audit().await.unwrap().intact);

    let calls: Vec<(String, String, String)> = seen
        .try_iter()
        .map(|s| (s.method, s.target, s.body))
        .collect();
    let expected = [
        ("GET", "/v1/agents/coder", ""),
        (
            "POST",
            "/v1/agents/coder/suspend",
            r#"{"reason":"maintenance"}"#,
        ),
        ("POST", "/v1/agents/coder/resume", "{}"),
        (
            "POST",
            "/v1/agents/coder/decommission",
            r#"{"reason":"maintenance"}"#,
        ),
        ("POST", "/v1/users", r#"{"name":"bob","role":"auditor"}"#),
        ("DELETE", "/v1/users/bob", ""),
        ("POST", "/v1/users/bob/rotate", ""),
        ("GET", "/v1/keys", ""),
        ("POST", "/v1/keys/rotate", ""),
        ("GET", "/v1/audit?after=5", ""),
        ("GET", "/v1/audit/verify", ""),
    ];
    assert_eq!(calls.len(), expected.len());
    for ((method, target, body), (m, t, b)) in calls.iter().zip(expected) {
        assert_eq!((method.as_str(), target.as_str(), body.as_str()), (m, t, b));
    }
}

#[tokio::test]
async fn tasks_revocations_and_resource_servers_use_their_methods_and_paths() {
    let task = r#"{"id":"t-1","agent":"coder","intent":"fix","subject":"s","state":"active","created_at":"2025-01-01T00:00:00Z","deadline":"2025-01-01T01:00:00Z"}"#;
    let server = r#"{"name":"repo-tools","audience":"https://tools.example","system":"github","environment":"dev","sensitivity":"internal","created_by":"admin","created_at":"2025-01-01T00:00:00Z"}"#;
    let (base, seen) = serve(vec![
        json(200, format!(r#"{{"tasks":[{task}]}}"#)),
        json(200, task),
        json(200, format!(r#"{{"task":{task},"revoked":2}}"#)),
        json(200, r#"{"revoked":3}"#),
        json(200, r#"{"active":false}"#),
        json(
            201,
            format!(r#"{{"resource_server":{server},"client_secret":"aims_r_x"}}"#),
        ),
        json(200, format!(r#"{{"resource_servers":[{server}]}}"#)),
        json(200, server),
        Reply {
            status: 204,
            headers: vec![],
            body: String::new(),
        },
    ]);
    let c = client(&base);
    let listed = c
        .tasks(Some(&name("coder")), Some(TaskState::Active), Some(5))
        .await
        .unwrap();
    assert_eq!(listed.tasks[0].id, "t-1");
    c.task("t-1").await.unwrap();
    assert_eq!(c.end_task("t-1").await.unwrap().revoked, 2);
    let revoked = c
        .revoke(&RevokeRequest {
            target: RevokeTarget::Agent,
            id: "coder".into(),
            reason: None,
        })
        .await
        .unwrap();
    assert_eq!(revoked.revoked, 3);
    assert_eq!(
        c.introspect(" tok.en.x ").await.unwrap(),
        serde_json::json!({"active": false})
    );
    let rs = ResourceServerName::new("repo-tools").unwrap();
    let registered = c
        .register_resource_server(&RegisterResourceServerRequest {
            name: rs.clone(),
            audience: "https://tools.example".into(),
            system: "github".into(),
            environment: None,
            sensitivity: None,
        })
        .await
        .unwrap();
    assert_eq!(registered.client_secret, "aims_r_x");
    assert_eq!(
        c.resource_servers().await.unwrap().resource_servers.len(),
        1
    );
    c.resource_server(&rs).await.unwrap();
    c.remove_resource_server(&rs).await.unwrap();

    let seen: Vec<Seen> = seen.try_iter().collect();
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some(format!("Bearer {TOKEN}").as_str()))
    );
    let calls: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str(), s.body.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/v1/tasks?agent=coder&state=active&limit=5", ""),
            ("GET", "/v1/tasks/t-1", ""),
            ("POST", "/v1/tasks/t-1/end", ""),
            (
                "POST",
                "/v1/revocations",
                r#"{"target":"agent","id":"coder","reason":null}"#
            ),
            ("POST", "/oauth2/introspect", "token=tok.en.x"),
            (
                "POST",
                "/v1/resource-servers",
                r#"{"name":"repo-tools","audience":"https://tools.example","system":"github","environment":null,"sensitivity":null}"#
            ),
            ("GET", "/v1/resource-servers", ""),
            ("GET", "/v1/resource-servers/repo-tools", ""),
            ("DELETE", "/v1/resource-servers/repo-tools", ""),
        ]
    );
}

#[tokio::test]
async fn malformed_task_ids_are_not_sent() {
    // Nothing listens here; the error must come before a connection is attempted.
    let c = client("http://127.0.0.1:9");
    for id in ["", "../agents", "a/b", "t?x=1"] {
        assert!(
            matches!(c.task(id).await, Err(SdkError::InvalidRequest(_))),
            "{id}"
        );
        assert!(matches!(
            c.end_task(id).await,
            Err(SdkError::InvalidRequest(_))
        ));
    }
}

#[tokio::test]
async fn public_documents_are_fetched_without_the_token() {
    let (base, seen) = serve(vec![
        json(200, r#"{"issuer":"http://x"}"#),
        json(200, r#"{"keys":[]}"#),
        json(200, r#"{"keys":[],"spiffe_sequence":1}"#),
    ]);
    let c = client(&format!("{base}/"));
    assert_eq!(c.metadata().await.unwrap()["issuer"], "http://x");
    c.jwks().await.unwrap();
    assert_eq!(c.bundle().await.unwrap()["spiffe_sequence"], 1);
    let seen: Vec<Seen> = seen.try_iter().collect();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/.well-known/oauth-authorization-server",
            "/.well-known/jwks.json",
            "/.well-known/spiffe-bundle"
        ]
    );
    assert!(seen.iter().all(|s| s.header("authorization").is_none()));
}

#[tokio::test]
async fn error_bodies_become_typed_errors() {
    let (base, _seen) = serve(vec![
        json(
            409,
            r#"{"error":"agent_exists","message":"agent coder already exists"}"#,
        ),
        Reply {
            status: 502,
            headers: vec![("Content-Type", "text/html".into())],
            body: "<h1>bad gateway</h1>".into(),
        },
        json(200, r#"{"agents":"nope"}"#),
    ]);
    let c = client(&base);
    let err = c.issue_join_token(&name("coder")).await.unwrap_err();
    assert_eq!(
        err,
        SdkError::Api {
            status: 409,
            code: "agent_exists".into(),
            message: "agent coder already exists".into()
        }
    );
    let err = c.users().await.unwrap_err();
    assert_eq!(
        err,
        SdkError::Http {
            status: 502,
            body: "<h1>bad gateway</h1>".into()
        }
    );
    let err = c.list_agents(&AgentQuery::default()).await.unwrap_err();
    assert!(matches!(err, SdkError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, seen) = serve(vec![Reply {
        status: 307,
        headers: vec![("Location", "http://evil.example/v1/users".into())],
        body: String::new(),
    }]);
    let err = client(&base).users().await.unwrap_err();
    assert_eq!(err.status(), Some(307));
    assert_eq!(seen.try_iter().count(), 1);
}

#[tokio::test]
async fn transport_errors_name_the_cause_but_not_the_token() {
    // Bind and drop a listener to get a port that refuses connections.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client(&format!("http://127.0.0.1:{port}"))
        .keys()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SdkError::Transport(_)), "{err:?}");
    assert!(text.contains(&port.to_string()), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn listing_all_agents_follows_the_cursor() {
    let (base, seen) = serve(vec![page(&["a", "b"], Some("b")), page(&["c"], None)]);
    let all = client(&base)
        .list_all_agents(&AgentQuery::default(), None)
        .await
        .unwrap();
    let names: Vec<&str> = all.agents.iter().map(|a| a.agent.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(all.next_after, None);
    let targets: Vec<String> = seen.try_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/v1/agents", "/v1/agents?after=b"]);
}

#[tokio::test]
async fn listing_stops_at_the_maximum_and_returns_a_cursor() {
    let (base, seen) = serve(vec![
        page(&["a", "b"], Some("b")),
        page(&["c", "d"], Some("d")),
    ]);
    let some = client(&base)
        .list_all_agents(&AgentQuery::default(), Some(3))
        .await
        .unwrap();
    let names: Vec<&str> = some.agents.iter().map(|a| a.agent.name.as_str()).collect();
    // The scripted server ignores `limit` and sends one too many; the cursor must not skip it.
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(some.next_after.as_deref(), Some("c"));
    let targets: Vec<String> = seen.try_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        ["/v1/agents?limit=3", "/v1/agents?after=b&limit=1"]
    );
}

#[tokio::test]
async fn a_cursor_that_does_not_advance_is_an_error() {
    let (base, _seen) = serve(vec![page(&["a"], Some("a")), page(&["a"], Some("a"))]);
    let err = client(&base)
        .list_all_agents(&AgentQuery::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Decode(_)), "{err:?}");
}
