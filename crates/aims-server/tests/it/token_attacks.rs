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
use crate::on_both_stores;
use crate::tokens::{
    AUDIENCE, GRANT_EXCHANGE, Held, Scene, TYPE_ACCESS, TYPE_JWT, access_token, attested, claims,
    repository,
};

on_both_stores!(
    alg_none_is_refused_in_every_casing,
    hs256_signed_with_our_public_key_is_refused,
    zero_and_empty_ecdsa_signatures_are_refused,
    an_embedded_jwk_is_not_trusted,
    jku_and_x5u_are_never_fetched,
    hostile_kids_are_refused_without_leaking,
    an_unknown_crit_is_refused,
    a_token_of_one_kind_is_not_another,
    audience_must_be_the_one_expected_string,
    exp_must_be_present_and_an_integer,
    nbf_and_iat_in_the_future_are_refused,
    duplicate_json_members_are_refused,
    malformed_compact_serializations_are_refused,
    oversized_tokens_are_refused_cleanly,
    deeply_nested_claims_are_refused,
    delegation_cannot_widen_scope,
    unknown_or_other_targets_are_refused,
    revoked_subjects_and_actors_are_refused,
    expired_subjects_are_refused,
    an_actor_not_allowed_by_policy_is_refused,
    delegation_depth_is_limited,
    delegated_lifetime_is_capped_by_the_parent,
    a_dpop_proof_is_single_use_even_when_refused,
    client_supplied_act_is_ignored,
    a_dpop_proof_must_match_the_access_token,
    stale_and_future_dpop_proofs_are_refused,
);

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
    let send = async { TestServer::reply(req.send().await.unwrap()).await };
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

// ---------------------------------------------------------------------------------------------
// JOSE attacks

async fn alg_none_is_refused_in_every_casing(backend: Backend) {
    let lab = Lab::start(backend).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let original = URL_SAFE_NO_PAD
            .decode(lab.svid().split('.').nth(2).unwrap())
            .unwrap();
        for (how, signature) in [("unsigned", Vec::new()), ("signature kept", original)] {
            let case = format!("alg {alg}, {how}");
            let svid = reheader(
                lab.svid(),
                |h| _ = h.insert("alg".into(), json!(alg)),
                &signature,
            );
            let reply = lab.identity_refused(&case, &svid).await;
            assert!(
                description(&reply).contains("algorithm"),
                "{case}: {}",
                reply.body
            );
            let access = reheader(&lab.access, |h| _ = h.insert("alg".into(), json!(alg)), &[]);
            lab.access_refused(&case, &access).await;
        }
    }
}

async fn hs256_signed_with_our_public_key_is_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let jwks_bytes = scene
        .server
        .http
        .get(scene.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let jwks: Value = serde_json::from_slice(&jwks_bytes).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == lab.key.kid())
        .unwrap()
        .clone();
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (x, y) = (coordinate("x"), coordinate("y"));
    // Every spelling of "our public key" a confused verifier might use as an HMAC secret.
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the JWKS document", jwks_bytes.clone()),
        ("the JWK", serde_json::to_vec(&jwk).unwrap()),
        ("x || y", [x.clone(), y.clone()].concat()),
        ("the SEC1 point", [vec![4u8], x, y].concat()),
    ];
    for (name, secret) in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let hs256 = |token: &str| {
            let mut header = segment(token, 0);
            header.insert("alg".into(), json!("HS256"));
            compact(
                text(&header).as_bytes(),
                text(&segment(token, 1)).as_bytes(),
                |input| hmac::sign(&key, input).as_ref().to_vec(),
            )
        };
        let case = format!("HS256 keyed with {name}");
        lab.forgery_refused(&case, &hs256, "algorithm").await;
    }
}

async fn zero_and_empty_ecdsa_signatures_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    // CVE-2022-21449: r = s = 0 verified as valid by some ECDSA implementations.
    for (name, signature) in [("r = s = 0", vec![0u8; 64]), ("empty", Vec::new())] {
        let case = format!("ES256 signature {name}");
        let svid = reheader(lab.svid(), |_| {}, &signature);
        let reply = lab.identity_refused(&case, &svid).await;
        assert!(
            description(&reply).contains("signature"),
            "{case}: {}",
            reply.body
        );
        let access = reheader(&lab.access, |_| {}, &signature);
        lab.access_refused(&case, &access).await;

        // Where it matters most: a DPoP proof names its own key, so an attacker holding a
        // stolen token would embed the victim's public key and sign with r = s = 0.
        let scene = &lab.scene;
        let planner = &scene.planner;
        let proof = reheader(&token_proof(scene, planner), |_| {}, &signature);
        let reply = refused(
            scene,
            &format!("DPoP proof, {case}"),
            &identity_form(lab.svid()),
            Some(&proof),
            "invalid_dpop_proof",
        )
        .await;
        assert!(description(&reply).contains("signature"), "{}", reply.body);
        let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(&lab.access));
        let proof = reheader(&proof, |_| {}, &signature);
        let reply = refused_decision(
            scene,
            &format!("DPoP proof, {case}"),
            &format!("DPoP {}", lab.access),
            Some(&proof),
        )
        .await;
        assert_eq!(reply.code(), "invalid_dpop_proof");
    }
}

