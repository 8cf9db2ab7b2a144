//! Tests of the verifier: [`VerifierState::check`] against tokens minted here with
//! `aims_token::access::mint` and proofs signed with `aims_token::dpop::sign_proof` (every
//! refusal, and that no error shows the token), the feed and JWKS bookkeeping, and
//! [`Verifier`] against the scripted loopback server.

use aims_api::oauth::{RevocationEntry, RevocationKind};
use aims_core::id::{AgentName, TaskId};
use aims_token::access::{Actor, Confirmation, mint};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use aims_token::jwk::jwks;
use aims_token::signing::SigningKey;
use aims_token::{dpop, jws};
use ring::rand::SystemRandom;
use serde_json::json;

use super::*;
use crate::test_server::{Seen, json as reply_json, serve};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://aims.acme.example";
const AUD: &str = "https://tools.acme.example";
const URL: &str = "https://tools.acme.example/repos/app/contents";

struct Fixture {
    rng: SystemRandom,
    signer: SigningKey,
    agent: AgentKey,
    state: VerifierState,
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let signer = SigningKey::generate(&rng).unwrap().key;
    let agent = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let mut state = VerifierState::new(ISS, AUD, Duration::from_secs(60));
    state
        .set_jwks(&jwks(std::slice::from_ref(signer.public_jwk())))
        .unwrap();
    state.mark_synced(NOW);
    Fixture {
        rng,
        signer,
        agent,
        state,
    }
}

fn claims(f: &Fixture) -> AccessClaims {
    AccessClaims {
        cnf: Some(Confirmation {
            jkt: f.agent.thumbprint(),
        }),
        ..unbound_claims("jti-1")
    }
}

/// The test's claims for token `jti`, bound to no key.
fn unbound_claims(jti: &str) -> AccessClaims {
    AccessClaims {
        iss: ISS.into(),
        sub: "spiffe://acme.example/agent/coder".into(),
        aud: AUD.into(),
        client_id: "spiffe://acme.example/agent/coder".into(),
        scope: "read:repo/acme/*".into(),
        jti: aims_core::id::TokenId::new(jti).unwrap(),
        iat: NOW - 10,
        exp: NOW + 290,
        task_id: TaskId::new("task-1").unwrap(),
        intent: aims_core::id::Intent::new("fix the build").unwrap(),
        cnf: None,
        act: None,
    }
}

/// Whether `state` refuses the test's token `jti`.
fn refuses(state: &VerifierState, jti: &str) -> bool {
    state.is_revoked(&unbound_claims(jti))
}

impl Fixture {
    fn token(&self, claims: &AccessClaims) -> String {
        mint(&self.signer, &self.rng, claims).unwrap()
    }

    fn proof_by(&self, key: &AgentKey, method: &str, url: &str, token: Option<&str>) -> String {
        dpop::sign_proof(key, &self.rng, method, url, token, NOW).unwrap()
    }

    fn proof(&self, token: &str) -> String {
        self.proof_by(&self.agent, "POST", URL, Some(token))
    }

    fn check(&self, authorization: &str, dpop: Option<&str>) -> Result<AccessClaims, VerifyError> {
        self.state.check(authorization, dpop, "POST", URL, NOW)
    }
}

fn entry(jti: &str, expires_at: i64) -> RevocationEntry {
    RevocationEntry {
        seq: 1,
        kind: RevocationKind::Token,
        jti: Some(jti.into()),
        agent: AgentName::new("coder").unwrap(),
        task_id: Some("task-1".into()),
        revoked_at: OffsetDateTime::from_unix_timestamp(NOW - 1).unwrap(),
        expires_at: OffsetDateTime::from_unix_timestamp(expires_at).unwrap(),
        reason: None,
    }
}

