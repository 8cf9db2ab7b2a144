//! Attacks on task tokens, driven over HTTP against the real server: forged and malformed JOSE
//! (RFC 8725, the CVEs of the test catalogue §2.1–14) at the token endpoint and at the
//! enforcement point `/v1/decisions`, and the token-exchange abuses of RFC 8693 (§2.15–22).
//!
//! Every refusal is checked three ways: the RFC error code (the token endpoint answers 400
//! `{"error": …}`, `/v1/decisions` answers 401 with a `WWW-Authenticate` challenge,
//! introspection answers `{"active": false}`), nothing issued (no token-endpoint audit event
//! naming a `token_id`, no new identity, no new task), and the refusal audited with its code.
//!
//! Claim-level attacks (`aud`, `exp`, `nbf`, duplicate members, nesting, `crit`, `kid`) are
//! signed with the server's *own* current key, read as an insider would from the data
//! directory's master key and the store: the signature verifies, so the refusal is for the
//! header or claim under test and not for an unknown key. Each such test first shows that a
//! token re-signed unchanged is accepted, so the forging itself is sound.

mod encoding;
mod exchange;
mod jose_claims;
mod jose_header;
mod parity;
mod proofs;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aims_core::audit::{AuditEvent, Outcome};
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_server::bootstrap::MASTER_KEY_FILE;
use aims_server::keyring::KeyRing;
use aims_store::TaskFilter;
use aims_token::dpop;
use aims_token::master::MasterKey;
use aims_token::signing::SigningKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use ring::hmac;
use ring::rand::SystemRandom;
use serde_json::{Map, Value, json};

use crate::kit::{Backend, Reply, TestServer, starter_files};
use crate::task_tokens::{
    AUDIENCE, GRANT_EXCHANGE, Held, Scene, TYPE_ACCESS, TYPE_JWT, access_token, attested, claims,
    repository,
};

const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const INTENT: &str = "fix the failing build";

// ---------------------------------------------------------------------------------------------
// Forging

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `b64(header).b64(claims).b64(signature)` from raw bytes, signed by `sign` over the first
/// two segments.
fn compact(header: &[u8], claims: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// Segment `i` of a compact JWS, decoded as a JSON object.
fn segment(token: &str, i: usize) -> Map<String, Value> {
    let text = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).unwrap())
        .unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn text(map: &Map<String, Value>) -> String {
    serde_json::to_string(map).unwrap()
}

/// An object's JSON text with `members` appended raw before its closing brace (for duplicate
/// member names, which `serde_json` cannot produce).
fn append_raw(object: &str, members: &str) -> String {
    let body = object.strip_suffix('}').unwrap();
    format!("{body},{members}}}")
}

/// `token` with its header edited and its claims untouched, carrying `signature`.
fn reheader(token: &str, edit: impl FnOnce(&mut Map<String, Value>), signature: &[u8]) -> String {
    let mut header = segment(token, 0);
    edit(&mut header);
    let payload = token.split('.').nth(1).unwrap();
    format!(
        "{}.{payload}.{}",
        b64(text(&header).as_bytes()),
        b64(signature)
    )
}

/// The server's own current signing key, read as an insider would (the master key file in
/// the data directory, the sealed keys in the store).
struct ServerKey {
    key: Arc<SigningKey>,
    rng: SystemRandom,
}

impl ServerKey {
    async fn load(server: &TestServer) -> Self {
        let master = std::fs::read_to_string(server.dir.path().join(MASTER_KEY_FILE)).unwrap();
        let master = MasterKey::from_base64(&master).unwrap();
        let rng = SystemRandom::new();
        let ring = KeyRing::load(&server.store.keys().await.unwrap(), &master, &rng).unwrap();
        Self {
            key: ring.current.clone(),
            rng,
        }
    }

    fn kid(&self) -> &str {
        self.key.kid()
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        self.key.sign(&self.rng, input).unwrap()
    }

    /// Raw header and claims texts, signed with the server's key.
    fn raw(&self, header: &[u8], claims: &[u8]) -> String {
        compact(header, claims, |input| self.sign(input))
    }

