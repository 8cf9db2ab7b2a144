//! Task tokens over HTTP: token exchange with DPoP, scopes granted by `obtain` decisions,
//! delegation that only narrows, decisions with task tokens, introspection and revocation
//! (RFC 7662 / 7009), cascading revocation that every enforcement point sees, and the
//! revocation gauges operators watch replica lag with.

use std::sync::Arc;

use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use aims_token::dpop;
use aims_token::jws::Alg;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, Reply, TestServer, starter_files};
use crate::on_both_stores;

on_both_stores!(
    exchange_grants_what_policy_allows,
    delegation_narrows_and_revocation_cascades,
    refused_exchanges_issue_nothing,
    a_dpop_proof_is_used_once,
    enforcement_points_require_this_servers_dpop_nonce,
    introspection_and_revocation_follow_the_rfcs,
    policies_cap_token_lifetimes,
    a_suspended_agents_tokens_are_refused_at_once,
    revocation_gauges_follow_the_log,
    an_svid_is_verified_once_at_the_token_endpoint,
    an_ed25519_key_may_name_its_algorithm_ed25519,
    an_exchange_decided_on_an_older_record_is_refused,
);

pub const AUDIENCE: &str = "https://tools.acme.example/repo";
pub const GRANT_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An attested agent: its key and SVID.
pub struct Held {
    pub key: Arc<AgentKey>,
    pub svid: String,
}

/// A server with the starter policies, a resource server, a planner and an executor.
pub struct Scene {
    pub server: TestServer,
    pub planner: Held,
    pub executor: Held,
    pub rs_secret: String,
    /// The server's last `DPoP-Nonce`, put in every proof (the enforcement points require it).
    nonce: std::sync::Mutex<Option<String>>,
}

/// Registers (with `extra` registry fields) and attests an agent.
pub async fn attested(server: &TestServer, name: &str, role: &str, extra: Value) -> Held {
    let key = AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap();
    attested_with(server, name, role, extra, key).await
}