#[test]
fn a_bound_token_with_a_fresh_proof_verifies() {
    let f = fixture();
    let mut want = claims(&f);
    want.act = Some(Actor {
        sub: "spiffe://acme.example/agent/coder".into(),
        act: Some(Box::new(Actor {
            sub: "spiffe://acme.example/agent/planner".into(),
            act: None,
        })),
    });
    let token = f.token(&want);
    let got = f
        .check(&format!("DPoP {token}"), Some(&f.proof(&token)))
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(got.depth(), 1);
    // The scheme is case-insensitive; the query of the URL is not part of `htu`.
    let proof = f.proof(&token);
    let with_query = format!("{URL}?ref=main");
    assert!(
        f.state
            .check(
                &format!("dpop {token}"),
                Some(&proof),
                "POST",
                &with_query,
                NOW
            )
            .is_ok()
    );
}

#[test]
fn an_unbound_token_verifies_as_bearer_only() {
    let f = fixture();
    let token = f.token(&AccessClaims {
        cnf: None,
        ..claims(&f)
    });
    assert!(f.check(&format!("Bearer {token}"), None).is_ok());
    let proof = f.proof(&token);
    assert!(matches!(
        f.check(&format!("DPoP {token}"), Some(&proof)),
        Err(VerifyError::UnboundTokenAsDpop)
    ));
}

#[test]
fn a_bound_token_presented_as_bearer_is_refused() {
    let f = fixture();
    let token = f.token(&claims(&f));
    let proof = f.proof(&token);
    for dpop in [None, Some(proof.as_str())] {
        assert!(matches!(
            f.check(&format!("Bearer {token}"), dpop),
            Err(VerifyError::BoundTokenAsBearer)
        ));
    }
}

#[test]
fn the_token_itself_is_checked() {
    let f = fixture();
    let refused = |claims: AccessClaims| {
        let token = f.token(&claims);
        f.check(&format!("DPoP {token}"), Some(&f.proof(&token)))
            .unwrap_err()
    };
    assert!(matches!(
        refused(AccessClaims {
            aud: "https://other.example".into(),
            ..claims(&f)
        }),
        VerifyError::Token(TokenError::Audience)
    ));
    assert!(matches!(
        refused(AccessClaims {
            iss: "https://evil.example".into(),
            ..claims(&f)
        }),
        VerifyError::Token(TokenError::Issuer)
    ));
    assert!(matches!(
        refused(AccessClaims {
            iat: NOW - 400,
            exp: NOW - LEEWAY_S - 1,
            ..claims(&f)
        }),
        VerifyError::Token(TokenError::Expired)
    ));
    // Within the leeway an expired token still verifies, as at the server.
    let late = f.token(&AccessClaims {
        iat: NOW - 400,
        exp: NOW - LEEWAY_S + 1,
        ..claims(&f)
    });
    assert!(
        f.check(&format!("DPoP {late}"), Some(&f.proof(&late)))
            .is_ok()
    );
}

#[test]
fn tokens_of_unknown_keys_and_other_kinds_are_refused() {
    let f = fixture();
    let stranger = SigningKey::generate(&f.rng).unwrap().key;
    let token = mint(&stranger, &f.rng, &claims(&f)).unwrap();
    assert!(matches!(
        f.check(&format!("DPoP {token}"), Some(&f.proof(&token))),
        Err(VerifyError::UnknownKey)
    ));
    // An SVID signed by the very same key is not an access token.
    let body = serde_json::to_value(claims(&f)).unwrap();
    let svid = jws::sign(&f.signer, &f.rng, jws::TYP_SVID, &body).unwrap();
    assert!(matches!(
        f.check(&format!("DPoP {svid}"), Some(&f.proof(&svid))),
        Err(VerifyError::Token(TokenError::Type))
    ));
    // A tampered token does not verify.
    let good = f.token(&claims(&f));
    let tampered = format!("{}x", good.trim_end_matches(|c: char| c != '.'));
    assert!(matches!(
        f.check(&format!("DPoP {tampered}"), Some(&f.proof(&tampered))),
        Err(VerifyError::Token(_))
    ));
}