async fn an_embedded_jwk_is_not_trusted(backend: Backend) {
    let lab = Lab::start(backend).await;
    let attacker = attacker_key();
    // CVE-2018-0114: the attacker's own key in `jwk`, claiming our kid (and without a kid).
    let mut jwk = serde_json::to_value(attacker.public_jwk()).unwrap();
    jwk["kid"] = json!(lab.key.kid());
    for with_kid in [true, false] {
        let forge = |token: &str| {
            let mut header = segment(token, 0);
            header.insert("jwk".into(), jwk.clone());
            if !with_kid {
                header.remove("kid");
            }
            compact(
                text(&header).as_bytes(),
                text(&segment(token, 1)).as_bytes(),
                |input| attacker.sign(&SystemRandom::new(), input).unwrap(),
            )
        };
        let case = format!("embedded attacker jwk (our kid: {with_kid})");
        lab.forgery_refused(&case, &forge, "jwk").await;
    }
}

async fn jku_and_x5u_are_never_fetched(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    // A loopback listener standing in for the attacker's host: it counts every connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let contacts = Arc::new(AtomicUsize::new(0));
    let counter = contacts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let attacker = attacker_key();
    let cases = [
        ("jku", format!("{base}/.well-known/jwks.json")),
        ("x5u", format!("{base}/cert.pem")),
    ];
    for (member, url) in &cases {
        for kid in [attacker.kid(), lab.key.kid()] {
            let forge = |token: &str| {
                let mut header = segment(token, 0);
                header.insert((*member).into(), json!(url));
                header.insert("kid".into(), json!(kid));
                compact(
                    text(&header).as_bytes(),
                    text(&segment(token, 1)).as_bytes(),
                    |input| attacker.sign(&SystemRandom::new(), input).unwrap(),
                )
            };
            let case = format!("{member} at a loopback listener, kid {kid}");
            lab.forgery_refused(&case, &forge, member).await;
        }
    }
    // Even signed by our own key, the header is refused: keys never come from the token.
    let ours = lab.key.resign(lab.svid(), |h, _| {
        h.insert("jku".into(), json!(cases[0].1));
    });
    lab.identity_refused("jku, signed by our key", &ours).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        contacts.load(Ordering::SeqCst),
        0,
        "the server fetched a key"
    );
}

async fn hostile_kids_are_refused_without_leaking(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let long = "A".repeat(10 * 1024);
    for kid in [
        "../../etc/passwd",
        "../../dev/null",
        "' OR 1=1 --",
        long.as_str(),
    ] {
        // Signed with our real key: a verifier that ignored the kid and tried every key it
        // knows would accept these.
        let forge = |token: &str| {
            lab.key.resign(token, |h, _| {
                h.insert("kid".into(), json!(kid));
            })
        };
        let case = format!("kid {}", &kid[..kid.len().min(24)]);
        let reply = lab.identity_refused(&case, &forge(lab.svid())).await;
        let denied = lab.access_refused(&case, &forge(&lab.access)).await;
        for body in [&reply.body, &denied.body] {
            let body = body.to_string().to_lowercase();
            for leak in ["passwd", "1=1", "sql", "database", "syntax", "postgres"] {
                assert!(!body.contains(leak), "{case}: {body}");
            }
        }
        assert!(
            description(&reply).contains("kid"),
            "{case}: {}",
            reply.body
        );
    }
    // No kid at all, signed by our key: no verifier falls back to trying every key.
    let forge = |token: &str| {
        lab.key.resign(token, |h, _| {
            h.remove("kid");
        })
    };
    lab.forgery_refused("no kid", &forge, "no verification key")
        .await;
}

async fn an_unknown_crit_is_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    for crit in [json!(["aims-unknown"]), json!(["exp"]), json!([])] {
        let forge = |token: &str| {
            lab.key.resign(token, |h, _| {
                h.insert("crit".into(), crit.clone());
                h.insert("aims-unknown".into(), json!(true));
            })
        };
        let case = format!("crit {crit}");
        lab.forgery_refused(&case, &forge, "crit").await;
    }
}

async fn a_token_of_one_kind_is_not_another(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let planner = &scene.planner;
    let svid = lab.svid().to_owned();
    let access = lab.access.clone();

    // An SVID as a DPoP-bound access token, with a valid proof for it.
    let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(&svid));
    refused_decision(
        scene,
        "SVID with the DPoP scheme",
        &format!("DPoP {svid}"),
        Some(&proof),
    )
    .await;
    inactive(scene, "SVID at introspection", &svid).await;
    // An SVID as a delegation's subject (an access token is expected).
    refused(
        scene,
        "SVID as access-token subject",
        &delegation_form(&svid, &scene.executor.svid),
        Some(&token_proof(scene, planner)),
        "invalid_grant",
    )
    .await;

    // An access token as an identity: subject_token_type jwt, assertion, actor.
    let reply = lab.identity_refused("access token as SVID", &access).await;
    assert!(description(&reply).contains("type"), "{}", reply.body);

    // A DPoP proof (and an attestation proof) as either kind.
    let dpop_proof = token_proof(scene, planner);
    lab.identity_refused("DPoP proof as SVID", &dpop_proof)
        .await;
    lab.access_refused("DPoP proof as access token", &dpop_proof)
        .await;
    refused_decision(
        scene,
        "DPoP proof as bearer",
        &format!("Bearer {dpop_proof}"),
        None,
    )
    .await;
    let attestation = planner
        .key
        .sign_self_signed(
            &SystemRandom::new(),
            aims_token::jws::TYP_ATTESTATION,
            &json!({"aud": lab.issuer(), "iat": now(), "exp": now() + 60, "jti": "x"}),
        )
        .unwrap();
    lab.identity_refused("attestation proof as SVID", &attestation)
        .await;
    lab.access_refused("attestation proof as access token", &attestation)
        .await;

    // Signed by our own key, only `typ` tells the kinds apart: swapping it is not enough.
    lab.controls().await;
    let retyped = lab.key.resign(&svid, |h, _| {
        h.insert("typ".into(), json!("at+jwt"));
    });
    lab.access_refused("SVID claims typed at+jwt", &retyped)
        .await;
    let retyped = lab.key.resign(&access, |h, _| {
        h.insert("typ".into(), json!("JWT"));
    });
    lab.identity_refused("access claims typed JWT", &retyped)
        .await;
}

