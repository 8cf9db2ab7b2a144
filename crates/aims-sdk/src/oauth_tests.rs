//! Tests of [`TokenClient`] and [`TaskToken`] against the scripted loopback server: the form
//! each grant sends, the DPoP proofs (checked with `aims_token::dpop::verify_proof`), Basic
//! authentication of resource servers, how OAuth errors decode, and when a task token is
//! exchanged again.

use aims_api::oauth::{RevocationEntry, RevocationKind};
use aims_core::id::{AgentName, TaskId};
use aims_token::agent_key::AgentKeyKind;
use aims_token::dpop::{ProofCheck, verify_proof};
use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::test_server::{Reply, Seen, field, form_fields, json, serve};

const SVID: &str = "eyJhbGciOiJFUzI1NiJ9.svid-of-planner.sig";
const ACCESS: &str = "eyJhbGciOiJFUzI1NiJ9.access-token.sig";

fn key() -> AgentKey {
    AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap()
}

fn request() -> ExchangeRequest {
    ExchangeRequest {
        scope: ScopeSet::parse("read:repo/acme/* write:repo/acme/app").unwrap(),
        audience: "https://tools.acme.example".into(),
        intent: "fix the failing build".into(),
        task_id: None,
        expires_in: Some(600),
    }
}

fn issued(token_type: &str, task_id: &str, expires_in: u64, token: &str) -> Reply {
    json(
        200,
        serde_json::to_string(&TokenResponse {
            access_token: token.into(),
            issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
            token_type: token_type.into(),
            expires_in,
            scope: "read:repo/acme/*".into(),
            task_id: TaskId::new(task_id).unwrap(),
        })
        .unwrap(),
    )
}

fn ok_token() -> Reply {
    issued("DPoP", "task-1", 600, ACCESS)
}

/// Checks the request's DPoP proof for `method url` (with `ath` for `access_token`) and
/// that `key` signed it.
fn assert_proof(seen: &Seen, key: &AgentKey, method: &str, url: &str, access_token: Option<&str>) {
    let proof = seen.header("dpop").expect("a DPoP header");
    let verified = verify_proof(
        proof,
        &ProofCheck {
            method,
            url,
            access_token,
            now: unix_now(),
        },
    )
    .unwrap();
    assert_eq!(verified.jkt, key.thumbprint());
}

fn fields(seen: &Seen) -> Vec<(String, String)> {
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    form_fields(&seen.body)
}