#[test]
fn epochs_refuse_earlier_tokens_of_an_agent_or_task_the_feed_names() {
    let mut state = VerifierState::new(ISS, AUD, Duration::from_secs(5));
    let epoch = |kind, task: Option<&str>| RevocationEntry {
        kind,
        jti: None,
        task_id: task.map(str::to_owned),
        revoked_at: OffsetDateTime::from_unix_timestamp(NOW).unwrap(),
        expires_at: OffsetDateTime::from_unix_timestamp(NOW + 86_400).unwrap(),
        ..entry("unused", NOW)
    };
    state.insert_revocations(&[epoch(RevocationKind::Task, Some("task-1"))], NOW);
    // Issued ten seconds before the task was revoked, never named by id.
    assert!(refuses(&state, "never-logged"));
    let later = AccessClaims {
        iat: NOW + 1,
        ..unbound_claims("later")
    };
    assert!(!state.is_revoked(&later), "issued after the epoch");
    let other_task = AccessClaims {
        task_id: TaskId::new("task-2").unwrap(),
        ..unbound_claims("other")
    };
    assert!(!state.is_revoked(&other_task));
    state.insert_revocations(&[epoch(RevocationKind::Agent, None)], NOW);
    assert!(state.is_revoked(&other_task), "the agent's epoch");
}

#[test]
fn revoked_tokens_are_refused_until_they_expire() {
    let mut f = fixture();
    let token = f.token(&claims(&f));
    f.state
        .insert_revocations(&[entry("jti-1", NOW + 290)], NOW);
    assert!(refuses(&f.state, "jti-1"));
    assert!(matches!(
        f.check(&format!("DPoP {token}"), Some(&f.proof(&token))),
        Err(VerifyError::Revoked)
    ));
    // Pruning keeps it while the token could still verify (expiry plus leeway)...
    f.state.prune(NOW + 290 + LEEWAY_S);
    assert!(refuses(&f.state, "jti-1"));
    // ...and forgets it afterwards.
    f.state.prune(NOW + 290 + LEEWAY_S + 1);
    assert!(!refuses(&f.state, "jti-1"));
    assert_eq!(f.state.revoked_count(), 0);
}

#[test]
fn the_proof_must_be_present_valid_and_by_the_bound_key() {
    let f = fixture();
    let token = f.token(&claims(&f));
    let auth = format!("DPoP {token}");
    assert!(matches!(
        f.check(&auth, None),
        Err(VerifyError::MissingProof)
    ));
    let other_key = AgentKey::generate(AgentKeyKind::Ed25519, &f.rng).unwrap();
    let wrong_key = f.proof_by(&other_key, "POST", URL, Some(&token));
    assert!(matches!(
        f.check(&auth, Some(&wrong_key)),
        Err(VerifyError::KeyMismatch)
    ));
    for bad in [
        f.proof_by(&f.agent, "GET", URL, Some(&token)),
        f.proof_by(
            &f.agent,
            "POST",
            "https://tools.acme.example/other",
            Some(&token),
        ),
        f.proof_by(&f.agent, "POST", URL, None),
        f.proof_by(&f.agent, "POST", URL, Some("another-token")),
        "not-a-proof".to_owned(),
    ] {
        assert!(
            matches!(f.check(&auth, Some(&bad)), Err(VerifyError::Proof(_))),
            "{:?}",
            f.check(&auth, Some(&bad))
        );
    }
    let old = dpop::sign_proof(
        &f.agent,
        &f.rng,
        "POST",
        URL,
        Some(&token),
        NOW - dpop::MAX_AGE_S - 1,
    )
    .unwrap();
    assert!(matches!(
        f.check(&auth, Some(&old)),
        Err(VerifyError::Proof(TokenError::Expired))
    ));
}

#[test]
fn a_proof_is_accepted_once() {
    let f = fixture();
    let token = f.token(&claims(&f));
    let auth = format!("DPoP {token}");
    let proof = f.proof(&token);
    assert!(f.check(&auth, Some(&proof)).is_ok());
    assert!(matches!(
        f.check(&auth, Some(&proof)),
        Err(VerifyError::Replay)
    ));
    // A proof refused for another reason is not remembered as used: this revocation entry
    // is forgotten at the next prune, and the same proof then verifies.
    let mut f = f;
    let fresh = f.proof(&token);
    f.state
        .insert_revocations(&[entry("jti-1", NOW - 100)], NOW - 200);
    assert!(matches!(
        f.check(&auth, Some(&fresh)),
        Err(VerifyError::Revoked)
    ));
    f.state.prune(NOW);
    assert!(f.check(&auth, Some(&fresh)).is_ok());
}