    /// `token` with its header and claims edited, re-signed with the server's key.
    fn resign(
        &self,
        token: &str,
        edit: impl FnOnce(&mut Map<String, Value>, &mut Map<String, Value>),
    ) -> String {
        let (mut header, mut claims) = (segment(token, 0), segment(token, 1));
        edit(&mut header, &mut claims);
        self.raw(text(&header).as_bytes(), text(&claims).as_bytes())
    }

    /// `token` with its claims edited, re-signed with the server's key.
    fn reclaim(&self, token: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        self.resign(token, |_, claims| edit(claims))
    }
}

/// A key the server has never seen, ES256 like ours.
fn attacker_key() -> SigningKey {
    SigningKey::generate(&SystemRandom::new()).unwrap().key
}

// ---------------------------------------------------------------------------------------------
// Observing

/// Whether an audit event records an issued credential.
fn is_issuance(event: &AuditEvent) -> bool {
    match event.action.as_str() {
        "token.exchange" | "token.delegate" => event.token_id.is_some(),
        "identity.issue" => true,
        _ => false,
    }
}

/// What has been issued so far: credentials (by their audit events) and tasks.
async fn issued(scene: &Scene) -> (usize, usize) {
    let credentials = scene
        .server
        .events()
        .await
        .iter()
        .filter(|e| is_issuance(e))
        .count();
    let tasks = scene
        .server
        .store
        .list_tasks(&TaskFilter::default())
        .await
        .unwrap()
        .len();
    (credentials, tasks)
}

/// Runs `request` and returns its reply with the audit events it added; asserts that it
/// issued nothing.
async fn unissued<F: std::future::Future<Output = Reply>>(
    scene: &Scene,
    case: &str,
    request: F,
) -> (Reply, Vec<AuditEvent>) {
    let before = scene.server.events().await.len();
    let issued_before = issued(scene).await;
    let reply = request.await;
    assert_eq!(
        issued(scene).await,
        issued_before,
        "{case}: nothing may be issued ({})",
        reply.body
    );
    let added = scene.server.events().await.split_off(before);
    (reply, added)
}

/// Asserts a token-endpoint refusal: 400 with `code`, not cached, nothing issued, and exactly
/// one audit event of the refusal carrying that code.
async fn refused(
    scene: &Scene,
    case: &str,
    form: &[(&str, &str)],
    proof: Option<&str>,
    code: &str,
) -> Reply {
    let (reply, added) = unissued(scene, case, scene.token(form, proof)).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{case}: {}",
        reply.body
    );
    assert_eq!(reply.code(), code, "{case}: {}", reply.body);
    assert_eq!(reply.headers["cache-control"], "no-store", "{case}");
    let audited: Vec<_> = added
        .iter()
        .filter(|e| e.action.starts_with("token."))
        .collect();
    assert_eq!(audited.len(), 1, "{case}: one audit event: {added:?}");
    assert_eq!(audited[0].outcome, Outcome::Denied, "{case}");
    assert_eq!(audited[0].code.as_deref(), Some(code), "{case}: audited");
    assert!(audited[0].token_id.is_none(), "{case}");
    let presented = form
        .iter()
        .filter(|(name, _)| ["subject_token", "actor_token", "assertion"].contains(name))
        .map(|(_, value)| *value);
    not_echoed(case, presented, &reply, audited[0]);
    eprintln!("token endpoint | {case} -> {code}");
    reply
}

/// Asserts that no presented token (or proof) appears in the answer or the audit record.
fn not_echoed<'a>(
    case: &str,
    presented: impl Iterator<Item = &'a str>,
    reply: &Reply,
    event: &AuditEvent,
) {
    let answer = reply.body.to_string();
    let record = serde_json::to_string(event).unwrap();
    for token in presented.filter(|t| t.len() > 16) {
        assert!(!answer.contains(token), "{case}: the answer echoes a token");
        assert!(
            !record.contains(token),
            "{case}: the audit log holds a token"
        );
    }
}