/// Registers (with `extra` registry fields) and attests an agent holding `key`.
pub async fn attested_with(
    server: &TestServer,
    name: &str,
    role: &str,
    extra: Value,
    key: AgentKey,
) -> Held {
    let mut body = json!({"name": name, "owner": "alice@acme.example",
                          "labels": {"role": role}});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let reply = server.admin(Method::POST, "/v1/agents", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let join = reply.body["join_token"].as_str().unwrap().to_owned();
    let key = Arc::new(key);
    let svid = Attestor::new(AdminClient::new(&server.base, None).unwrap(), key.clone())
        .attest(&Default::default(), &Credential::JoinToken(join), None)
        .await
        .unwrap()
        .svid;
    Held { key, svid }
}

impl Scene {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, json!({}), json!({})).await
    }

    /// The scene on an already started server.
    pub async fn on(server: TestServer) -> Self {
        Self::setup(server, json!({}), json!({})).await
    }

    /// With extra registry fields for the planner and the executor.
    pub async fn start_with(backend: Backend, planner: Value, executor: Value) -> Self {
        Self::setup(TestServer::start(backend).await, planner, executor).await
    }

    async fn setup(server: TestServer, planner: Value, executor: Value) -> Self {
        Self::push_policies(&server, &[]).await;
        let rs = server
            .admin(
                Method::POST,
                "/v1/resource-servers",
                Some(json!({"name": "repo-tools", "audience": AUDIENCE, "system": "github"})),
            )
            .await;
        assert_eq!(rs.status, StatusCode::CREATED, "{}", rs.body);
        let rs_secret = rs.body["client_secret"].as_str().unwrap().to_owned();
        let planner = attested(&server, "planner", "planner", planner).await;
        let executor = attested(&server, "executor", "executor", executor).await;
        let scene = Self {
            server,
            planner,
            executor,
            rs_secret,
            nonce: std::sync::Mutex::new(None),
        };
        // Any answer to a DPoP request carries a nonce: learn the first one.
        let probe = scene
            .server
            .send(
                scene
                    .server
                    .http
                    .post(scene.url("/v1/decisions"))
                    .header("Authorization", "DPoP x"),
            )
            .await;
        scene.remember_nonce(&probe);
        scene
    }

    /// The server's last DPoP nonce.
    pub fn nonce(&self) -> Option<String> {
        self.nonce.lock().unwrap().clone()
    }

    /// Keeps the `DPoP-Nonce` of `reply`, if it has one.
    pub fn remember_nonce(&self, reply: &Reply) {
        if let Some(nonce) = reply.headers.get("dpop-nonce") {
            *self.nonce.lock().unwrap() = Some(nonce.to_str().unwrap().to_owned());
        }
    }

    /// Pushes the starter policies plus `extra` files (name, Cedar text).
    pub async fn push_policies(server: &TestServer, extra: &[(&str, &str)]) {
        let mut files = starter_files();
        files.extend(
            extra
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
        );
        let pushed = server
            .admin(Method::POST, "/v1/policies", Some(json!({"files": files})))
            .await;
        assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.body);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    /// A DPoP proof by `key` for `method` on `path` of the server, with its last nonce.
    pub fn proof(&self, key: &AgentKey, method: &str, path: &str, token: Option<&str>) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let nonce = self.nonce();
        dpop::sign_proof_with_nonce(
            key,
            &SystemRandom::new(),
            method,
            &self.url(path),
            token,
            nonce.as_deref(),
            now,
        )
        .unwrap()
    }

    /// POSTs a form to the token endpoint with an optional DPoP proof.
    pub async fn token(&self, form: &[(&str, &str)], proof: Option<&str>) -> Reply {
        let mut req = self.server.http.post(self.url("/oauth2/token")).form(form);
        if let Some(proof) = proof {
            req = req.header("DPoP", proof);
        }
        self.server.send(req).await
    }

    /// The planner's token exchange for `scope`, proved with its key.
    pub async fn exchange(&self, scope: &str) -> Reply {
        let proof = self.proof(&self.planner.key, "POST", "/oauth2/token", None);
        self.token(
            &[
                ("grant_type", GRANT_EXCHANGE),
                ("subject_token", &self.planner.svid),
                ("subject_token_type", TYPE_JWT),
                ("scope", scope),
                ("audience", AUDIENCE),
                ("intent", "fix the failing build"),
            ],
            Some(&proof),
        )
        .await
    }

    /// The planner delegates `parent` (its token) to the executor.
    pub async fn delegate(&self, parent: &str, extra: &[(&str, &str)]) -> Reply {
        let proof = self.proof(&self.planner.key, "POST", "/oauth2/token", None);
        let mut form = vec![
            ("grant_type", GRANT_EXCHANGE),
            ("subject_token", parent),
            ("subject_token_type", TYPE_ACCESS),
            ("actor_token", self.executor.svid.as_str()),
            ("actor_token_type", TYPE_JWT),
        ];
        form.extend_from_slice(extra);
        self.token(&form, Some(&proof)).await
    }

    /// A decision with a DPoP-bound task token held by `key`.
    pub async fn decide(&self, key: &AgentKey, token: &str, action: &str, id: &str) -> Reply {
        let proof = self.proof(key, "POST", "/v1/decisions", Some(token));
        self.decide_with_proof(token, &proof, action, id).await
    }

    /// A decision with a DPoP-bound task token and a given proof (to replay one).
    pub async fn decide_with_proof(
        &self,
        token: &str,
        proof: &str,
        action: &str,
        id: &str,
    ) -> Reply {
        let req = self
            .server
            .http
            .post(self.url("/v1/decisions"))
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .json(&json!({"action": action, "resource": repository(id)}));
        let reply = self.server.send(req).await;
        self.remember_nonce(&reply);
        reply
    }

    /// Introspects `token` as the resource server.
    pub async fn introspect(&self, token: &str) -> Reply {
        let req = self
            .server
            .http
            .post(self.url("/oauth2/introspect"))
            .basic_auth("repo-tools", Some(&self.rs_secret))
            .form(&[("token", token)]);
        self.server.send(req).await
    }
}

pub fn repository(id: &str) -> Value {
    json!({"type": "Resource", "id": id, "system": "github", "environment": "dev",
           "sensitivity": "internal", "kind": "repository"})
}

/// The claims of a JWT, unverified (the server's own tests check what it minted).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

pub fn access_token(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["access_token"].as_str().unwrap().to_owned()
}