#[test]
fn a_stale_feed_fails_closed() {
    let mut f = fixture();
    let token = f.token(&claims(&f));
    let auth = format!("DPoP {token}");
    let never = VerifierState::new(ISS, AUD, Duration::from_secs(60));
    assert!(matches!(
        never.check(&auth, Some(&f.proof(&token)), "POST", URL, NOW),
        Err(VerifyError::Stale)
    ));
    f.state = VerifierState::new(ISS, AUD, Duration::from_secs(60));
    f.state
        .set_jwks(&jwks(std::slice::from_ref(f.signer.public_jwk())))
        .unwrap();
    f.state.mark_synced(NOW - 61);
    assert!(matches!(
        f.check(&auth, Some(&f.proof(&token))),
        Err(VerifyError::Stale)
    ));
    assert!(!f.state.is_fresh(NOW));
    f.state.mark_synced(NOW - 60);
    assert!(f.check(&auth, Some(&f.proof(&token))).is_ok());
    // Marking never moves the sync time back.
    f.state.mark_synced(NOW - 3600);
    assert_eq!(f.state.synced_at(), Some(NOW - 60));
}

#[test]
fn only_dpop_and_bearer_authorization_parses() {
    let f = fixture();
    assert!(matches!(f.check("", None), Err(VerifyError::Missing)));
    for bad in [
        "DPoP",
        "DPoP ",
        "Basic Z2l0aHViOnNlY3JldA==",
        "Token abc",
        "DPoPabc",
    ] {
        assert!(
            matches!(f.check(bad, None), Err(VerifyError::Scheme)),
            "{bad}: {:?}",
            f.check(bad, None)
        );
    }
    // A credential that is not one token is a malformed token.
    for bad in ["DPoP a b", "DPoP a,b"] {
        let refused = f.check(bad, None).unwrap_err();
        assert!(
            matches!(refused, VerifyError::Token(_)),
            "{bad}: {refused:?}"
        );
        assert_eq!(refused.error_code(), Some("invalid_token"));
    }
}

#[test]
fn errors_never_show_the_token_or_the_proof() {
    let f = fixture();
    let token = f.token(&AccessClaims {
        aud: "https://other.example".into(),
        ..claims(&f)
    });
    let proof = f.proof(&token);
    let mut errors = vec![
        f.check(&format!("DPoP {token}"), Some(&proof)).unwrap_err(),
        f.check(&format!("Basic {token}"), None).unwrap_err(),
    ];
    let good = f.token(&claims(&f));
    errors.push(
        f.check(&format!("DPoP {good}"), Some("garbage.proof.here"))
            .unwrap_err(),
    );
    for err in errors {
        let shown = format!("{err} {err:?} {:?}", err.www_authenticate());
        for secret in [&token, &proof, &good] {
            let middle = secret.split('.').nth(1).unwrap();
            assert!(!shown.contains(middle), "{shown}");
        }
    }
}

#[test]
fn errors_map_to_statuses_and_challenges() {
    assert_eq!(VerifyError::Stale.status(), 503);
    assert_eq!(VerifyError::Stale.www_authenticate(), None);
    assert_eq!(VerifyError::Scheme.status(), 400);
    assert_eq!(VerifyError::Revoked.status(), 401);
    assert_eq!(VerifyError::Revoked.error_code(), Some("invalid_token"));
    assert_eq!(VerifyError::Replay.error_code(), Some("invalid_dpop_proof"));
    assert_eq!(
        VerifyError::Missing.www_authenticate().unwrap(),
        "DPoP algs=\"ES256 EdDSA Ed25519\""
    );
    assert_eq!(
        VerifyError::BoundTokenAsBearer.www_authenticate().unwrap(),
        "DPoP algs=\"ES256 EdDSA Ed25519\", error=\"invalid_token\", \
         error_description=\"a DPoP-bound token was presented as a bearer token\""
    );
}