/// The `name:secret` inside a Basic header.
fn basic_pair(seen: &Seen) -> String {
    use base64::Engine as _;
    let value = seen.header("authorization").unwrap();
    let encoded = value.strip_prefix("Basic ").unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

fn rs_name() -> ResourceServerName {
    ResourceServerName::new("github-tools").unwrap()
}

#[tokio::test]
async fn exchange_posts_the_form_with_a_proof_for_the_token_endpoint() {
    let (base, seen) = serve(vec![ok_token()]);
    let key = key();
    let client = TokenClient::new(&format!("{base}/")).unwrap();
    let request = ExchangeRequest {
        task_id: Some("task-1".into()),
        ..request()
    };
    let got = client.exchange(SVID, &key, &request).await.unwrap();
    assert_eq!(got.access_token, ACCESS);
    assert_eq!(got.task_id, "task-1");

    let seen = seen.recv().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/oauth2/token");
    assert_eq!(seen.header("authorization"), None);
    assert_proof(&seen, &key, "POST", &format!("{base}/oauth2/token"), None);
    let form = fields(&seen);
    let want = [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", SVID),
        ("subject_token_type", TOKEN_TYPE_JWT),
        ("scope", "read:repo/acme/* write:repo/acme/app"),
        ("audience", "https://tools.acme.example"),
        ("intent", "fix the failing build"),
        ("task_id", "task-1"),
        ("expires_in", "600"),
    ];
    for (name, value) in want {
        assert_eq!(field(&form, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(form.len(), want.len());
}

#[tokio::test]
async fn jwt_bearer_sends_the_svid_as_the_assertion() {
    let (base, seen) = serve(vec![ok_token()]);
    let key = key();
    let client = TokenClient::new(&base).unwrap();
    client.jwt_bearer(SVID, &key, &request()).await.unwrap();
    let seen = seen.recv().unwrap();
    assert_proof(&seen, &key, "POST", &format!("{base}/oauth2/token"), None);
    let form = fields(&seen);
    assert_eq!(field(&form, "grant_type").unwrap(), GRANT_JWT_BEARER);
    assert_eq!(field(&form, "assertion").unwrap(), SVID);
    assert_eq!(field(&form, "subject_token"), None);
    assert_eq!(field(&form, "task_id"), None, "a new task");
    assert_eq!(field(&form, "intent").unwrap(), "fix the failing build");
}

#[tokio::test]
async fn an_empty_intent_is_not_sent() {
    let (base, seen) = serve(vec![ok_token()]);
    let client = TokenClient::new(&base).unwrap();
    let request = ExchangeRequest {
        intent: String::new(),
        task_id: Some("task-1".into()),
        ..request()
    };
    client.exchange(SVID, &key(), &request).await.unwrap();
    let form = fields(&seen.recv().unwrap());
    assert_eq!(field(&form, "intent"), None);
    assert_eq!(field(&form, "task_id").unwrap(), "task-1");
}

#[tokio::test]
async fn bearer_mode_sends_no_proof_and_accepts_only_bearer_tokens() {
    let (base, seen) = serve(vec![issued("Bearer", "task-1", 600, ACCESS), ok_token()]);
    let client = TokenClient::new(&base)
        .unwrap()
        .with_binding(Binding::Bearer);
    assert_eq!(client.binding(), Binding::Bearer);
    let got = client.exchange(SVID, &key(), &request()).await.unwrap();
    assert_eq!(got.token_type, "Bearer");
    assert_eq!(seen.recv().unwrap().header("dpop"), None);
    // A DPoP token to a client that sent no proof is not what it asked for.
    let err = client.exchange(SVID, &key(), &request()).await.unwrap_err();
    assert!(matches!(err, SdkError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn a_downgraded_token_type_is_refused_in_dpop_mode() {
    let (base, _seen) = serve(vec![issued("Bearer", "task-1", 600, ACCESS)]);
    let client = TokenClient::new(&base).unwrap();
    let err = client.exchange(SVID, &key(), &request()).await.unwrap_err();
    assert!(err.to_string().contains("Bearer"), "{err}");
    assert!(!err.to_string().contains(ACCESS), "{err}");
}

#[tokio::test]
async fn delegate_sends_both_tokens_and_a_proof_by_the_delegator() {
    let (base, seen) = serve(vec![issued("DPoP", "task-1", 120, "b-token"), ok_token()]);
    let planner = key();
    let client = TokenClient::new(&base).unwrap();
    let narrower = DelegationRequest {
        scope: Some(ScopeSet::parse("read:repo/acme/app").unwrap()),
        audience: None,
        expires_in: Some(120),
    };
    let got = client
        .delegate(ACCESS, &planner, SVID, &narrower)
        .await
        .unwrap();
    assert_eq!(got.access_token, "b-token");
    let first = seen.recv().unwrap();
    assert_proof(
        &first,
        &planner,
        "POST",
        &format!("{base}/oauth2/token"),
        None,
    );
    let form = fields(&first);
    let want = [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", ACCESS),
        ("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN),
        ("actor_token", SVID),
        ("actor_token_type", TOKEN_TYPE_JWT),
        ("scope", "read:repo/acme/app"),
        ("expires_in", "120"),
    ];
    for (name, value) in want {
        assert_eq!(field(&form, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(form.len(), want.len(), "no audience unless asked");

    client
        .delegate(ACCESS, &planner, SVID, &DelegationRequest::default())
        .await
        .unwrap();
    let form = fields(&seen.recv().unwrap());
    assert_eq!(field(&form, "scope"), None);
    assert_eq!(field(&form, "expires_in"), None);
}

#[tokio::test]
async fn oauth_errors_carry_the_rfc_code() {
    let (base, _seen) = serve(vec![
        json(
            400,
            r#"{"error":"invalid_scope","error_description":"write:repo/acme/app is not allowed"}"#,
        ),
        json(401, r#"{"error":"invalid_client"}"#),
    ]);
    let client = TokenClient::new(&base).unwrap();
    let err = client.exchange(SVID, &key(), &request()).await.unwrap_err();
    assert_eq!(
        err,
        SdkError::OAuth {
            status: 400,
            error: "invalid_scope".into(),
            description: Some("write:repo/acme/app is not allowed".into()),
        }
    );
    let err = client
        .introspect(&rs_name(), "aims_r_secret", ACCESS)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_client"));
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn introspection_authenticates_the_resource_server_with_basic() {
    let (base, seen) = serve(vec![
        json(
            200,
            r#"{"active":true,"jti":"j1","scope":"read:repo/acme/*"}"#,
        ),
        json(200, r#"{"active":false}"#),
    ]);
    let client = TokenClient::new(&base).unwrap();
    let active = client
        .introspect(&rs_name(), "aims_r_s3cr3t", ACCESS)
        .await
        .unwrap();
    assert_eq!(active["active"], true);
    assert_eq!(active["jti"], "j1");
    let seen1 = seen.recv().unwrap();
    assert_eq!(seen1.method, "POST");
    assert_eq!(seen1.target, "/oauth2/introspect");
    assert_eq!(basic_pair(&seen1), "github-tools:aims_r_s3cr3t");
    assert_eq!(field(&fields(&seen1), "token").unwrap(), ACCESS);
    let inactive = client
        .introspect(&rs_name(), "aims_r_s3cr3t", "unknown")
        .await
        .unwrap();
    assert_eq!(inactive, json!({"active": false}));
}

#[tokio::test]
async fn revocation_posts_the_token_with_optional_client_authentication() {
    let empty = || Reply {
        status: 200,
        headers: vec![],
        body: String::new(),
    };
    let (base, seen) = serve(vec![empty(), empty()]);
    let client = TokenClient::new(&base).unwrap();
    client.revoke(ACCESS, None).await.unwrap();
    let first = seen.recv().unwrap();
    assert_eq!(first.target, "/oauth2/revoke");
    assert_eq!(first.header("authorization"), None);
    let form = fields(&first);
    assert_eq!(field(&form, "token").unwrap(), ACCESS);
    assert_eq!(field(&form, "token_type_hint").unwrap(), "access_token");
    client
        .revoke(ACCESS, Some((&rs_name(), "aims_r_x")))
        .await
        .unwrap();
    assert_eq!(basic_pair(&seen.recv().unwrap()), "github-tools:aims_r_x");
}

#[tokio::test]
async fn the_revocation_feed_is_paged_by_since() {
    let page = RevocationPage {
        revocations: vec![RevocationEntry {
            seq: 6,
            kind: RevocationKind::Token,
            jti: Some("j6".into()),
            agent: AgentName::new("coder").unwrap(),
            task_id: Some("task-1".into()),
            revoked_at: datetime!(2030-01-01 00:00 UTC),
            expires_at: datetime!(2030-01-01 00:15 UTC),
            reason: Some("task ended".into()),
        }],
        next: 6,
    };
    let (base, seen) = serve(vec![json(200, serde_json::to_string(&page).unwrap())]);
    let client = TokenClient::new(&base).unwrap();
    let got = client
        .revocations(5, Some(10), &rs_name(), "aims_r_x")
        .await
        .unwrap();
    assert_eq!(got, page);
    let seen = seen.recv().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/v1/revocations?since=5&limit=10");
    assert_eq!(basic_pair(&seen), "github-tools:aims_r_x");
}

fn decide_request() -> DecideRequest {
    DecideRequest {
        action: "read".into(),
        resource: json!({"type": "repo", "id": "repo/acme/app"}),
        task_id: String::new(),
        intent: String::new(),
        arguments: Default::default(),
    }
}

fn decision() -> Reply {
    json(
        200,
        r#"{"decision_id":"d1","decision":"allow","policies":["p1"],"policy_version":3}"#,
    )
}

#[tokio::test]
async fn authorize_presents_the_token_with_a_proof_bound_to_it() {
    let (base, seen) = serve(vec![decision(), decision()]);
    let key = key();
    let client = TokenClient::new(&base).unwrap();
    let got = client
        .authorize(ACCESS, &key, &decide_request())
        .await
        .unwrap();
    assert_eq!(got.decision, "allow");
    let first = seen.recv().unwrap();
    assert_eq!(first.method, "POST");
    assert_eq!(first.target, "/v1/decisions");
    assert_eq!(
        first.header("authorization"),
        Some(format!("DPoP {ACCESS}").as_str())
    );
    assert_proof(
        &first,
        &key,
        "POST",
        &format!("{base}/v1/decisions"),
        Some(ACCESS),
    );
    let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["action"], "read");

    let bearer = client.with_binding(Binding::Bearer);
    bearer
        .authorize(ACCESS, &key, &decide_request())
        .await
        .unwrap();
    let second = seen.recv().unwrap();
    assert_eq!(
        second.header("authorization"),
        Some(format!("Bearer {ACCESS}").as_str())
    );
    assert_eq!(second.header("dpop"), None);
}

#[test]
fn headers_for_any_resource_server_are_sensitive_and_redacted() {
    let client = TokenClient::new("https://aims.example").unwrap();
    let key = key();
    let url = "https://tools.acme.example/repos/app?ref=main";
    let headers = client
        .headers(Binding::Dpop, ACCESS, &key, "GET", url)
        .unwrap();
    assert!(headers.authorization.is_sensitive());
    let proof = headers.dpop.as_ref().unwrap();
    assert!(proof.is_sensitive());
    let verified = verify_proof(
        proof.to_str().unwrap(),
        &ProofCheck {
            method: "GET",
            url: "https://tools.acme.example/repos/app",
            access_token: Some(ACCESS),
            now: unix_now(),
        },
    )
    .unwrap();
    assert_eq!(verified.jkt, key.thumbprint());
    let shown = format!("{headers:?} {client:?}");
    assert!(!shown.contains(ACCESS), "{shown}");
    assert!(!shown.contains(proof.to_str().unwrap()), "{shown}");
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    // Nothing listens here; every error must come before a connection is attempted.
    let client = TokenClient::new("http://127.0.0.1:9").unwrap();
    let key = key();
    let err = client
        .exchange("svid\nInjected: 1", &key, &request())
        .await
        .unwrap_err();
    assert_eq!(err, SdkError::InvalidCredential { what: "SVID" });
    assert!(!err.to_string().contains("Injected"));
    let no_scope = ExchangeRequest {
        scope: ScopeSet::default(),
        ..request()
    };
    assert!(matches!(
        client.exchange(SVID, &key, &no_scope).await,
        Err(SdkError::InvalidRequest(_))
    ));
    let no_audience = ExchangeRequest {
        audience: " ".into(),
        ..request()
    };
    assert!(matches!(
        client.jwt_bearer(SVID, &key, &no_audience).await,
        Err(SdkError::InvalidRequest(_))
    ));
    assert_eq!(
        client.introspect(&rs_name(), "", ACCESS).await.unwrap_err(),
        SdkError::InvalidCredential {
            what: "client secret"
        }
    );
    assert!(matches!(
        client.authorize("", &key, &decide_request()).await,
        Err(SdkError::InvalidCredential { .. })
    ));
    assert!(TokenClient::new("ftp://aims.example").is_err());
}

#[test]
fn basic_credentials_are_form_encoded() {
    assert_eq!(form_urlencode("aims_r_AZaz09-._*"), "aims_r_AZaz09-._*");
    assert_eq!(form_urlencode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
}

#[test]
fn token_types_and_schemes() {
    assert_eq!(Binding::from_token_type("DPoP"), Some(Binding::Dpop));
    assert_eq!(Binding::from_token_type("dpop"), Some(Binding::Dpop));
    assert_eq!(Binding::from_token_type("bearer"), Some(Binding::Bearer));
    assert_eq!(Binding::from_token_type("N_A"), None);
    assert_eq!(Binding::Dpop.scheme(), "DPoP");
    assert_eq!(Binding::default(), Binding::Dpop);
}

#[test]
fn a_token_is_refreshed_in_the_last_fifth_of_its_lifetime() {
    let issued_at = 1_000;
    let expires_at = issued_at + 300;
    assert!(!needs_refresh(issued_at, expires_at, issued_at));
    assert!(
        !needs_refresh(issued_at, expires_at, expires_at - 60),
        "exactly a fifth left"
    );
    assert!(needs_refresh(issued_at, expires_at, expires_at - 59));
    assert!(needs_refresh(issued_at, expires_at, expires_at));
    assert!(needs_refresh(issued_at, expires_at, expires_at + 10));
    assert!(
        needs_refresh(issued_at, issued_at, issued_at),
        "no lifetime at all"
    );
    assert!(!needs_refresh(0, i64::MAX, 1), "no overflow");
}

#[tokio::test]
async fn a_task_token_is_exchanged_again_for_the_same_task_when_due() {
    let (base, seen) = serve(vec![
        // Already due at once: the first use exchanges again.
        issued("DPoP", "task-7", 0, "first"),
        issued("DPoP", "task-7", 600, "second"),
        decision(),
    ]);
    let key = Arc::new(key());
    let client = TokenClient::new(&base).unwrap();
    let task = TaskToken::start(
        client,
        key.clone(),
        SVID.to_owned(),
        Grant::TokenExchange,
        request(),
    )
    .await
    .unwrap();
    assert_eq!(task.task_id(), "task-7");
    assert_eq!(task.intent(), "fix the failing build");
    assert_eq!(field(&fields(&seen.recv().unwrap()), "task_id"), None);

    assert_eq!(task.access_token().await.unwrap(), "second");
    let again = fields(&seen.recv().unwrap());
    assert_eq!(field(&again, "task_id").unwrap(), "task-7");
    assert_eq!(field(&again, "subject_token").unwrap(), SVID);
    // Fresh now: no further exchange (the server has no more token answers).
    assert_eq!(task.access_token().await.unwrap(), "second");

    let got = task.authorize(&decide_request()).await.unwrap();
    assert_eq!(got.decision_id, "d1");
    let call = seen.recv().unwrap();
    assert_eq!(call.target, "/v1/decisions");
    assert_eq!(call.header("authorization"), Some("DPoP second"));
    assert_proof(
        &call,
        &key,
        "POST",
        &format!("{base}/v1/decisions"),
        Some("second"),
    );
    let body: serde_json::Value = serde_json::from_str(&call.body).unwrap();
    assert_eq!(body["task_id"], "task-7", "filled from the task");
    assert_eq!(body["intent"], "fix the failing build");
    assert!(!format!("{task:?}").contains("second"));
}

#[tokio::test]
async fn a_task_token_refuses_an_answer_for_another_task() {
    let (base, _seen) = serve(vec![
        issued("DPoP", "task-7", 0, "first"),
        issued("DPoP", "task-8", 600, "second"),
    ]);
    let task = TaskToken::start(
        TokenClient::new(&base).unwrap(),
        Arc::new(key()),
        SVID.to_owned(),
        Grant::JwtBearer,
        request(),
    )
    .await
    .unwrap();
    let err = task.access_token().await.unwrap_err();
    assert!(matches!(err, SdkError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn a_revoked_task_token_is_exchanged_again_on_next_use() {
    let (base, seen) = serve(vec![
        issued("DPoP", "task-7", 600, "first"),
        Reply {
            status: 200,
            headers: vec![],
            body: String::new(),
        },
        issued("DPoP", "task-7", 600, "second"),
    ]);
    let task = TaskToken::start(
        TokenClient::new(&base).unwrap(),
        Arc::new(key()),
        SVID.to_owned(),
        Grant::TokenExchange,
        request(),
    )
    .await
    .unwrap();
    task.revoke().await.unwrap();
    seen.recv().unwrap();
    let revoke = seen.recv().unwrap();
    assert_eq!(field(&fields(&revoke), "token").unwrap(), "first");
    assert_eq!(task.access_token().await.unwrap(), "second");
}