/// RFC 9864: an Ed25519 key's proofs may name the algorithm `Ed25519` instead of `EdDSA`, at
/// attestation, at the token endpoint and at an enforcement point; the metadata says so.
async fn an_ed25519_key_may_name_its_algorithm_ed25519(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let metadata = server
        .call(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None,
        )
        .await;
    assert_eq!(
        metadata.body["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "Ed25519"])
    );
    let key = AgentKey::generate(AgentKeyKind::Ed25519, &SystemRandom::new())
        .unwrap()
        .signing_as(Alg::Ed25519)
        .unwrap();
    let agent = attested_with(server, "planner-ed", "planner", json!({}), key).await;
    let proof = scene.proof(&agent.key, "POST", "/oauth2/token", None);
    assert_eq!(header(&proof)["alg"], "Ed25519");
    let reply = scene
        .token(
            &[
                ("grant_type", GRANT_EXCHANGE),
                ("subject_token", &agent.svid),
                ("subject_token_type", TYPE_JWT),
                ("scope", "read:repo/acme/*"),
                ("audience", AUDIENCE),
                ("intent", "fix the failing build"),
            ],
            Some(&proof),
        )
        .await;
    let token = access_token(&reply);
    assert_eq!(reply.body["token_type"], "DPoP");
    assert_eq!(claims(&token)["cnf"]["jkt"], agent.key.thumbprint());
    let decided = scene
        .decide(&agent.key, &token, "read", "repo/acme/app")
        .await;
    // The proof was accepted: the question reached the policies (which decide what they do).
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.body);
    assert!(decided.body["decision_id"].is_string(), "{}", decided.body);
}

async fn exchange_grants_what_policy_allows(backend: Backend) {
    let scene = Scene::start(backend).await;
    // `delete` is asked for but no policy grants it: the response says what was granted.
    let reply = scene
        .exchange("read:repo/acme/* write:repo/acme/app delete:repo/acme/app")
        .await;
    let token = access_token(&reply);
    assert_eq!(reply.body["scope"], "read:repo/acme/* write:repo/acme/app");
    assert_eq!(reply.body["token_type"], "DPoP");
    assert_eq!(reply.body["issued_token_type"], TYPE_ACCESS);
    assert!(
        reply.body["expires_in"].as_u64().unwrap() <= 600,
        "capped by the SVID"
    );
    assert_eq!(reply.headers["cache-control"], "no-store");

    let head = header(&token);
    assert_eq!(head["typ"], "at+jwt");
    assert_eq!(head["alg"], "ES256");
    assert!(head["kid"].is_string());
    let c = claims(&token);
    assert_eq!(c["client_id"], "spiffe://test.example/agent/planner");
    assert_eq!(c["sub"], "spiffe://test.example/agent/planner");
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["intent"], "fix the failing build");
    assert_eq!(c["cnf"]["jkt"], scene.planner.key.thumbprint());
    assert!(c.get("act").is_none());
    let task_id = c["task_id"].as_str().unwrap().to_owned();

    // The task exists; a second exchange for it reuses it.
    let task = scene
        .server
        .admin(Method::GET, &format!("/v1/tasks/{task_id}"), None)
        .await;
    assert_eq!(task.body["state"], "active", "{}", task.body);
    assert_eq!(task.body["agent"], "planner");
    let proof = scene.proof(&scene.planner.key, "POST", "/oauth2/token", None);
    let again = scene
        .token(
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &scene.planner.svid),
                ("scope", "read:repo/acme/app"),
                ("resource", AUDIENCE),
                ("task_id", &task_id),
            ],
            Some(&proof),
        )
        .await;
    assert_eq!(claims(&access_token(&again))["task_id"], task_id.as_str());

    // Calls are bounded by the token's scope before any policy runs.
    let out = scene
        .decide(&scene.planner.key, &token, "delete", "repo/acme/app")
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    assert_eq!(out.body["decision"], "deny");
    let event = scene.server.last_event("decision").await;
    assert_eq!(event.task_id.as_deref(), Some(task_id.as_str()));
    assert_eq!(event.details["reason"], "outside_token_scope");

    // A DPoP-bound token presented as a bearer token is refused.
    let bearer = scene
        .server
        .call(
            Method::POST,
            "/v1/decisions",
            Some(&token),
            Some(json!({"action": "read", "resource": repository("repo/acme/app")})),
        )
        .await;
    assert_eq!(bearer.status, StatusCode::UNAUTHORIZED, "{}", bearer.body);
    assert!(
        bearer.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("DPoP")
    );

    let exchanged = scene.server.last_event("token.exchange").await;
    assert_eq!(exchanged.task_id.as_deref(), Some(task_id.as_str()));
    assert_eq!(
        exchanged.agent.as_deref(),
        Some("spiffe://test.example/agent/planner")
    );
}