#[test]
fn the_jwks_keeps_only_es256_signing_keys_with_a_kid() {
    let f = fixture();
    let mut state = VerifierState::new(ISS, AUD, Duration::from_secs(60));
    let sig = f.signer.public_jwk();
    let mut set = jwks(std::slice::from_ref(sig));
    let other = SigningKey::generate(&f.rng).unwrap().key;
    let mut svid_key = serde_json::to_value(other.public_jwk()).unwrap();
    svid_key["use"] = json!("jwt-svid");
    let mut ed = AgentKey::generate(AgentKeyKind::Ed25519, &f.rng)
        .unwrap()
        .public_jwk();
    ed["kid"] = json!("ed-1");
    let no_kid = f.agent.public_jwk();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.extend([svid_key, ed, no_kid, json!({"kty": "oct", "k": "c2VjcmV0"})]);
    assert_eq!(state.set_jwks(&set).unwrap(), 1);
    assert_eq!(state.key_count(), 1);
    // A document with no usable key changes nothing.
    assert!(state.set_jwks(&json!({"keys": []})).is_err());
    assert!(state.set_jwks(&json!({"no": "keys"})).is_err());
    assert_eq!(state.key_count(), 1);
    state.set_keys([]);
    assert_eq!(state.key_count(), 0);
}

#[test]
fn feed_pages_advance_and_catch_up() {
    let mut state = VerifierState::new(ISS, AUD, Duration::from_secs(60));
    let page = |next, jtis: &[&str]| RevocationPage {
        revocations: jtis.iter().map(|j| entry(j, NOW + 100)).collect(),
        next,
    };
    assert!(!state.apply_page(&page(2, &["a", "b"]), NOW).unwrap());
    assert_eq!(state.since(), 2);
    assert_eq!(state.synced_at(), None, "not caught up yet");
    assert!(state.apply_page(&page(2, &[]), NOW).unwrap());
    assert_eq!(state.synced_at(), Some(NOW));
    assert!(refuses(&state, "a") && refuses(&state, "b"));
    // Going back, or standing still with entries, is refused and changes nothing.
    assert!(state.apply_page(&page(1, &[]), NOW + 5).is_err());
    assert!(state.apply_page(&page(2, &["c"]), NOW + 5).is_err());
    assert!(!refuses(&state, "c"));
    assert_eq!((state.since(), state.synced_at()), (2, Some(NOW)));
    // Catching up prunes what has expired.
    assert!(
        state
            .apply_page(&page(2, &[]), NOW + 100 + LEEWAY_S + 1)
            .unwrap()
    );
    assert_eq!(state.revoked_count(), 0);
}

// --- the Verifier over HTTP ------------------------------------------------------------------

fn config(base: &str, poll: u64, stale: u64) -> VerifierConfig {
    VerifierConfig {
        base_url: base.into(),
        issuer: ISS.into(),
        audience: AUD.into(),
        client_name: ResourceServerName::new("github-tools").unwrap(),
        client_secret: SecretString::from("aims_r_s3cr3t"),
        poll_interval: Duration::from_secs(poll),
        max_staleness: Duration::from_secs(stale),
    }
}

fn page_reply(next: u64, entries: Vec<RevocationEntry>) -> crate::test_server::Reply {
    reply_json(
        200,
        serde_json::to_string(&RevocationPage {
            revocations: entries,
            next,
        })
        .unwrap(),
    )
}

fn live_claims(f: &Fixture, jti: &str) -> AccessClaims {
    let now = unix_now();
    AccessClaims {
        jti: aims_core::id::TokenId::new(jti).unwrap(),
        iat: now - 5,
        exp: now + 300,
        ..claims(f)
    }
}

fn live_proof(f: &Fixture, token: &str) -> String {
    dpop::sign_proof(&f.agent, &f.rng, "POST", URL, Some(token), unix_now()).unwrap()
}