/// Asserts a refusal at `/v1/decisions` for `authorization` (and a `DPoP` header): 401 with a
/// challenge naming the code, no decision made, and one `api.reject` audit event with it.
async fn refused_decision(
    scene: &Scene,
    case: &str,
    authorization: &str,
    proof: Option<&str>,
) -> Reply {
    let mut req = scene
        .server
        .http
        .post(scene.url("/v1/decisions"))
        .header("Authorization", authorization)
        .json(&json!({"action": "read", "resource": repository("repo/acme/app")}));
    if let Some(proof) = proof {
        req = req.header("DPoP", proof);
    }
    let send = scene.server.send(req);
    let (reply, added) = unissued(scene, case, send).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {}",
        reply.body
    );
    let code = reply.code().to_owned();
    assert!(
        ["invalid_token", "invalid_svid", "invalid_dpop_proof"].contains(&code.as_str()),
        "{case}: {}",
        reply.body
    );
    let challenge = reply
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"))
        .to_str()
        .unwrap();
    assert!(
        challenge.contains(&format!("error=\"{code}\"")),
        "{case}: {challenge}"
    );
    assert!(
        added.iter().all(|e| e.action != "decision"),
        "{case}: no decision may be made"
    );
    let rejects: Vec<_> = added.iter().filter(|e| e.action == "api.reject").collect();
    assert_eq!(rejects.len(), 1, "{case}: one audit event: {added:?}");
    assert_eq!(rejects[0].code.as_deref(), Some(code.as_str()), "{case}");
    assert_eq!(
        rejects[0].resource.as_deref(),
        Some("POST /v1/decisions"),
        "{case}"
    );
    let token = authorization
        .split_once(' ')
        .map_or(authorization, |(_, t)| t);
    not_echoed(case, [token].into_iter().chain(proof), &reply, rejects[0]);
    eprintln!("/v1/decisions  | {case} -> 401 {code} ({challenge})");
    reply
}

/// Asserts that introspection calls `token` inactive, and nothing more.
async fn inactive(scene: &Scene, case: &str, token: &str) {
    let reply = scene.introspect(token).await;
    assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.body);
    assert_eq!(reply.body, json!({"active": false}), "{case}");
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A planner exchange of `subject` for a task token.
fn identity_form(subject: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", GRANT_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", TYPE_JWT),
        ("scope", "read:repo/acme/*"),
        ("audience", AUDIENCE),
        ("intent", INTENT),
    ]
}

/// A delegation of `parent` to the holder of `actor`.
fn delegation_form<'a>(parent: &'a str, actor: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", GRANT_EXCHANGE),
        ("subject_token", parent),
        ("subject_token_type", TYPE_ACCESS),
        ("actor_token", actor),
        ("actor_token_type", TYPE_JWT),
    ]
}

/// A fresh token-endpoint proof by `held`'s key.
fn token_proof(scene: &Scene, held: &Held) -> String {
    scene.proof(&held.key, "POST", "/oauth2/token", None)
}

/// Replaces (or adds) form parameter `name`.
fn with<'a>(
    mut form: Vec<(&'a str, &'a str)>,
    name: &'a str,
    value: &'a str,
) -> Vec<(&'a str, &'a str)> {
    form.retain(|(n, _)| *n != name);
    form.push((name, value));
    form
}

/// A scene with a real task token of the planner, and the server's key to forge with.
struct Lab {
    scene: Scene,
    access: String,
    key: ServerKey,
}

impl Lab {
    async fn start(backend: Backend) -> Self {
        let scene = Scene::start(backend).await;
        let access = access_token(&scene.exchange("read:repo/acme/* write:repo/acme/app").await);
        let key = ServerKey::load(&scene.server).await;
        Self { scene, access, key }
    }

    fn svid(&self) -> &str {
        &self.scene.planner.svid
    }