async fn delegation_narrows_and_revocation_cascades(backend: Backend) {
    let scene = Scene::start(backend).await;
    let parent = access_token(&scene.exchange("read:repo/acme/* write:repo/acme/app").await);
    let parent_claims = claims(&parent);

    // Asking for more than the parent holds is refused; asking for longer is capped.
    let wider = scene
        .delegate(&parent, &[("scope", "write:repo/acme/*")])
        .await;
    assert_eq!(wider.status, StatusCode::BAD_REQUEST);
    assert_eq!(wider.body["error"], "invalid_scope", "{}", wider.body);
    let reply = scene
        .delegate(
            &parent,
            &[("scope", "read:repo/acme/app"), ("expires_in", "86400")],
        )
        .await;
    let child = access_token(&reply);
    let c = claims(&child);
    assert_eq!(c["scope"], "read:repo/acme/app");
    assert_eq!(c["client_id"], "spiffe://test.example/agent/executor");
    assert_eq!(c["sub"], parent_claims["sub"]);
    assert_eq!(c["task_id"], parent_claims["task_id"]);
    assert!(c["exp"].as_i64() <= parent_claims["exp"].as_i64());
    assert_eq!(c["cnf"]["jkt"], scene.executor.key.thumbprint());
    assert_eq!(
        c["act"],
        json!({"sub": "spiffe://test.example/agent/executor",
               "act": {"sub": "spiffe://test.example/agent/planner"}})
    );

    // The executor acts within its token; the planner's key cannot use it.
    let read = scene
        .decide(&scene.executor.key, &child, "read", "repo/acme/app")
        .await;
    assert_eq!(read.body["decision"], "allow", "{}", read.body);
    let other = scene
        .decide(&scene.executor.key, &child, "read", "repo/acme/other")
        .await;
    assert_eq!(other.body["decision"], "deny");
    let stolen = scene
        .decide(&scene.planner.key, &child, "read", "repo/acme/app")
        .await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{}", stolen.body);
    let event = scene.server.last_event("token.delegate").await;
    assert_eq!(
        event.delegation_chain,
        vec![
            "spiffe://test.example/agent/executor".to_owned(),
            "spiffe://test.example/agent/planner".to_owned()
        ]
    );

    // Ending the planner's task refuses the executor at once, on this replica.
    let task_id = parent_claims["task_id"].as_str().unwrap();
    let ended = scene
        .server
        .admin(Method::POST, &format!("/v1/tasks/{task_id}/end"), None)
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.body["revoked"], 2);
    assert_eq!(ended.body["task"]["state"], "ended");
    let after = scene
        .decide(&scene.executor.key, &child, "read", "repo/acme/app")
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);
    assert_eq!(
        scene.introspect(&child).await.body,
        json!({"active": false})
    );
    // Nothing more can be issued for the ended task.
    let late = scene.delegate(&parent, &[]).await;
    assert_eq!(late.body["error"], "invalid_grant", "{}", late.body);
}

/// A refused exchange: its name, form, DPoP proof and the expected RFC error code.
type RefusalCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<String>, &'a str);