#[tokio::test]
async fn start_fetches_keys_and_follows_the_feed() {
    let f = fixture();
    let other = SigningKey::generate(&f.rng).unwrap().key;
    let (base, seen) = serve(vec![
        reply_json(
            200,
            jwks(std::slice::from_ref(f.signer.public_jwk())).to_string(),
        ),
        page_reply(1, vec![entry("revoked", unix_now() + 300)]),
        page_reply(1, vec![]),
        // A token with a new kid makes the verifier fetch the JWKS again.
        reply_json(
            200,
            jwks(&[f.signer.public_jwk().clone(), other.public_jwk().clone()]).to_string(),
        ),
    ]);
    let verifier = Verifier::start(config(&base, 3600, 7200)).await.unwrap();
    let seen: Vec<Seen> = seen.iter().take(3).collect();
    assert_eq!(seen[0].target, "/.well-known/jwks.json");
    assert_eq!(seen[1].target, "/v1/revocations?since=0&limit=1000");
    assert_eq!(seen[2].target, "/v1/revocations?since=1&limit=1000");
    assert!(
        seen[1]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    let status = verifier.status();
    assert!(status.fresh);
    assert_eq!((status.since, status.keys, status.revoked), (1, 1, 1));
    assert!(!format!("{verifier:?}").contains("s3cr3t"));

    let token = f.token(&live_claims(&f, "live"));
    let claims = verifier
        .verify(
            &format!("DPoP {token}"),
            Some(&live_proof(&f, &token)),
            "POST",
            URL,
        )
        .await
        .unwrap();
    assert_eq!(claims.jti, "live");

    let revoked = f.token(&live_claims(&f, "revoked"));
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("DPoP {revoked}").parse().unwrap());
    headers.insert(DPOP, live_proof(&f, &revoked).parse().unwrap());
    assert!(matches!(
        verifier.verify_headers(&headers, "POST", URL).await,
        Err(VerifyError::Revoked)
    ));
    headers.append(DPOP, live_proof(&f, &revoked).parse().unwrap());
    assert!(matches!(
        verifier.verify_headers(&headers, "POST", URL).await,
        Err(VerifyError::MultipleProofs)
    ));
    assert!(matches!(
        verifier
            .verify_headers(&HeaderMap::new(), "POST", URL)
            .await,
        Err(VerifyError::Missing)
    ));

    // A key published after start is fetched on first sight...
    let rotated = mint(&other, &f.rng, &live_claims(&f, "rotated")).unwrap();
    assert!(
        verifier
            .verify(
                &format!("DPoP {rotated}"),
                Some(&live_proof(&f, &rotated)),
                "POST",
                URL
            )
            .await
            .is_ok()
    );
    assert_eq!(verifier.status().keys, 2);
    // ...but unknown kids do not make it fetch again within the rate limit (the scripted
    // server has no answer left, so a fetch would be recorded as an error).
    let stranger = SigningKey::generate(&f.rng).unwrap().key;
    let unknown = mint(&stranger, &f.rng, &live_claims(&f, "x")).unwrap();
    assert!(matches!(
        verifier
            .verify(
                &format!("DPoP {unknown}"),
                Some(&live_proof(&f, &unknown)),
                "POST",
                URL
            )
            .await,
        Err(VerifyError::UnknownKey)
    ));
    assert_eq!(verifier.status().last_error, None);
}

#[tokio::test]
async fn start_fails_when_aims_cannot_be_followed() {
    let (base, _seen) = serve(vec![reply_json(200, r#"{"keys":[]}"#)]);
    assert!(matches!(
        Verifier::start(config(&base, 1, 10)).await,
        Err(SdkError::Decode(_))
    ));
    let f = fixture();
    let (base, _seen) = serve(vec![
        reply_json(
            200,
            jwks(std::slice::from_ref(f.signer.public_jwk())).to_string(),
        ),
        reply_json(
            401,
            r#"{"error":"unauthorized","message":"bad client secret"}"#,
        ),
    ]);
    let err = Verifier::start(config(&base, 1, 10)).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.to_string().contains("s3cr3t"));
    for (poll, stale) in [(0, 10), (10, 10), (10, 5)] {
        assert!(matches!(
            Verifier::start(config("http://127.0.0.1:9", poll, stale)).await,
            Err(SdkError::InvalidRequest(_))
        ));
    }
}