    /// The server's JWKS document, as served.
    async fn jwks_document(&self) -> Vec<u8> {
        let scene = &self.scene;
        let response = scene.server.http.get(scene.url("/.well-known/jwks.json"));
        response
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    fn issuer(&self) -> String {
        claims(self.svid())["iss"].as_str().unwrap().to_owned()
    }

    /// Re-signed unchanged, the planner's SVID and task token are accepted: whatever a test
    /// then sees refused is refused for what it changed.
    async fn controls(&self) {
        let scene = &self.scene;
        let svid = self.key.reclaim(self.svid(), |_| {});
        let proof = token_proof(scene, &scene.planner);
        let reply = scene.token(&identity_form(&svid), Some(&proof)).await;
        assert_eq!(reply.status, StatusCode::OK, "control: {}", reply.body);
        let access = self.key.reclaim(&self.access, |_| {});
        let reply = scene
            .decide(&scene.planner.key, &access, "read", "repo/acme/app")
            .await;
        // Accepted and decided (the starter policies do not let a planner read).
        assert_eq!(reply.status, StatusCode::OK, "control: {}", reply.body);
        assert_eq!(reply.body["decision"], "deny", "control");
    }

    /// A forged identity is refused as a token-exchange subject, as a JWT-bearer assertion,
    /// as the actor of a delegation (`invalid_grant` each), and as a bearer SVID at
    /// `/v1/decisions` (401). Returns the exchange's refusal.
    async fn identity_refused(&self, case: &str, token: &str) -> Reply {
        let scene = &self.scene;
        let planner = &scene.planner;
        let reply = refused(
            scene,
            &format!("{case} / subject_token"),
            &identity_form(token),
            Some(&token_proof(scene, planner)),
            "invalid_grant",
        )
        .await;
        let bearer_form = [
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", token),
            ("scope", "read:repo/acme/*"),
            ("resource", AUDIENCE),
            ("intent", INTENT),
        ];
        refused(
            scene,
            &format!("{case} / jwt-bearer assertion"),
            &bearer_form,
            Some(&token_proof(scene, planner)),
            "invalid_grant",
        )
        .await;
        refused(
            scene,
            &format!("{case} / actor_token"),
            &delegation_form(&self.access, token),
            Some(&token_proof(scene, planner)),
            "invalid_grant",
        )
        .await;
        refused_decision(
            scene,
            &format!("{case} / bearer SVID"),
            &format!("Bearer {token}"),
            None,
        )
        .await;
        reply
    }

    /// `forge` applied to the genuine SVID and to the genuine task token: both forgeries are
    /// refused everywhere, the identity's refusal saying `why`.
    async fn forgery_refused(&self, case: &str, forge: impl Fn(&str) -> String, why: &str) {
        let reply = self.identity_refused(case, &forge(self.svid())).await;
        assert!(description(&reply).contains(why), "{case}: {}", reply.body);
        self.access_refused(case, &forge(&self.access)).await;
    }

    /// A forged task token is refused at `/v1/decisions` with a valid DPoP proof of the
    /// planner's key (401 `invalid_token` with a DPoP challenge, RFC 9449 §7.1), as a
    /// delegation subject (`invalid_grant`), and is inactive at introspection. Returns the
    /// decision's refusal.
    async fn access_refused(&self, case: &str, token: &str) -> Reply {
        let scene = &self.scene;
        let planner = &scene.planner;
        let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(token));
        let reply = refused_decision(
            scene,
            &format!("{case} / DPoP access token"),
            &format!("DPoP {token}"),
            Some(&proof),
        )
        .await;
        assert_eq!(reply.code(), "invalid_token", "{case}");
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("DPoP "), "{case}: {challenge}");
        refused(
            scene,
            &format!("{case} / delegation subject_token"),
            &delegation_form(token, &scene.executor.svid),
            Some(&token_proof(scene, planner)),
            "invalid_grant",
        )
        .await;
        inactive(scene, case, token).await;
        reply
    }
}

/// An edit that sets claim `name` to `value`, or removes it when `value` is null.
fn set_claim<'a>(name: &'a str, value: &'a Value) -> impl Fn(&mut Map<String, Value>) + Copy + 'a {
    move |claims| {
        if value.is_null() {
            claims.remove(name);
        } else {
            claims.insert(name.to_owned(), value.clone());
        }
    }
}

fn description(reply: &Reply) -> String {
    reply.body["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