async fn refused_exchanges_issue_nothing(backend: Backend) {
    let scene = Scene::start_with(
        backend,
        json!({"limits": {"max_delegation_depth": 0}}),
        json!({}),
    )
    .await;
    let tokens_before = scene.server.count_events("token.exchange").await;
    let proof = || scene.proof(&scene.planner.key, "POST", "/oauth2/token", None);
    let base = |scope: &'static str, audience: &'static str| {
        vec![
            ("grant_type", GRANT_EXCHANGE),
            ("subject_token_type", TYPE_JWT),
            ("scope", scope),
            ("audience", audience),
            ("intent", "x"),
        ]
    };
    let cases: Vec<RefusalCase> = vec![
        (
            "unknown target",
            base("read:a", "https://nowhere.example"),
            Some(proof()),
            "invalid_target",
        ),
        (
            "no scope granted",
            base("delete:a", AUDIENCE),
            Some(proof()),
            "invalid_scope",
        ),
        (
            "malformed scope",
            base("read", AUDIENCE),
            Some(proof()),
            "invalid_scope",
        ),
        (
            "no DPoP proof",
            base("read:a", AUDIENCE),
            None,
            "invalid_request",
        ),
        (
            "proof by another key",
            base("read:a", AUDIENCE),
            Some(scene.proof(&scene.executor.key, "POST", "/oauth2/token", None)),
            "invalid_dpop_proof",
        ),
        (
            "proof for another URI",
            base("read:a", AUDIENCE),
            Some(scene.proof(&scene.planner.key, "POST", "/v1/decisions", None)),
            "invalid_dpop_proof",
        ),
    ];
    for (name, mut form, proof, code) in cases {
        form.push(("subject_token", &scene.planner.svid));
        let reply = scene.token(&form, proof.as_deref()).await;
        assert_eq!(reply.body["error"], code, "{name}: {}", reply.body);
        assert!(reply.status.is_client_error(), "{name}");
        let event = scene.server.last_event("token.exchange").await;
        assert_eq!(event.code.as_deref(), Some(code), "{name}: audited");
    }
    let other = scene
        .token(&[("grant_type", "password"), ("username", "x")], None)
        .await;
    assert_eq!(other.body["error"], "unsupported_grant_type");
    let duplicated = scene
        .server
        .send(
            scene
                .server
                .http
                .post(scene.url("/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=a&grant_type=b"),
        )
        .await;
    assert_eq!(duplicated.body["error"], "invalid_request");

    // Depth: the planner may not delegate at all (its limit is 0).
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    let deep = scene.delegate(&parent, &[]).await;
    assert_eq!(deep.body["error"], "invalid_grant", "{}", deep.body);
    // The executor is not allowed to delegate by policy.
    let executor_token = {
        let proof = scene.proof(&scene.executor.key, "POST", "/oauth2/token", None);
        scene
            .token(
                &[
                    ("grant_type", GRANT_EXCHANGE),
                    ("subject_token", &scene.executor.svid),
                    ("subject_token_type", TYPE_JWT),
                    ("scope", "read:repo/acme/app"),
                    ("audience", AUDIENCE),
                    ("intent", "x"),
                ],
                Some(&proof),
            )
            .await
    };
    assert_eq!(
        executor_token.body["error"], "invalid_scope",
        "executors obtain nothing"
    );

    // A revoked identity gets nothing.
    let jti = claims(&scene.planner.svid)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = scene
        .server
        .admin(
            Method::POST,
            "/v1/revocations",
            Some(json!({"target": "token", "id": jti, "reason": "test"})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(
        revoked.body["revoked"], 2,
        "the identity and the token exchanged for it"
    );
    let refused = scene.exchange("read:repo/acme/*").await;
    assert_eq!(refused.body["error"], "invalid_grant", "{}", refused.body);

    // Only the one successful exchange issued anything.
    let issued: Vec<_> = scene
        .server
        .events()
        .await
        .into_iter()
        .filter(|e| e.action == "token.exchange" && e.token_id.is_some())
        .collect();
    assert_eq!(issued.len(), 1);
    assert!(scene.server.count_events("token.exchange").await > tokens_before + 8);
}

async fn a_dpop_proof_is_used_once(backend: Backend) {
    let scene = Scene::start(backend).await;
    let proof = scene.proof(&scene.planner.key, "POST", "/oauth2/token", None);
    let form = [
        ("grant_type", GRANT_EXCHANGE),
        ("subject_token", scene.planner.svid.as_str()),
        ("subject_token_type", TYPE_JWT),
        ("scope", "read:repo/acme/*"),
        ("audience", AUDIENCE),
        ("intent", "x"),
    ];
    let (a, b) = tokio::join!(
        scene.token(&form, Some(&proof)),
        scene.token(&form, Some(&proof))
    );
    let ok = [&a, &b]
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{} / {}", a.body, b.body);
    let refused = if a.status == StatusCode::OK { &b } else { &a };
    assert_eq!(refused.body["error"], "invalid_dpop_proof");

    // At an enforcement point too.
    let token = access_token(if a.status == StatusCode::OK { &a } else { &b });
    let decision_proof = scene.proof(&scene.planner.key, "POST", "/v1/decisions", Some(&token));
    let call = || scene.decide_with_proof(&token, &decision_proof, "read", "repo/acme/app");
    let (x, y) = tokio::join!(call(), call());
    let statuses = [x.status, y.status];
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::UNAUTHORIZED));
}

/// RFC 9449 §9: the decision endpoint accepts a DPoP proof only with a nonce it handed out
/// and that is still fresh; it answers every DPoP request with a new one, and a proof without
/// one (or with a stranger's) with `use_dpop_nonce`. The token endpoint needs none.
async fn enforcement_points_require_this_servers_dpop_nonce(backend: Backend) {
    let scene = Scene::start(backend).await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let key = &scene.planner.key;
    let sign = |nonce: Option<&str>| {
        dpop::sign_proof_with_nonce(
            key,
            &SystemRandom::new(),
            "POST",
            &scene.url("/v1/decisions"),
            Some(&token),
            nonce,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap()
    };
    let stranger = Scene::start(backend).await.nonce().unwrap();
    let fresh = scene.nonce().unwrap();
    let mut tampered = fresh.clone();
    tampered.replace_range(..1, if fresh.starts_with('A') { "B" } else { "A" });
    for (case, nonce) in [
        ("no nonce", None),
        ("another server's nonce", Some(stranger.as_str())),
        ("a tampered nonce", Some(tampered.as_str())),
        ("not a nonce", Some("x")),
    ] {
        let reply = scene
            .decide_with_proof(&token, &sign(nonce), "read", "repo/acme/app")
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "use_dpop_nonce"),
            "{case}: {}",
            reply.body
        );
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("DPoP error=\"use_dpop_nonce\""),
            "{case}: {challenge}"
        );
        assert!(reply.headers.contains_key("dpop-nonce"), "{case}");
    }
    // With the nonce it handed out last: allowed, and the answer carries the next one.
    let nonce = scene.nonce().unwrap();
    let reply = scene
        .decide_with_proof(&token, &sign(Some(&nonce)), "read", "repo/acme/app")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.headers.contains_key("dpop-nonce"));
    // An SVID is a bearer credential: no proof, no nonce.
    let bearer = scene
        .server
        .send(
            scene
                .server
                .http
                .post(scene.url("/v1/decisions"))
                .bearer_auth(&scene.planner.svid)
                .json(&json!({"action": "read", "resource": repository("repo/acme/app")})),
        )
        .await;
    assert_ne!(bearer.code(), "use_dpop_nonce", "{}", bearer.body);
    assert!(!bearer.headers.contains_key("dpop-nonce"));
}

