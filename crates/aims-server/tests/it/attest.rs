//! Attestation over HTTP: first boot with a join token, renewal with the bound key, every
//! drift kind (quarantine, revocation, audit, signed webhook), replayed and forged proofs, and
//! lifecycle states that may not attest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aims_core::posture::{DeploymentEvidence, Evidence, ModelEvidence};
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use aims_token::jws::{self, Alg, ClaimChecks, TYP_ATTESTATION, VerifyingKey};
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, Reply, TestServer, open_store};
use crate::on_both_stores;

on_both_stores!(
    first_attest_issues_an_svid_bound_to_the_agent_key,
    renewal_needs_the_bound_key_and_a_live_svid,
    replayed_and_forged_proofs_are_refused,
    each_drift_kind_quarantines_and_revokes,
    agents_that_are_not_active_cannot_attest,
    release_clears_the_baseline,
);

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Model m1 or m2 with digest A or B, region eu or us: may change deployment only.
fn profile() -> Value {
    json!({
        "model": {"id": ["m1", "m2"], "digest": [DIGEST_A, DIGEST_B]},
        "deployment": {"region": ["eu", "us"]},
        "may_change": ["deployment"]
    })
}

fn evidence(model: &str, digest: &str, region: &str) -> Evidence {
    Evidence {
        model: ModelEvidence {
            id: Some(model.into()),
            digest: Some(digest.into()),
        },
        deployment: DeploymentEvidence {
            region: Some(region.into()),
            ..DeploymentEvidence::default()
        },
        ..Evidence::default()
    }
}

fn good() -> Evidence {
    evidence("m1", DIGEST_A, "eu")
}

fn key() -> Arc<AgentKey> {
    Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap())
}

/// Registers `name` with the test profile and returns its join token.
async fn register(server: &TestServer, name: &str) -> String {
    let reply = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(
                json!({"name": name, "owner": "alice@acme.example", "posture_profile": profile()}),
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["join_token"].as_str().unwrap().to_owned()
}

fn attestor(server: &TestServer, key: &Arc<AgentKey>) -> Attestor {
    Attestor::new(AdminClient::new(&server.base, None).unwrap(), key.clone())
}

/// The claims of an SVID, verified against the JWKS the server publishes.
async fn verified_claims(server: &TestServer, svid: &str) -> serde_json::Map<String, Value> {
    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    let verified = jws::verify(svid, "JWT", &[Alg::Es256], |header| {
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| Some(k["kid"].as_str().unwrap()) == header.kid.as_deref())
            .ok_or(aims_token::TokenError::UnknownKey)?;
        VerifyingKey::from_jwk(jwk).map(|(k, _)| k)
    })
    .unwrap();
    verified.claims
}

async fn state_of(server: &TestServer, name: &str) -> String {
    let reply = server
        .admin(Method::GET, &format!("/v1/agents/{name}"), None)
        .await;
    reply.body["state"].as_str().unwrap().to_owned()
}