async fn audience_must_be_the_one_expected_string(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    lab.controls().await;
    let issuer = lab.issuer();
    let audiences = [
        ("missing", Value::Null),
        ("an array of two", json!([issuer, AUDIENCE])),
        ("an array of one", json!([issuer])),
        ("an object", json!({"aud": issuer})),
        (
            "a sibling service",
            json!("https://tools.acme.example/other"),
        ),
    ];
    for (name, aud) in &audiences {
        let set = set_claim("aud", aud);
        let case = format!("aud {name}");
        let reply = lab
            .identity_refused(&case, &lab.key.reclaim(lab.svid(), set))
            .await;
        assert!(
            description(&reply).contains("audience"),
            "{case}: {}",
            reply.body
        );
        // AIMS accepts its task tokens for any registered audience, so a sibling string is
        // not a forgery there; every other shape is.
        if *name != "a sibling service" {
            lab.access_refused(&case, &lab.key.reclaim(&lab.access, set))
                .await;
        }
    }

    // A genuine SVID the server minted for another audience (renewal with `audience`).
    let other = Attestor::new(
        AdminClient::new(&scene.server.base, None).unwrap(),
        scene.planner.key.clone(),
    )
    .attest(
        &Default::default(),
        &Credential::Svid(scene.planner.svid.clone()),
        Some(AUDIENCE),
    )
    .await
    .unwrap()
    .svid;
    assert_eq!(claims(&other)["aud"], AUDIENCE);
    let reply = refused(
        scene,
        "SVID minted for another audience",
        &identity_form(&other),
        Some(&token_proof(scene, &scene.planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("audience"), "{}", reply.body);
    let reply = refused_decision(
        scene,
        "SVID minted for another audience",
        &format!("Bearer {other}"),
        None,
    )
    .await;
    assert_eq!(reply.code(), "invalid_svid");
}

async fn exp_must_be_present_and_an_integer(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let far = now() + 600;
    let values = [
        ("missing", Value::Null),
        ("a string", json!("9999999999")),
        ("a fraction", json!(far as f64 + 0.5)),
        ("2^64", json!(18_446_744_073_709_551_616.0_f64)),
        ("u64::MAX", json!(u64::MAX)),
        ("an array", json!([far])),
    ];
    for (name, exp) in &values {
        let set = set_claim("exp", exp);
        let case = format!("exp {name}");
        lab.forgery_refused(&case, |token| lab.key.reclaim(token, set), "exp")
            .await;
    }
    // 1e400 is not a number JSON parsers agree on: refused as invalid JSON.
    let huge = |token: &str| {
        let mut claims = segment(token, 1);
        claims.remove("exp");
        lab.key.raw(
            text(&segment(token, 0)).as_bytes(),
            append_raw(&text(&claims), r#""exp":1e400"#).as_bytes(),
        )
    };
    lab.identity_refused("exp 1e400", &huge(lab.svid())).await;
    lab.access_refused("exp 1e400", &huge(&lab.access)).await;
}

async fn nbf_and_iat_in_the_future_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let later = now() + 3600;
    for claim in ["nbf", "iat"] {
        let set = |claims: &mut Map<String, Value>| {
            claims.insert(claim.into(), json!(later));
            claims.insert("exp".into(), json!(later + 600));
        };
        let case = format!("{claim} an hour ahead");
        lab.identity_refused(&case, &lab.key.reclaim(lab.svid(), set))
            .await;
        lab.access_refused(&case, &lab.key.reclaim(&lab.access, set))
            .await;
    }
    let reply = lab
        .identity_refused(
            "nbf (only) an hour ahead",
            &lab.key
                .reclaim(lab.svid(), |c| _ = c.insert("nbf".into(), json!(later))),
        )
        .await;
    assert!(
        description(&reply).contains("not yet valid"),
        "{}",
        reply.body
    );
}

async fn duplicate_json_members_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let executor = "spiffe://test.example/agent/executor";
    let raw = |token: &str, header_extra: Option<&str>, claims_extra: Option<&str>| {
        let header = text(&segment(token, 0));
        let claims = text(&segment(token, 1));
        let header = header_extra.map_or(header.clone(), |m| append_raw(&header, m));
        let claims = claims_extra.map_or(claims.clone(), |m| append_raw(&claims, m));
        lab.key.raw(header.as_bytes(), claims.as_bytes())
    };
    let svid_cases = [
        ("header alg twice", Some(r#""alg":"none""#), None),
        ("header typ twice", Some(r#""typ":"at+jwt""#), None),
        (
            "header kid twice, escaped",
            Some(r#""\u006bid":"other""#),
            None,
        ),
        (
            "claims sub twice",
            None,
            Some(format!(r#""sub":"{executor}""#)),
        ),
        ("claims aud twice", None, Some(r#""aud":"x""#.to_owned())),
        (
            "claims cnf twice",
            None,
            Some(r#""cnf":{"jkt":"attacker"}"#.to_owned()),
        ),
    ];
    for (case, header, claims) in &svid_cases {
        let token = raw(lab.svid(), *header, claims.as_deref());
        let reply = lab.identity_refused(case, &token).await;
        assert!(
            description(&reply).contains("duplicate"),
            "{case}: {}",
            reply.body
        );
    }
    let access_cases = [
        ("header alg twice", Some(r#""alg":"none""#), None),
        ("claims scope twice", None, Some(r#""scope":"admin:*""#)),
        (
            "claims client_id twice",
            None,
            Some(r#""client_id":"spiffe://test.example/agent/executor""#),
        ),
        ("claims nested jkt twice", None, None),
    ];
    for (case, header, claims) in access_cases {
        let token = if case.contains("nested") {
            // Inside `cnf`: {"jkt": <ours>, "jkt": "attacker"}.
            let mut map = segment(&lab.access, 1);
            let jkt = map["cnf"]["jkt"].as_str().unwrap().to_owned();
            map.remove("cnf");
            let claims = append_raw(
                &text(&map),
                &format!(r#""cnf":{{"jkt":"{jkt}","jkt":"attacker"}}"#),
            );
            lab.key
                .raw(text(&segment(&lab.access, 0)).as_bytes(), claims.as_bytes())
        } else {
            raw(&lab.access, header, claims)
        };
        lab.access_refused(case, &token).await;
    }
}

async fn malformed_compact_serializations_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let mangle = |token: &str, how: &str| -> String {
        let parts: Vec<&str> = token.split('.').collect();
        match how {
            "four segments" => format!("{token}.{}", parts[2]),
            "four segments, trailing dot" => format!("{token}."),
            "two segments" => format!("{}.{}", parts[0], parts[1]),
            "a character outside base64url" => format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
            "standard base64 alphabet" => format!(
                "{}.{}.{}+/",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 2]
            ),
            "padding" => format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            "whitespace" => format!("{} .{}.{}", parts[0], parts[1], parts[2]),
            _ => unreachable!(),
        }
    };
    let hows = [
        "four segments",
        "four segments, trailing dot",
        "two segments",
        "a character outside base64url",
        "standard base64 alphabet",
        "padding",
        "whitespace",
    ];
    for how in hows {
        lab.identity_refused(how, &mangle(lab.svid(), how)).await;
        lab.access_refused(how, &mangle(&lab.access, how)).await;
    }
    // Invalid UTF-8 (and a lone surrogate) inside segments that are signed by our key.
    let utf8 = |token: &str, where_: &str, bad: &[u8]| {
        let mut header = text(&segment(token, 0)).into_bytes();
        let mut claims = text(&segment(token, 1)).into_bytes();
        let target = if where_ == "header" {
            &mut header
        } else {
            &mut claims
        };
        target.pop();
        target.extend_from_slice(b",\"x\":\"");
        target.extend_from_slice(bad);
        target.extend_from_slice(b"\"}");
        lab.key.raw(&header, &claims)
    };
    for where_ in ["header", "claims"] {
        for (what, bad) in [
            ("invalid UTF-8", &b"\xff\xfe"[..]),
            ("a lone surrogate", &br"\ud800"[..]),
        ] {
            let case = format!("{what} in the {where_}");
            lab.identity_refused(&case, &utf8(lab.svid(), where_, bad))
                .await;
            lab.access_refused(&case, &utf8(&lab.access, where_, bad))
                .await;
        }
    }
}

async fn oversized_tokens_are_refused_cleanly(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let padded = |token: &str, size: usize| {
        lab.key.resign(token, |h, _| {
            h.insert("x".into(), json!("A".repeat(size)));
        })
    };

    // Just over the 16 KiB token limit: refused by the parameter bound, and audited.
    let big = padded(lab.svid(), 13 * 1024);
    assert!(big.len() > aims_token::jws::MAX_TOKEN_LEN);
    let reply = refused(
        scene,
        "17 KiB subject_token",
        &identity_form(&big),
        Some(&token_proof(scene, &scene.planner)),
        "invalid_request",
    )
    .await;
    assert!(description(&reply).contains("too long"), "{}", reply.body);
    let big_access = padded(&lab.access, 13 * 1024);
    refused_decision(
        scene,
        "17 KiB access token",
        &format!("DPoP {big_access}"),
        Some(&scene.proof(
            &scene.planner.key,
            "POST",
            "/v1/decisions",
            Some(&big_access),
        )),
    )
    .await;

    // A 1 MB header: refused before any handler by the transport limits (body size at the
    // token endpoint, header size at /v1/decisions). Such refusals are not audited: no
    // handler ran, and nothing was parsed or issued.
    let huge = padded(lab.svid(), 1024 * 1024);
    let before = issued(scene).await;
    let started = Instant::now();
    let reply = scene
        .token(
            &identity_form(&huge),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    eprintln!("token endpoint | 1 MB header -> {}", reply.status);
    let huge_access = padded(&lab.access, 1024 * 1024);
    let sent = scene
        .server
        .http
        .post(scene.url("/v1/decisions"))
        .header("Authorization", format!("DPoP {huge_access}"))
        .json(&json!({"action": "read", "resource": repository("repo/acme/app")}))
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            assert!(
                [
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNAUTHORIZED,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                ]
                .contains(&status),
                "{status}"
            );
            eprintln!("/v1/decisions  | 1 MB header -> {status}");
        }
        // hyper answers 431 and closes the connection as soon as its header buffer is full;
        // when the client is still writing the rest of the megabyte, the reset can reach it
        // before the 431 does. Either way the request was cut off unread; the server must
        // stay up (checked below).
        Err(e) => {
            assert!(e.is_request(), "{e}");
            eprintln!(
                "/v1/decisions  | 1 MB header -> connection closed before the answer was read"
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10), "refused fast");
    assert_eq!(issued(scene).await, before, "nothing issued");

    // The server is still up and serving.
    access_token(&scene.exchange("read:repo/acme/app").await);
}

async fn deeply_nested_claims_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    lab.controls().await;
    let nest = |token: &str, depth: usize, open: &str, close: &str| {
        let mut claims = segment(token, 1);
        claims.remove("x");
        let deep = format!("{}{}", open.repeat(depth), close.repeat(depth));
        lab.key.raw(
            text(&segment(token, 0)).as_bytes(),
            append_raw(&text(&claims), &format!(r#""x":{deep}"#)).as_bytes(),
        )
    };
    for (name, depth, open, close) in [
        ("5,000 arrays", 5_000, "[", "]"),
        ("33 objects (one over the limit)", 32, r#"{"a":"#, "}"),
        ("1,500 objects", 1_500, r#"{"a":"#, "}"),
    ] {
        let case = format!("claims nested {name}");
        let started = Instant::now();
        lab.forgery_refused(&case, |token| nest(token, depth, open, close), "deep")
            .await;
        assert!(started.elapsed() < Duration::from_secs(10), "{case}: fast");
    }
    // A delegation chain nested deeper than any verifier reads (17 actors), signed by us.
    let chain = (0..17).fold(Value::Null, |inner, i| {
        let mut actor = json!({"sub": format!("spiffe://test.example/agent/a{i}")});
        if !inner.is_null() {
            actor["act"] = inner;
        }
        actor
    });
    let deep_act = lab
        .key
        .reclaim(&lab.access, |c| _ = c.insert("act".into(), chain));
    lab.access_refused("act nested 17 deep", &deep_act).await;
}

// ---------------------------------------------------------------------------------------------
// Token-exchange attacks

async fn delegation_cannot_widen_scope(backend: Backend) {
    let scene = Scene::start(backend).await;
    let parent = access_token(&scene.exchange("read:repo/acme/* write:repo/acme/app").await);
    for scope in [
        "write:repo/acme/*",
        "read:repo/*",
        "read:repo/acme/* delete:repo/acme/app",
        "admin:*",
        "read",
    ] {
        let form = with(
            delegation_form(&parent, &scene.executor.svid),
            "scope",
            scope,
        );
        refused(
            &scene,
            &format!("delegate {scope} from read:repo/acme/* write:repo/acme/app"),
            &form,
            Some(&token_proof(&scene, &scene.planner)),
            "invalid_scope",
        )
        .await;
    }
    // The parent was not spent by the refusals: a narrower delegation still works.
    let form = with(
        delegation_form(&parent, &scene.executor.svid),
        "scope",
        "read:repo/acme/app",
    );
    let child = scene
        .token(&form, Some(&token_proof(&scene, &scene.planner)))
        .await;
    assert_eq!(claims(&access_token(&child))["scope"], "read:repo/acme/app");
}

async fn unknown_or_other_targets_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let added = scene
        .server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "ci-tools", "audience": "https://ci.acme.example", "system": "github"})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let svid = scene.planner.svid.as_str();
    let proof = || token_proof(&scene, &scene.planner);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "unknown audience",
            with(identity_form(svid), "audience", "https://nowhere.example"),
        ),
        (
            "unknown resource name",
            with(
                identity_form(svid)
                    .into_iter()
                    .filter(|(n, _)| *n != "audience")
                    .collect(),
                "resource",
                "no-such-server",
            ),
        ),
        (
            "audience and resource differ",
            with(identity_form(svid), "resource", "https://ci.acme.example"),
        ),
        (
            "no target",
            identity_form(svid)
                .into_iter()
                .filter(|(n, _)| *n != "audience")
                .collect(),
        ),
    ];
    for (case, form) in cases {
        refused(&scene, case, &form, Some(&proof()), "invalid_target").await;
    }
    // A delegation may not move the token to another (registered or unknown) audience.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    for audience in [
        "https://ci.acme.example",
        "ci-tools",
        "https://nowhere.example",
    ] {
        let form = with(
            delegation_form(&parent, &scene.executor.svid),
            "audience",
            audience,
        );
        refused(
            &scene,
            &format!("delegate to audience {audience}"),
            &form,
            Some(&proof()),
            "invalid_target",
        )
        .await;
    }
}

async fn revoked_subjects_and_actors_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let revoke = |id: String| {
        let server = &scene.server;
        async move {
            let reply = server
                .admin(
                    Method::POST,
                    "/v1/revocations",
                    Some(json!({"target": "token", "id": id, "reason": "attack test"})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    };
    let jti = |token: &str| claims(token)["jti"].as_str().unwrap().to_owned();

    // A revoked task token: no delegation from it, no decision with it, inactive.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    revoke(jti(&parent)).await;
    let reply = refused(
        &scene,
        "revoked subject token",
        &delegation_form(&parent, &scene.executor.svid),
        Some(&token_proof(&scene, &scene.planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("revoked"), "{}", reply.body);
    let proof = scene.proof(&scene.planner.key, "POST", "/v1/decisions", Some(&parent));
    refused_decision(
        &scene,
        "revoked access token",
        &format!("DPoP {parent}"),
        Some(&proof),
    )
    .await;
    inactive(&scene, "revoked access token", &parent).await;

    // A revoked actor identity.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    revoke(jti(&scene.executor.svid)).await;
    refused(
        &scene,
        "revoked actor identity",
        &delegation_form(&parent, &scene.executor.svid),
        Some(&token_proof(&scene, &scene.planner)),
        "invalid_grant",
    )
    .await;

    // A revoked subject identity.
    revoke(jti(&scene.planner.svid)).await;
    refused(
        &scene,
        "revoked subject identity",
        &identity_form(&scene.planner.svid),
        Some(&token_proof(&scene, &scene.planner)),
        "invalid_grant",
    )
    .await;
}

/// A genuinely expired JWT-SVID cannot be produced quickly: SVIDs live at least
/// min(`svid_ttl_s` ≥ 30 s, the agent's `max_token_ttl_s` ≥ 1 s) and every verifier allows 30 s
/// of clock skew, so one would need to wait over 30 s. What *can* expire within seconds, and
/// is tested here for real: a task token minted with `expires_in=1` (delegation refuses a
/// parent past its `exp` with no leeway) and a task created with `ttl_s=1`. Expired
/// identities and task tokens are then forged two ways: signed by the server's own key (so
/// only the expiry is wrong) and signed by a key the server does not know.
async fn expired_subjects_are_refused(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let planner = &scene.planner;

    let short = scene
        .token(
            &with(identity_form(&planner.svid), "expires_in", "1"),
            Some(&token_proof(scene, planner)),
        )
        .await;
    let short = access_token(&short);
    let c = claims(&short);
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 1);
    let task = scene
        .server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&planner.svid),
            Some(json!({"intent": INTENT, "ttl_s": 1})),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.body);
    let task_id = task.body["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2_200)).await;

    let reply = refused(
        scene,
        "parent past its exp (expires_in=1)",
        &delegation_form(&short, &scene.executor.svid),
        Some(&token_proof(scene, planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("expire"), "{}", reply.body);
    let reply = refused(
        scene,
        "task past its deadline (ttl_s=1)",
        &with(identity_form(&planner.svid), "task_id", &task_id),
        Some(&token_proof(scene, planner)),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("ended"), "{}", reply.body);

    // Signed by our key, registered jti, expired beyond the leeway.
    lab.controls().await;
    let past = |claims: &mut Map<String, Value>| {
        claims.insert("iat".into(), json!(now() - 300));
        claims.insert("exp".into(), json!(now() - 120));
    };
    let reply = lab
        .identity_refused(
            "SVID expired 2 minutes ago",
            &lab.key.reclaim(lab.svid(), past),
        )
        .await;
    assert!(description(&reply).contains("expired"), "{}", reply.body);
    lab.access_refused(
        "task token expired 2 minutes ago",
        &lab.key.reclaim(&lab.access, past),
    )
    .await;

    // Signed by a key the server does not know (claiming our kid), expired.
    let stranger = attacker_key();
    let forge = |token: &str| {
        let mut claims = segment(token, 1);
        past(&mut claims);
        compact(
            text(&segment(token, 0)).as_bytes(),
            text(&claims).as_bytes(),
            |input| stranger.sign(&SystemRandom::new(), input).unwrap(),
        )
    };
    lab.identity_refused("expired SVID by an unknown key", &forge(lab.svid()))
        .await;
    lab.access_refused("expired task token by an unknown key", &forge(&lab.access))
        .await;
}

async fn an_actor_not_allowed_by_policy_is_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let reviewer = attested(&scene.server, "reviewer", "reviewer", json!({})).await;
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    let proof = || token_proof(&scene, &scene.planner);
    let reply = refused(
        &scene,
        "delegate to an agent without role executor",
        &delegation_form(&parent, &reviewer.svid),
        Some(&proof()),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("policy"), "{}", reply.body);
    let event = scene.server.last_event("token.delegate").await;
    assert_eq!(event.code.as_deref(), Some("invalid_grant"));

    // Nor to itself, nor to a suspended executor.
    refused(
        &scene,
        "delegate to itself",
        &delegation_form(&parent, &scene.planner.svid),
        Some(&proof()),
        "invalid_request",
    )
    .await;
    let suspended = scene
        .server
        .admin(
            Method::POST,
            "/v1/agents/executor/suspend",
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    refused(
        &scene,
        "delegate to a suspended executor",
        &delegation_form(&parent, &scene.executor.svid),
        Some(&proof()),
        "invalid_grant",
    )
    .await;
}

async fn delegation_depth_is_limited(backend: Backend) {
    let scene = Scene::start(backend).await;
    // Let executors delegate to executors, so chains can grow past the first hop.
    let mut files = starter_files();
    files.insert(
        "chain.cedar".into(),
        r#"@id("test-executors-delegate-to-executors")
permit (principal, action == Aims::Action::"delegate", resource is Aims::Agent)
when {
  principal.hasTag("role") && principal.getTag("role") == "executor" &&
  resource.hasTag("role") && resource.getTag("role") == "executor"
};
"#
        .into(),
    );
    let pushed = scene
        .server
        .admin(Method::POST, "/v1/policies", Some(json!({"files": files})))
        .await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.body);
    let shallow = attested(
        &scene.server,
        "executor-shallow",
        "executor",
        json!({"limits": {"max_delegation_depth": 1}}),
    )
    .await;
    let deep = attested(&scene.server, "executor-deep", "executor", json!({})).await;

    let root = access_token(&scene.exchange("read:repo/acme/*").await);
    let first = access_token(&scene.delegate(&root, &[]).await);
    assert_eq!(
        claims(&first)["act"]["act"]["sub"],
        "spiffe://test.example/agent/planner"
    );
    let by_executor = || token_proof(&scene, &scene.executor);

    // Depth 2 for an agent whose own limit is 1.
    let reply = refused(
        &scene,
        "depth 2 to an agent limited to 1",
        &delegation_form(&first, &shallow.svid),
        Some(&by_executor()),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("depth"), "{}", reply.body);

    // Depth 2 within every limit (default 2) works; depth 3 is over the executors' limit.
    let second = scene
        .token(&delegation_form(&first, &deep.svid), Some(&by_executor()))
        .await;
    let second = access_token(&second);
    let proof = token_proof(&scene, &deep);
    let reply = refused(
        &scene,
        "depth 3 over the agents' limit of 2",
        &delegation_form(&second, &scene.executor.svid),
        Some(&proof),
        "invalid_grant",
    )
    .await;
    assert!(description(&reply).contains("depth"), "{}", reply.body);
}

async fn delegated_lifetime_is_capped_by_the_parent(backend: Backend) {
    let scene = Scene::start_with(
        backend,
        json!({}),
        json!({"limits": {"max_token_ttl_s": 120}}),
    )
    .await;
    let int = |token: &str, name: &str| claims(token)[name].as_i64().unwrap();

    // An agent's own token: capped by its limit (900 s) and its identity.
    let own = scene
        .token(
            &with(identity_form(&scene.planner.svid), "expires_in", "86400"),
            Some(&token_proof(&scene, &scene.planner)),
        )
        .await;
    let own = access_token(&own);
    assert!(int(&own, "exp") <= int(&scene.planner.svid, "exp"));
    assert!(int(&own, "exp") - int(&own, "iat") <= 900);

    // Asking for a day below a 60 s parent: the parent's exp.
    let parent = scene
        .token(
            &with(identity_form(&scene.planner.svid), "expires_in", "60"),
            Some(&token_proof(&scene, &scene.planner)),
        )
        .await;
    let parent = access_token(&parent);
    let child = scene.delegate(&parent, &[("expires_in", "86400")]).await;
    assert!(
        child.body["expires_in"].as_u64().unwrap() <= 60,
        "{}",
        child.body
    );
    let child = access_token(&child);
    assert!(int(&child, "exp") <= int(&parent, "exp"));

    // Below a long parent, the delegate's own limit (120 s) caps it.
    let long = access_token(&scene.exchange("read:repo/acme/*").await);
    let child = access_token(&scene.delegate(&long, &[("expires_in", "86400")]).await);
    assert!(int(&child, "exp") <= int(&long, "exp"));
    assert!(int(&child, "exp") - int(&child, "iat") <= 120);
    // And a grandchild never outlives its chain (checked through introspection too).
    let seen = scene.introspect(&child).await;
    assert_eq!(seen.body["exp"].as_i64(), Some(int(&child, "exp")));
}

async fn a_dpop_proof_is_single_use_even_when_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let planner = &scene.planner;
    let svid = planner.svid.as_str();

    // First use refused after the proof was checked; the corrected request cannot reuse it.
    let proof = token_proof(&scene, planner);
    refused(
        &scene,
        "first use, unknown target",
        &with(identity_form(svid), "audience", "https://nowhere.example"),
        Some(&proof),
        "invalid_target",
    )
    .await;
    let reply = refused(
        &scene,
        "same proof after a refused use",
        &identity_form(svid),
        Some(&proof),
        "invalid_dpop_proof",
    )
    .await;
    assert!(
        description(&reply).contains("used before"),
        "{}",
        reply.body
    );

    // A proof for GET (and one for the other endpoint) does not prove a POST here.
    let get = dpop::sign_proof(
        &planner.key,
        &SystemRandom::new(),
        "GET",
        &scene.url("/oauth2/token"),
        None,
        now(),
    )
    .unwrap();
    refused(
        &scene,
        "proof with htm GET",
        &identity_form(svid),
        Some(&get),
        "invalid_dpop_proof",
    )
    .await;
    let elsewhere = scene.proof(&planner.key, "POST", "/v1/decisions", None);
    refused(
        &scene,
        "proof for /v1/decisions",
        &identity_form(svid),
        Some(&elsewhere),
        "invalid_dpop_proof",
    )
    .await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let get = dpop::sign_proof(
        &planner.key,
        &SystemRandom::new(),
        "GET",
        &scene.url("/v1/decisions"),
        Some(&token),
        now(),
    )
    .unwrap();
    let reply = refused_decision(
        &scene,
        "proof with htm GET",
        &format!("DPoP {token}"),
        Some(&get),
    )
    .await;
    assert_eq!(reply.code(), "invalid_dpop_proof");

    // Eight concurrent uses of one proof: exactly one token.
    let before = issued(&scene).await.0;
    let proof = token_proof(&scene, planner);
    let form = identity_form(svid);
    let replies =
        futures_util::future::join_all((0..8).map(|_| scene.token(&form, Some(&proof)))).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert!(
        replies
            .iter()
            .filter(|r| r.status != StatusCode::OK)
            .all(|r| r.code() == "invalid_dpop_proof")
    );
    assert_eq!(issued(&scene).await.0, before + 1);

    // At the enforcement point, a proof that was accepted once is refused the second time.
    let proof = scene.proof(&planner.key, "POST", "/v1/decisions", Some(&token));
    let first = scene
        .decide_with_proof(&token, &proof, "read", "repo/acme/app")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let reply = refused_decision(
        &scene,
        "replayed proof",
        &format!("DPoP {token}"),
        Some(&proof),
    )
    .await;
    assert_eq!(reply.code(), "invalid_dpop_proof");
}

async fn client_supplied_act_is_ignored(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let root = "spiffe://test.example/agent/root";
    let forged_act =
        json!({"sub": root, "act": {"sub": "spiffe://test.example/agent/admin"}}).to_string();
    let server_chain = json!({"sub": "spiffe://test.example/agent/executor",
                              "act": {"sub": "spiffe://test.example/agent/planner"}});

    // A form parameter `act` on an exchange and on a delegation.
    let own = scene
        .token(
            &with(identity_form(lab.svid()), "act", &forged_act),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    assert!(
        claims(&access_token(&own)).get("act").is_none(),
        "{}",
        own.body
    );
    let child = scene
        .delegate(&lab.access, &[("act", forged_act.as_str())])
        .await;
    assert_eq!(claims(&access_token(&child))["act"], server_chain);

    // An `act` claim inside the subject identity and inside the actor's identity (signed by
    // our key, so they verify): only the server builds the chain.
    let act = serde_json::from_str::<Value>(&forged_act).unwrap();
    let subject = lab
        .key
        .reclaim(lab.svid(), |c| _ = c.insert("act".into(), act.clone()));
    let own = scene
        .token(
            &identity_form(&subject),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    assert!(
        claims(&access_token(&own)).get("act").is_none(),
        "{}",
        own.body
    );
    let actor = lab.key.reclaim(&scene.executor.svid, |c| {
        _ = c.insert("act".into(), act.clone())
    });
    let child = scene
        .token(
            &delegation_form(&lab.access, &actor),
            Some(&token_proof(scene, &scene.planner)),
        )
        .await;
    let child = access_token(&child);
    assert_eq!(claims(&child)["act"], server_chain);
    let event = scene.server.last_event("token.delegate").await;
    assert_eq!(
        event.delegation_chain,
        vec![
            "spiffe://test.example/agent/executor".to_owned(),
            "spiffe://test.example/agent/planner".to_owned()
        ]
    );
    let audit = serde_json::to_string(&scene.server.events().await).unwrap();
    assert!(
        !audit.contains(root),
        "a client-supplied actor reached the audit log"
    );
}

async fn a_dpop_proof_must_match_the_access_token(backend: Backend) {
    let scene = Scene::start(backend).await;
    let planner = &scene.planner;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let other = access_token(&scene.exchange("read:repo/acme/*").await);
    let auth = format!("DPoP {token}");
    let cases = [
        (
            "ath of another token",
            scene.proof(&planner.key, "POST", "/v1/decisions", Some(&other)),
        ),
        (
            "ath of a tampered token",
            scene.proof(
                &planner.key,
                "POST",
                "/v1/decisions",
                Some(&format!("{token}x")),
            ),
        ),
        (
            "no ath",
            scene.proof(&planner.key, "POST", "/v1/decisions", None),
        ),
    ];
    for (case, proof) in cases {
        let reply = refused_decision(&scene, case, &auth, Some(&proof)).await;
        assert_eq!(reply.code(), "invalid_dpop_proof", "{case}");
    }
    // No proof at all, and a bearer presentation of the bound token.
    let reply = refused_decision(&scene, "no DPoP proof", &auth, None).await;
    assert_eq!(reply.code(), "invalid_dpop_proof");
    refused_decision(
        &scene,
        "DPoP-bound token as bearer",
        &format!("Bearer {token}"),
        None,
    )
    .await;
    // At the token endpoint, where no access token is presented, `ath` must be absent.
    let with_ath = scene.proof(&planner.key, "POST", "/oauth2/token", Some(&token));
    refused(
        &scene,
        "proof with ath at the token endpoint",
        &identity_form(&planner.svid),
        Some(&with_ath),
        "invalid_dpop_proof",
    )
    .await;
}

async fn stale_and_future_dpop_proofs_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let planner = &scene.planner;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let proof_at = |path: &str, access: Option<&str>, iat: i64| {
        let mut claims = json!({
            "jti": format!("jti-{iat}-{path}"),
            "htm": "POST",
            "htu": scene.url(path),
            "iat": iat,
            "nonce": scene.nonce(),
        });
        if let Some(access) = access {
            claims["ath"] = json!(dpop::access_token_hash(access));
        }
        planner
            .key
            .sign_self_signed(&SystemRandom::new(), aims_token::jws::TYP_DPOP, &claims)
            .unwrap()
    };
    // Control: hand-made proofs 30 s old are accepted at both.
    let ok = scene
        .token(
            &identity_form(&planner.svid),
            Some(&proof_at("/oauth2/token", None, now() - 30)),
        )
        .await;
    access_token(&ok);
    let ok = scene
        .server
        .http
        .post(scene.url("/v1/decisions"))
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof_at("/v1/decisions", Some(&token), now() - 30))
        .json(&json!({"action": "read", "resource": repository("repo/acme/app")}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    for (case, iat) in [
        ("proof 61 s old", now() - 61),
        ("proof an hour old", now() - 3600),
        ("proof a minute ahead", now() + 60),
    ] {
        refused(
            &scene,
            case,
            &identity_form(&planner.svid),
            Some(&proof_at("/oauth2/token", None, iat)),
            "invalid_dpop_proof",
        )
        .await;
        let reply = refused_decision(
            &scene,
            case,
            &format!("DPoP {token}"),
            Some(&proof_at("/v1/decisions", Some(&token), iat)),
        )
        .await;
        assert_eq!(reply.code(), "invalid_dpop_proof", "{case}");
    }
}