async fn introspection_and_revocation_follow_the_rfcs(backend: Backend) {
    let scene = Scene::start(backend).await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);

    // Introspection needs a registered resource server (or an operator).
    let anonymous = scene
        .server
        .send(
            scene
                .server
                .http
                .post(scene.url("/oauth2/introspect"))
                .form(&[("token", token.as_str())]),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["error"], "invalid_client");
    let active = scene.introspect(&token).await;
    assert_eq!(active.body["active"], true, "{}", active.body);
    // Client credentials are form-urlencoded before Basic encoding (RFC 6749 §2.3.1).
    let encoded = scene
        .server
        .send(
            scene
                .server
                .http
                .post(scene.url("/oauth2/introspect"))
                .basic_auth("repo%2Dtools", Some(scene.rs_secret.replace('_', "%5F")))
                .form(&[("token", token.as_str())]),
        )
        .await;
    assert_eq!(encoded.body["active"], true, "{}", encoded.body);
    assert_eq!(active.body["scope"], "read:repo/acme/*");
    assert_eq!(active.body["token_type"], "DPoP");
    assert_eq!(
        active.body["client_id"],
        "spiffe://test.example/agent/planner"
    );
    assert_eq!(
        scene.introspect("not-a-token").await.body,
        json!({"active": false})
    );
    assert_eq!(
        scene.introspect(&scene.planner.svid).await.body,
        json!({"active": false})
    );

    // Revocation: 200 for unknown tokens; the holder may revoke its own.
    let revoke = |token: String| {
        let server = &scene.server;
        let url = scene.url("/oauth2/revoke");
        async move {
            let request = server.http.post(url).form(&[("token", token.as_str())]);
            server.send(request).await.status
        }
    };
    assert_eq!(revoke("garbage".into()).await, StatusCode::OK);
    assert_eq!(revoke(token.clone()).await, StatusCode::OK);
    assert_eq!(
        scene.introspect(&token).await.body,
        json!({"active": false})
    );
    let event = scene.server.last_event("revoke").await;
    assert_eq!(event.token_id.as_deref(), claims(&token)["jti"].as_str());

    // The feed lists it, for resource servers and operators only.
    let feed = scene
        .server
        .send(
            scene
                .server
                .http
                .get(scene.url("/v1/revocations?since=0"))
                .basic_auth("repo-tools", Some(&scene.rs_secret)),
        )
        .await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.body);
    let jtis: Vec<_> = feed.body["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["jti"].clone())
        .collect();
    assert!(jtis.contains(&claims(&token)["jti"]));
    let as_admin = scene
        .server
        .call(
            Method::GET,
            "/v1/revocations?since=0",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(as_admin.status, StatusCode::OK);
    let anonymous = scene
        .server
        .call(Method::GET, "/v1/revocations?since=0", None, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let metadata = scene
        .server
        .call(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None,
        )
        .await;
    assert_eq!(
        metadata.body["token_endpoint"],
        scene.url("/oauth2/token").as_str()
    );
    assert!(
        metadata.body["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT_EXCHANGE))
    );
}

/// `@max_token_ttl_s` on a deciding permit caps the token: for an exchange, the strictest cap
/// among the granted scopes' permits; for a delegation, the `delegate` permit's.
async fn policies_cap_token_lifetimes(backend: Backend) {
    let scene = Scene::start(backend).await;
    let lifetime = |token: &str| {
        let c = claims(token);
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
    };
    let read_only = access_token(&scene.exchange("read:repo/acme/*").await);
    assert!(lifetime(&read_only) > 90, "no cap on reads");
    let event = scene.server.last_event("token.exchange").await;
    assert_eq!(event.details["policy_max_token_ttl_s"], Value::Null);

    Scene::push_policies(
        &scene.server,
        &[(
            "short.cedar",
            r#"@id("writes-are-short") @max_token_ttl_s("90")
               permit(principal, action == Aims::Action::"obtain", resource is Aims::Scope)
               when { resource.kind == "write" };"#,
        )],
    )
    .await;
    let reply = scene.exchange("read:repo/acme/* write:repo/acme/app").await;
    assert!(
        reply.body["expires_in"].as_u64().unwrap() <= 90,
        "{}",
        reply.body
    );
    let mixed = access_token(&reply);
    assert!(lifetime(&mixed) <= 90);
    let event = scene.server.last_event("token.exchange").await;
    assert_eq!(event.details["policy_max_token_ttl_s"], 90);
    assert!(lifetime(&access_token(&scene.exchange("read:repo/acme/*").await)) > 90);

    // The starter `delegate` permit says 300 s, below the parent's lifetime.
    assert!(
        lifetime(&read_only) > 300,
        "parent {}",
        lifetime(&read_only)
    );
    let child = scene.delegate(&read_only, &[("expires_in", "86400")]).await;
    let child = access_token(&child);
    assert!(lifetime(&child) <= 300, "child {}", lifetime(&child));
    let event = scene.server.last_event("token.delegate").await;
    assert_eq!(event.details["policy_max_token_ttl_s"], 300);
}

/// The value of the unlabelled gauge `name` in an OpenMetrics text exposition.
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .parse()
        .unwrap()
}

/// The server's `/metrics` exposition, which needs no credential.
async fn scrape(scene: &Scene) -> String {
    let resp = scene
        .server
        .http
        .get(scene.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "no credential needed");
    resp.text().await.unwrap()
}

/// `/metrics` shows the revocation-log position this replica applied and how many revoked
/// token ids it remembers; the replica that revoked has applied its revocation when it answers.
async fn revocation_gauges_follow_the_log(backend: Backend) {
    let scene = Scene::start(backend).await;
    let scrape = || scrape(&scene);
    let before = scrape().await;
    assert_eq!(gauge(&before, "aims_revocation_log_position"), 0);
    assert_eq!(gauge(&before, "aims_revoked_tokens_tracked"), 0);

    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    access_token(&scene.delegate(&parent, &[]).await);
    let revoked = scene
        .server
        .admin(
            Method::POST,
            "/v1/revocations",
            Some(json!({"target": "token", "id": claims(&parent)["jti"], "reason": "test"})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(
        revoked.body["revoked"], 2,
        "the token and its delegated child"
    );

    let after = scrape().await;
    // Two entries; PostgreSQL's positions may leave gaps, so they are not a count.
    assert!(
        gauge(&after, "aims_revocation_log_position") >= 2,
        "{after}"
    );
    assert_eq!(
        gauge(&after, "aims_revoked_tokens_tracked"),
        2,
        "both are remembered until they expire"
    );
}

/// The replica that revokes (here by suspending the agent) refuses at once, without waiting
/// for its next read of the revocation log.
async fn a_suspended_agents_tokens_are_refused_at_once(backend: Backend) {
    let scene = Scene::start(backend).await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let decided = scene
        .decide(&scene.planner.key, &token, "read", "repo/acme/app")
        .await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.body);
    let suspended = scene
        .server
        .admin(Method::POST, "/v1/agents/planner/suspend", Some(json!({})))
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    let refused = scene
        .decide(&scene.planner.key, &token, "read", "repo/acme/app")
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
}

/// The token endpoint verifies an SVID's signature once and takes it from the replica's
/// verified-token cache afterwards (`aims_verified_token_cache_hits`). Revocation still
/// applies: `refused_exchanges_issue_nothing` revokes an SVID cached this way.
async fn an_svid_is_verified_once_at_the_token_endpoint(backend: Backend) {
    let scene = Scene::start(backend).await;
    let hits = || async { gauge(&scrape(&scene).await, "aims_verified_token_cache_hits") };
    let first = scene.exchange("read:repo/acme/app").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let before = hits().await;
    let second = scene.exchange("read:repo/acme/app").await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(hits().await, before + 1, "the SVID was verified again");
}

/// An exchange is decided on the replica's registry view and commits only if the agent's
/// record is still at the revision it was decided on. A change another replica wrote (here
/// straight to the store) that this replica has not read yet refuses the exchange, and nothing
/// is issued; once the view holds the change, the next exchange is issued.
async fn an_exchange_decided_on_an_older_record_is_refused(backend: Backend) {
    let server = TestServer::start_tuned(backend, |config| {
        // The view reads the change log only when this replica changes the registry itself.
        config.revocation_poll = std::time::Duration::from_secs(3600);
        config.revocation_max_staleness = std::time::Duration::from_secs(7200);
    })
    .await;
    let scene = Scene::on(server).await;
    let first = scene.exchange("read:repo/acme/app").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    let name = aims_core::id::AgentName::new("planner").unwrap();
    let mut elsewhere = scene.server.store.agent(&name).await.unwrap().unwrap();
    let expected = elsewhere.revision;
    elsewhere.revision += 1;
    elsewhere.description = "changed by another replica".to_owned();
    elsewhere.updated_at = time::OffsetDateTime::now_utc();
    let event = aims_core::audit::AuditEvent::new(
        elsewhere.updated_at,
        aims_core::audit::Actor::System,
        aims_core::audit::action::AGENT_UPDATE,
        aims_core::audit::Outcome::Success,
    );
    scene
        .server
        .store
        .update_agent(&elsewhere, expected, &event)
        .await
        .unwrap();
    let issued_before = scene.server.count_rows("credentials").await;
    let refused = scene.exchange("read:repo/acme/app").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.body["error"], "invalid_grant", "{}", refused.body);
    assert!(
        refused.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("record changed")),
        "{}",
        refused.body
    );
    assert_eq!(scene.server.count_rows("credentials").await, issued_before);

    // A change on this replica brings its view up to date.
    let patched = scene
        .server
        .admin(
            Method::PATCH,
            "/v1/agents/planner",
            Some(json!({"description": "changed here"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let issued = scene.exchange("read:repo/acme/app").await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.body);
}