fn refused_code(result: Result<aims_api::AttestResponse, aims_sdk::SdkError>) -> String {
    match result {
        Err(aims_sdk::SdkError::Api { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn first_attest_issues_an_svid_bound_to_the_agent_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let join = register(&server, "coder").await;
    let key = key();
    let issued = attestor(&server, &key)
        .attest(&good(), &Credential::JoinToken(join.clone()), None)
        .await
        .unwrap();
    assert_eq!(issued.spiffe_id, "spiffe://test.example/agent/coder");
    let claims = verified_claims(&server, &issued.svid).await;
    assert_eq!(claims["sub"], "spiffe://test.example/agent/coder");
    assert_eq!(claims["aud"], server.base);
    assert_eq!(claims["iss"], server.base);
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    assert_eq!(claims["aims_posture"], good().digest());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((1..=600).contains(&lifetime), "{lifetime}");
    assert!(claims["jti"].as_str().unwrap().len() >= 16);

    // A requested audience is honoured; the retry with the same key and join token works.
    let again = attestor(&server, &key)
        .attest(
            &good(),
            &Credential::JoinToken(join),
            Some("https://tools.acme.example"),
        )
        .await
        .unwrap();
    assert_eq!(
        verified_claims(&server, &again.svid).await["aud"],
        "https://tools.acme.example"
    );

    let issue = server.last_event("identity.issue").await;
    assert_eq!(
        issue.agent.as_deref(),
        Some("spiffe://test.example/agent/coder")
    );
    assert_eq!(issue.owner.as_deref(), Some("alice@acme.example"));
    assert_eq!(
        issue.token_id.as_deref(),
        claims_jti(&again.svid, &server).await.as_deref()
    );
    assert_eq!(issue.details["proof"], "join_token");
    // An agent's identity never works as an operator credential.
    for path in ["/v1/agents", "/v1/keys", "/v1/audit"] {
        let reply = server
            .call(Method::GET, path, Some(&again.svid), None)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{path}"
        );
    }
    // Neither the join token nor the SVID is in the audit log.
    assert!(
        !server
            .records()
            .await
            .iter()
            .any(|r| r.body.contains(&again.svid))
    );
}

async fn claims_jti(svid: &str, server: &TestServer) -> Option<String> {
    verified_claims(server, svid).await["jti"]
        .as_str()
        .map(str::to_owned)
}

async fn renewal_needs_the_bound_key_and_a_live_svid(backend: Backend) {
    let server = TestServer::start(backend).await;
    let join = register(&server, "coder").await;
    let key = key();
    let first = attestor(&server, &key)
        .attest(&good(), &Credential::JoinToken(join), None)
        .await
        .unwrap();
    // Deployment may change between attestations.
    let renewed = attestor(&server, &key)
        .attest(
            &evidence("m1", DIGEST_A, "us"),
            &Credential::Svid(first.svid.clone()),
            None,
        )
        .await
        .unwrap();
    let parent = server.last_event("identity.issue").await;
    assert_eq!(parent.details["proof"], "renewal");
    assert_eq!(
        parent.parent_token_id,
        claims_jti(&first.svid, &server).await
    );

    // Another key cannot renew someone else's SVID.
    let thief = attestor(&server, &self::key())
        .attest(&good(), &Credential::Svid(renewed.svid.clone()), None)
        .await;
    assert_eq!(refused_code(thief), "key_mismatch");
    // A tampered SVID is refused.
    // Change one character inside the signature (not the last, whose low bits are padding).
    let mut tampered = renewed.svid.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let forged = attestor(&server, &key)
        .attest(&good(), &Credential::Svid(tampered), None)
        .await;
    assert_eq!(refused_code(forged), "invalid_svid");

    // Suspension revokes: the SVID no longer renews, even after resume.
    server
        .admin(Method::POST, "/v1/agents/coder/suspend", Some(json!({})))
        .await;
    server
        .admin(Method::POST, "/v1/agents/coder/resume", Some(json!({})))
        .await;
    let revoked = attestor(&server, &key)
        .attest(&good(), &Credential::Svid(renewed.svid), None)
        .await;
    assert_eq!(refused_code(revoked), "invalid_svid");
}

/// Posts a hand-made attestation and returns the reply.
async fn post_attest(server: &TestServer, body: Value) -> Reply {
    server
        .call(Method::POST, "/v1/attest", None, Some(body))
        .await
}

async fn nonce(server: &TestServer) -> String {
    let reply = server
        .call(Method::POST, "/v1/attest/nonce", None, None)
        .await;
    reply.body["nonce"].as_str().unwrap().to_owned()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn proof(key: &AgentKey, claims: Value) -> String {
    key.sign_self_signed(&SystemRandom::new(), TYP_ATTESTATION, &claims)
        .unwrap()
}

fn proof_claims(server: &TestServer, nonce: &str, evidence: &Evidence) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({"aud": server.base, "iat": now, "exp": now + 60, "nonce": nonce, "evidence": evidence})
}

async fn replayed_and_forged_proofs_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let join = register(&server, "coder").await;
    let key = AgentKey::generate(AgentKeyKind::Ed25519, &SystemRandom::new()).unwrap();
    let other = AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let n = nonce(&server).await;
    let good_proof = proof(&key, proof_claims(&server, &n, &good()));
    let mut forged = good_proof.clone();
    // Swap the payload for another one: the signature no longer matches.
    let other_proof = proof(&key, proof_claims(&server, "x", &good()));
    let parts: Vec<&str> = other_proof.split('.').collect();
    let mine: Vec<&str> = forged.split('.').collect();
    forged = format!("{}.{}.{}", mine[0], parts[1], mine[2]);

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"proof": forged, "join_token": join}),
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
        ),
        (
            json!({"proof": proof(&key, json!({"aud": "https://elsewhere", "iat": now, "exp": now + 60, "nonce": n, "evidence": good()})), "join_token": join}),
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
        ),
        (
            json!({"proof": proof(&key, json!({"aud": server.base, "iat": now - 600, "exp": now - 500, "nonce": n, "evidence": good()})), "join_token": join}),
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
        ),
        (
            json!({"proof": proof(&key, json!({"aud": server.base, "iat": now, "exp": now + 60, "evidence": good()})), "join_token": join}),
            StatusCode::UNAUTHORIZED,
            "invalid_nonce",
        ),
        (
            json!({"proof": proof(&key, proof_claims(&server, "never-issued", &good())), "join_token": join}),
            StatusCode::UNAUTHORIZED,
            "invalid_nonce",
        ),
        (
            json!({"proof": "a.b.c", "join_token": join}),
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
        ),
        (
            json!({"proof": good_proof, "join_token": join, "svid": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"proof": "x", "join_token": join, "is_admin": true}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let before = server.records().await.len();
        let reply = post_attest(&server, body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{body}: {}",
            reply.body
        );
        let events = server.events().await;
        assert_eq!(events.len(), before + 1, "{body}: one audited rejection");
        assert_eq!(events.last().unwrap().action, "api.reject");
    }

    // A proof whose embedded key is not a usable public key, and an oversized proof.
    let oct_header =
        b64(br#"{"alg":"ES256","typ":"aims-attest+jwt","jwk":{"kty":"oct","k":"AAAA"}}"#);
    let oct = format!("{oct_header}.{}.{}", b64(b"{}"), b64(&[7u8; 64]));
    let reply = post_attest(&server, json!({"proof": oct, "join_token": join})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNAUTHORIZED, "invalid_proof")
    );
    let mut huge = good();
    huge.model.id = Some("m".repeat(20_000));
    let reply = post_attest(&server, json!({"proof": format!("{}.{}.x", oct_header, b64(serde_json::to_string(&huge).unwrap().as_bytes())), "join_token": join})).await;
    assert_eq!(
        reply.code(),
        "invalid_proof",
        "oversized evidence is refused before anything else"
    );

    // Exactly one of join token and SVID; a fresh nonce is needed for each try.
    let reply = post_attest(&server, json!({"proof": proof(&key, proof_claims(&server, &nonce(&server).await, &good())), "join_token": join, "svid": "x"})).await;
    assert_eq!(reply.code(), "invalid_request");
    let reply = post_attest(
        &server,
        json!({"proof": proof(&key, proof_claims(&server, &nonce(&server).await, &good()))}),
    )
    .await;
    assert_eq!(reply.code(), "invalid_request");
    // Evidence with unknown fields or bad digests.
    let mut claims = proof_claims(&server, &nonce(&server).await, &good());
    claims["evidence"]["model"]["weights"] = json!("x");
    let reply = post_attest(
        &server,
        json!({"proof": proof(&key, claims), "join_token": join}),
    )
    .await;
    assert_eq!(reply.code(), "invalid_evidence");
    let reply = post_attest(&server, json!({"proof": proof(&key, proof_claims(&server, &nonce(&server).await, &evidence("m1", "sha256:nothex", "eu"))), "join_token": join})).await;
    assert_eq!(reply.code(), "invalid_evidence");
    let reply = post_attest(&server, json!({"proof": proof(&key, proof_claims(&server, &nonce(&server).await, &good())), "join_token": "aims_j_unknown"})).await;
    assert_eq!(reply.code(), "invalid_join_token");

    // The real thing works once; the same nonce again is a replay.
    let n = nonce(&server).await;
    let body =
        json!({"proof": proof(&key, proof_claims(&server, &n, &good())), "join_token": join});
    let ok = post_attest(&server, body.clone()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let replay = post_attest(&server, body).await;
    assert_eq!(replay.code(), "invalid_nonce");
    // The join token is now bound to `key`: another key cannot use it.
    let stolen = post_attest(&server, json!({"proof": proof(&other, proof_claims(&server, &nonce(&server).await, &good())), "join_token": join})).await;
    assert_eq!(
        (stolen.status, stolen.code()),
        (StatusCode::UNAUTHORIZED, "join_token_used")
    );
    let issued = server.count_events("identity.issue").await;
    assert_eq!(issued, 1, "no identity issued by any refused request");
}

/// A loopback receiver for the drift webhook: records every body it gets.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let url = format!("{}/hook", crate::kit::serve_on_loopback(app).await);
    (url, received)
}

async fn each_drift_kind_quarantines_and_revokes(backend: Backend) {
    let (hook, received) = webhook_receiver().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = open_store(backend, &dir).await;
    let env = HashMap::from([
        ("AIMS_BOOTSTRAP_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ("AIMS_DRIFT_WEBHOOK_URL".to_owned(), hook.clone()),
    ]);
    let server = TestServer::start_on(backend, dir, store, env)
        .await
        .unwrap();

    // (agent, first evidence or None, drifting evidence, expected mismatch)
    let cases = [
        (
            "not-allowed",
            None,
            evidence("m3", DIGEST_A, "eu"),
            ("model.id", "not_allowed"),
        ),
        (
            "missing",
            None,
            Evidence {
                model: ModelEvidence {
                    id: Some("m1".into()),
                    digest: None,
                },
                ..good()
            },
            ("model.digest", "missing"),
        ),
        (
            "changed-digest",
            Some(good()),
            evidence("m1", DIGEST_B, "eu"),
            ("model.digest", "changed"),
        ),
        (
            "changed-model",
            Some(good()),
            evidence("m2", DIGEST_A, "eu"),
            ("model.id", "changed"),
        ),
    ];
    for (name, first, drifted, (field, kind)) in cases {
        let join = register(&server, name).await;
        let key = key();
        let a = attestor(&server, &key);
        let credential = match first {
            Some(first) => {
                let issued = a
                    .attest(&first, &Credential::JoinToken(join), None)
                    .await
                    .unwrap();
                Credential::Svid(issued.svid)
            }
            None => Credential::JoinToken(join),
        };
        let reply = a.attest(&drifted, &credential, None).await;
        match reply {
            Err(aims_sdk::SdkError::Api {
                status,
                code,
                message,
            }) => {
                assert_eq!((status, code.as_str()), (403, "posture_rejected"), "{name}");
                assert!(
                    !message.contains(field),
                    "{name}: the agent learns no detail"
                );
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        assert_eq!(state_of(&server, name).await, "quarantined", "{name}");
        let drift = server.last_event("posture.drift").await;
        assert_eq!(
            drift.agent.as_deref(),
            Some(format!("spiffe://test.example/agent/{name}").as_str())
        );
        assert_eq!(drift.details["mismatches"][0]["field"], field, "{name}");
        assert_eq!(drift.details["mismatches"][0]["kind"], kind, "{name}");
        // Everything it held is revoked: even the SVID it had cannot renew.
        if let Credential::Svid(svid) = &credential {
            let again = a
                .attest(&good(), &Credential::Svid(svid.clone()), None)
                .await;
            assert_eq!(refused_code(again), "invalid_svid", "{name}");
        }
    }

    // One signed notification per quarantine, verifiable against the JWKS.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while received.lock().unwrap().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 4);
    for body in bodies {
        let claims = crate::kit::event_claims(&server, &body).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        jws::check_claims(
            &claims,
            &ClaimChecks {
                issuer: Some(&server.base),
                audience: &hook,
                now,
                leeway_s: 5,
                max_lifetime_s: None,
            },
        )
        .unwrap();
        assert_eq!(claims["event"]["type"], "agent.quarantined");
        assert_eq!(claims["event"]["cause"], "posture_drift");
    }
}

async fn agents_that_are_not_active_cannot_attest(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (name, action) in [("paused", "suspend"), ("retired", "decommission")] {
        let join = register(&server, name).await;
        server
            .admin(
                Method::POST,
                &format!("/v1/agents/{name}/{action}"),
                Some(json!({})),
            )
            .await;
        let refused = attestor(&server, &key())
            .attest(&good(), &Credential::JoinToken(join), None)
            .await;
        assert_eq!(refused_code(refused), "agent_not_active", "{name}");
    }
    // Past its recertification date.
    let join = register(&server, "stale").await;
    let name = aims_core::id::AgentName::new("stale").unwrap();
    let mut agent = server.store.agent(&name).await.unwrap().unwrap();
    let expected = agent.revision;
    agent.revision += 1;
    let now = time::OffsetDateTime::now_utc();
    agent.created_at = now - time::Duration::days(2);
    agent.recertify_by = now - time::Duration::days(1);
    let event = aims_core::audit::AuditEvent::new(
        time::OffsetDateTime::now_utc(),
        aims_core::audit::Actor::System,
        "test.backdate",
        aims_core::audit::Outcome::Success,
    );
    server
        .store
        .update_agent(&agent, expected, &event)
        .await
        .unwrap();
    let refused = attestor(&server, &key())
        .attest(&good(), &Credential::JoinToken(join), None)
        .await;
    assert_eq!(refused_code(refused), "recertification_due");
    assert_eq!(server.count_events("identity.issue").await, 0);
}

async fn release_clears_the_baseline(backend: Backend) {
    let server = TestServer::start(backend).await;
    let join = register(&server, "coder").await;
    let key = key();
    let a = attestor(&server, &key);
    let first = a
        .attest(&good(), &Credential::JoinToken(join), None)
        .await
        .unwrap();
    let upgraded = evidence("m2", DIGEST_A, "eu");
    let drift = a
        .attest(&upgraded, &Credential::Svid(first.svid), None)
        .await;
    assert_eq!(refused_code(drift), "posture_rejected");

    // Only an admin releases; the operator's release approves the change.
    let auditor = server.add_user("carol", "auditor").await;
    let denied = server
        .call(
            Method::POST,
            "/v1/agents/coder/release",
            Some(&auditor),
            Some(json!({})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let released = server
        .admin(
            Method::POST,
            "/v1/agents/coder/release",
            Some(json!({"reason": "model upgrade approved"})),
        )
        .await;
    assert_eq!(released.body["state"], "active", "{}", released.body);
    let join = server
        .admin(Method::POST, "/v1/agents/coder/join-token", None)
        .await
        .body["join_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued = a
        .attest(&upgraded, &Credential::JoinToken(join), None)
        .await
        .unwrap();
    assert_eq!(
        verified_claims(&server, &issued.svid).await["aims_posture"],
        upgraded.digest()
    );
}

#[tokio::test]
async fn the_sdk_renews_before_expiry() {
    let server = TestServer::start(Backend::Sqlite).await;
    let reply = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "short", "owner": "alice@acme.example", "limits": {"max_token_ttl_s": 6}})),
        )
        .await;
    let join = reply.body["join_token"].as_str().unwrap().to_owned();
    let source = aims_sdk::attest::SvidSource::start(
        attestor(&server, &key()),
        Credential::JoinToken(join),
        None,
        good,
    )
    .await
    .unwrap();
    let first = source.svid().unwrap();
    let first_expiry = source.expires_at().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while source.svid().as_deref() == Some(first.as_str()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(source.svid().unwrap(), first, "renewed in the background");
    assert!(source.expires_at().unwrap() > first_expiry);
    assert!(
        time::OffsetDateTime::now_utc() < first_expiry,
        "renewed before the old one expired"
    );
    let renewals = server
        .events()
        .await
        .iter()
        .filter(|e| e.details["proof"] == "renewal")
        .count();
    assert!(renewals >= 1);
}
