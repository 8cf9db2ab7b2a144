//! Tests of [`authenticate`]: every refusal in its place in the order, the codes and
//! challenges, and that no refusal shows the token.

use std::collections::HashMap;

use aims_core::id::SpiffeId;
use aims_core::revocation::{Notice, Revoked};
use ring::rand::SystemRandom;

use super::*;
use crate::access::Confirmation;
use crate::agent_key::{AgentKey, AgentKeyKind};
use crate::signing::SigningKey;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://aims.acme.example";
const AUD: &str = "https://tools.acme.example";
const URL: &str = "https://tools.acme.example/repos/app";

struct Fixture {
    rng: SystemRandom,
    signer: SigningKey,
    agent: AgentKey,
    keys: HashMap<String, VerifyingKey>,
    revoked: RevokedSet,
    replay: ReplayCache,
    nonces: NonceKey,
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let signer = SigningKey::generate(&rng).unwrap().key;
    let jwk = serde_json::to_value(signer.public_jwk()).unwrap();
    let (key, _) = VerifyingKey::from_jwk(&jwk).unwrap();
    let keys = HashMap::from([(signer.kid().to_owned(), key)]);
    let agent = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let nonces = NonceKey::random(&rng, "authn-test").unwrap();
    Fixture {
        rng,
        signer,
        agent,
        keys,
        revoked: RevokedSet::default(),
        replay: ReplayCache::new(100),
        nonces,
    }
}

fn task_claims(f: &Fixture, bound: bool) -> AccessClaims {
    AccessClaims {
        iss: ISS.into(),
        sub: "spiffe://acme.example/agent/coder".into(),
        aud: AUD.into(),
        client_id: "spiffe://acme.example/agent/coder".into(),
        scope: "read:repo/acme/*".into(),
        jti: aims_core::id::TokenId::new("jti-1").unwrap(),
        iat: NOW - 10,
        exp: NOW + 290,
        task_id: aims_core::id::TaskId::new("task-1").unwrap(),
        intent: aims_core::id::Intent::new("fix the build").unwrap(),
        cnf: bound.then(|| Confirmation {
            jkt: f.agent.thumbprint(),
        }),
        act: None,
    }
}

fn svid(f: &Fixture) -> String {
    let claims = SvidClaims {
        iss: ISS.into(),
        sub: SpiffeId::parse("spiffe://acme.example/agent/coder").unwrap(),
        aud: ISS.into(),
        iat: NOW - 10,
        exp: NOW + 290,
        jti: aims_core::id::TokenId::new("svid-1").unwrap(),
        cnf: Confirmation {
            jkt: f.agent.thumbprint(),
        },
        aims_posture: "sha256:00".into(),
    };
    svid::mint(&f.signer, &f.rng, &claims).unwrap()
}

fn token(f: &Fixture, claims: &AccessClaims) -> String {
    access::mint(&f.signer, &f.rng, claims).unwrap()
}

fn proof(f: &Fixture, key: &AgentKey, token: &str, nonce: Option<&str>) -> String {
    dpop::sign_proof_with_nonce(key, &f.rng, "POST", URL, Some(token), nonce, NOW).unwrap()
}

/// What the enforcement point under test accepts.
#[derive(Clone, Copy)]
struct Point {
    task_audience: Option<&'static str>,
    svid_audience: Option<&'static str>,
    stale: bool,
    nonces: bool,
}

/// A resource server: task tokens for its audience only, a fresh revoked set, no nonces.
const RESOURCE_SERVER: Point = Point {
    task_audience: Some(AUD),
    svid_audience: None,
    stale: false,
    nonces: false,
};

/// The issuer's own enforcement point: task tokens for any audience, and identities.
const ISSUER: Point = Point {
    task_audience: None,
    svid_audience: Some(ISS),
    ..RESOURCE_SERVER
};

fn run(
    f: &Fixture,
    authorization: Option<&str>,
    proof: Option<&str>,
    point: Point,
) -> Result<Authenticated, Refusal> {
    let keys = |kid: &str| f.keys.get(kid);
    let rules = Rules {
        issuer: ISS,
        keys: &keys,
        task_audience: point.task_audience,
        svid_audience: point.svid_audience,
        revoked: (!point.stale).then_some(&f.revoked),
        replay: &f.replay,
        verified: None,
        nonces: point.nonces.then_some(&f.nonces),
        now: NOW,
    };
    authenticate(
        &Presented {
            authorization,
            proof,
            method: "POST",
            url: URL,
        },
        &rules,
    )
}

#[test]
fn authorization_parsing_takes_bearer_and_dpop_only() {
    assert_eq!(parse_authorization("DPoP abc"), Some((Scheme::Dpop, "abc")));
    assert_eq!(
        parse_authorization("bearer  abc "),
        Some((Scheme::Bearer, "abc"))
    );
    // The credential's syntax is the token verification's to refuse.
    assert_eq!(
        parse_authorization("Bearer a b"),
        Some((Scheme::Bearer, "a b"))
    );
    for refused in [
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearerabc",
        "Token abc",
    ] {
        assert_eq!(parse_authorization(refused), None, "{refused:?}");
    }
    let long = format!("Bearer {}", "a".repeat(jws::MAX_TOKEN_LEN + 1));
    assert_eq!(parse_authorization(&long), None);
}

#[test]
fn a_bound_token_with_its_proof_is_accepted_once() {
    let f = fixture();
    let token = token(&f, &task_claims(&f, true));
    let proof = proof(&f, &f.agent, &token, None);
    let auth = format!("DPoP {token}");
    let accepted = run(&f, Some(&auth), Some(&proof), RESOURCE_SERVER).unwrap();
    assert!(matches!(
        accepted,
        Authenticated::Task {
            scheme: Scheme::Dpop,
            ..
        }
    ));
    assert_eq!(
        run(&f, Some(&auth), Some(&proof), RESOURCE_SERVER),
        Err(Refusal::Replay)
    );
}

#[test]
fn the_binding_decides_the_scheme() {
    let f = fixture();
    let bound = token(&f, &task_claims(&f, true));
    let unbound = token(&f, &task_claims(&f, false));
    let as_bearer = format!("Bearer {bound}");
    assert_eq!(
        run(&f, Some(&as_bearer), None, RESOURCE_SERVER),
        Err(Refusal::BoundTokenAsBearer)
    );
    let as_dpop = format!("DPoP {unbound}");
    assert_eq!(
        run(&f, Some(&as_dpop), None, RESOURCE_SERVER),
        Err(Refusal::UnboundTokenAsDpop)
    );
    let bearer = format!("Bearer {unbound}");
    assert!(run(&f, Some(&bearer), None, RESOURCE_SERVER).is_ok());
    let dpop = format!("DPoP {bound}");
    assert_eq!(
        run(&f, Some(&dpop), None, RESOURCE_SERVER),
        Err(Refusal::MissingProof)
    );
}

#[test]
fn the_proof_must_be_for_this_token_by_its_key() {
    let f = fixture();
    let token_a = token(&f, &task_claims(&f, true));
    let token_b = token(
        &f,
        &AccessClaims {
            jti: aims_core::id::TokenId::new("jti-2").unwrap(),
            ..task_claims(&f, true)
        },
    );
    let auth = format!("DPoP {token_a}");
    let for_other_token = proof(&f, &f.agent, &token_b, None);
    assert!(matches!(
        run(&f, Some(&auth), Some(&for_other_token), RESOURCE_SERVER),
        Err(Refusal::Proof(_))
    ));
    let thief = AgentKey::generate(AgentKeyKind::P256, &f.rng).unwrap();
    let by_thief = proof(&f, &thief, &token_a, None);
    assert_eq!(
        run(&f, Some(&auth), Some(&by_thief), RESOURCE_SERVER),
        Err(Refusal::KeyMismatch)
    );
    // Refused proofs are not remembered: the right one still works.
    let good = proof(&f, &f.agent, &token_a, None);
    assert!(run(&f, Some(&auth), Some(&good), RESOURCE_SERVER).is_ok());
}

#[test]
fn a_nonce_is_required_where_the_rules_say() {
    let f = fixture();
    let token = token(&f, &task_claims(&f, true));
    let auth = format!("DPoP {token}");
    let without = proof(&f, &f.agent, &token, None);
    let needs_nonce = Point {
        nonces: true,
        ..RESOURCE_SERVER
    };
    assert_eq!(
        run(&f, Some(&auth), Some(&without), needs_nonce),
        Err(Refusal::UseNonce)
    );
    let other = NonceKey::random(&f.rng, "authn-test").unwrap();
    let foreign = other.mint(&f.rng, NOW + 300).unwrap();
    let with_foreign = proof(&f, &f.agent, &token, Some(&foreign));
    assert_eq!(
        run(&f, Some(&auth), Some(&with_foreign), needs_nonce),
        Err(Refusal::UseNonce)
    );
    let ours = f.nonces.mint(&f.rng, NOW + 300).unwrap();
    let with_ours = proof(&f, &f.agent, &token, Some(&ours));
    assert!(run(&f, Some(&auth), Some(&with_ours), needs_nonce).is_ok());
}

#[test]
fn revoked_and_stale_refuse_only_valid_tokens() {
    const STALE: Point = Point {
        stale: true,
        ..RESOURCE_SERVER
    };
    let mut f = fixture();
    let claims = task_claims(&f, false);
    let auth = format!("Bearer {}", token(&f, &claims));
    assert_eq!(run(&f, Some(&auth), None, STALE), Err(Refusal::Stale));
    // A token that does not verify is refused for that, stale or not.
    let forged = format!("Bearer {}x", token(&f, &claims));
    assert!(matches!(
        run(&f, Some(&forged), None, STALE),
        Err(Refusal::Token { .. })
    ));
    f.revoked.apply(
        &Notice {
            revoked: Revoked::Task("task-1".into()),
            revoked_at: NOW,
            forget_after: NOW + 600,
        },
        NOW,
    );
    assert_eq!(
        run(&f, Some(&auth), None, RESOURCE_SERVER),
        Err(Refusal::Revoked {
            scheme: Scheme::Bearer
        })
    );
}

#[test]
fn identities_are_bearer_only_and_only_where_accepted() {
    let f = fixture();
    let svid = svid(&f);
    let bearer = format!("Bearer {svid}");
    let accept_identities = ISSUER;
    assert!(matches!(
        run(&f, Some(&bearer), None, accept_identities),
        Ok(Authenticated::Identity(claims)) if claims.jti == "svid-1"
    ));
    // A resource server takes task tokens only.
    assert!(matches!(
        run(&f, Some(&bearer), None, RESOURCE_SERVER),
        Err(Refusal::Token {
            error: TokenError::Type,
            scheme: Scheme::Bearer
        })
    ));
    let as_dpop = format!("DPoP {svid}");
    assert!(matches!(
        run(&f, Some(&as_dpop), None, accept_identities),
        Err(Refusal::Token {
            scheme: Scheme::Dpop,
            ..
        })
    ));
    // An SVID for another audience is refused as an identity.
    assert_eq!(
        run(
            &f,
            Some(&bearer),
            None,
            Point {
                svid_audience: Some(AUD),
                ..ISSUER
            }
        ),
        Err(Refusal::Identity(TokenError::Audience))
    );
    // A task token that fails is refused as a task token, not as an identity.
    let expired = AccessClaims {
        exp: NOW - 100,
        ..task_claims(&f, false)
    };
    let expired = format!("Bearer {}", token(&f, &expired));
    assert_eq!(
        run(&f, Some(&expired), None, accept_identities),
        Err(Refusal::Token {
            error: TokenError::Expired,
            scheme: Scheme::Bearer
        })
    );
}

#[test]
fn codes_and_challenges_follow_rfc_9449() {
    let cases = [
        (
            Refusal::NoCredential,
            "Bearer, DPoP algs=\"ES256 EdDSA Ed25519\"",
        ),
        (
            Refusal::BoundTokenAsBearer,
            "DPoP error=\"invalid_token\", algs=\"ES256 EdDSA Ed25519\"",
        ),
        (
            Refusal::UnboundTokenAsDpop,
            "Bearer error=\"invalid_token\"",
        ),
        (
            Refusal::UseNonce,
            "DPoP error=\"use_dpop_nonce\", algs=\"ES256 EdDSA Ed25519\"",
        ),
        (
            Refusal::Replay,
            "DPoP error=\"invalid_dpop_proof\", algs=\"ES256 EdDSA Ed25519\"",
        ),
        (
            Refusal::Token {
                error: TokenError::Expired,
                scheme: Scheme::Dpop,
            },
            "DPoP error=\"invalid_token\", algs=\"ES256 EdDSA Ed25519\"",
        ),
    ];
    for (refusal, challenge) in cases {
        assert_eq!(refusal.challenge(), challenge, "{refusal:?}");
    }
    assert_eq!(Refusal::Stale.code(), "revocation_state_stale");
    assert_eq!(Refusal::NoCredential.code(), "invalid_request");
}

#[test]
fn no_refusal_shows_the_token() {
    let f = fixture();
    let token = token(&f, &task_claims(&f, true));
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let mut tampered = token.clone();
    tampered.push('A');
    for auth in [
        format!("Bearer {token}"),
        format!("DPoP {tampered}"),
        format!("DPoP {token}"),
    ] {
        let refusal = run(&f, Some(&auth), Some("not.a.proof"), RESOURCE_SERVER).unwrap_err();
        let shown = format!("{refusal} {refusal:?}");
        assert!(!shown.contains(&signature), "{shown}");
    }
    assert_eq!(
        run(&f, None, None, RESOURCE_SERVER),
        Err(Refusal::NoCredential)
    );
    assert_eq!(
        run(&f, Some("Basic dXNlcjpwYXNz"), None, RESOURCE_SERVER),
        Err(Refusal::NoCredential)
    );
    // A token too long to be one of ours is a refused token, not a missing credential.
    let long = format!("DPoP {}", "a".repeat(jws::MAX_TOKEN_LEN + 1));
    assert_eq!(
        run(&f, Some(&long), None, RESOURCE_SERVER),
        Err(Refusal::Token {
            error: TokenError::TooLarge,
            scheme: Scheme::Dpop
        })
    );
}

/// [`authenticate`] with a verified-token cache, at `now`, with `keys`.
fn run_cached(
    f: &Fixture,
    cache: &VerifiedTokens,
    keys: &HashMap<String, VerifyingKey>,
    authorization: &str,
    proof: Option<&str>,
    now: i64,
) -> Result<Authenticated, Refusal> {
    let lookup = |kid: &str| keys.get(kid);
    let rules = Rules {
        issuer: ISS,
        keys: &lookup,
        task_audience: Some(AUD),
        svid_audience: None,
        revoked: Some(&f.revoked),
        replay: &f.replay,
        verified: Some(cache),
        nonces: None,
        now,
    };
    authenticate(
        &Presented {
            authorization: Some(authorization),
            proof,
            method: "POST",
            url: URL,
        },
        &rules,
    )
}

#[test]
fn a_cached_token_is_not_verified_again_but_everything_else_is_checked() {
    let mut f = fixture();
    let cache = VerifiedTokens::new(10);
    let claims = task_claims(&f, true);
    let token = token(&f, &claims);
    let auth = format!("DPoP {token}");
    let fresh = |f: &Fixture| proof(f, &f.agent, &token, None);
    let keys = f.keys.clone();
    assert!(run_cached(&f, &cache, &keys, &auth, Some(&fresh(&f)), NOW).is_ok());
    assert_eq!((cache.len(), cache.hits()), (1, 0));
    assert!(run_cached(&f, &cache, &keys, &auth, Some(&fresh(&f)), NOW).is_ok());
    assert_eq!(cache.hits(), 1);
    // The proof is still checked on a hit: none, or a replayed one, is refused.
    let used = fresh(&f);
    assert!(run_cached(&f, &cache, &keys, &auth, Some(&used), NOW).is_ok());
    assert_eq!(
        run_cached(&f, &cache, &keys, &auth, Some(&used), NOW),
        Err(Refusal::Replay)
    );
    assert_eq!(
        run_cached(&f, &cache, &keys, &auth, None, NOW),
        Err(Refusal::MissingProof)
    );
    // A key no longer trusted: the hit is not taken, and the token does not verify.
    let hits = cache.hits();
    assert!(matches!(
        run_cached(&f, &cache, &HashMap::new(), &auth, Some(&fresh(&f)), NOW),
        Err(Refusal::Token {
            error: TokenError::UnknownKey,
            ..
        })
    ));
    assert_eq!(cache.hits(), hits);
    // Expired: no hit either.
    let late = claims.exp + LEEWAY_S + 1;
    assert!(matches!(
        run_cached(&f, &cache, &keys, &auth, Some(&fresh(&f)), late),
        Err(Refusal::Token {
            error: TokenError::Expired,
            ..
        })
    ));
    // Revoked after it was cached: refused at once.
    f.revoked.apply(
        &Notice {
            revoked: Revoked::Task("task-1".into()),
            revoked_at: NOW,
            forget_after: NOW + 600,
        },
        NOW,
    );
    assert_eq!(
        run_cached(&f, &cache, &keys, &auth, Some(&fresh(&f)), NOW),
        Err(Refusal::Revoked {
            scheme: Scheme::Dpop
        })
    );
}

#[test]
fn a_full_cache_verifies_instead_of_growing() {
    let f = fixture();
    let cache = VerifiedTokens::new(1);
    let keys = f.keys.clone();
    let mut other = task_claims(&f, false);
    other.jti = aims_core::id::TokenId::new("jti-2").unwrap();
    for claims in [task_claims(&f, false), other] {
        let auth = format!("Bearer {}", token(&f, &claims));
        assert!(run_cached(&f, &cache, &keys, &auth, None, NOW).is_ok());
        assert!(run_cached(&f, &cache, &keys, &auth, None, NOW).is_ok());
    }
    // The first token filled it; the second was verified twice, never cached.
    assert_eq!((cache.len(), cache.hits()), (1, 1));
    // Once the first has expired, room is made for another.
    let mut later = task_claims(&f, false);
    later.jti = aims_core::id::TokenId::new("jti-3").unwrap();
    later.iat = NOW + 400;
    later.exp = NOW + 700;
    let auth = format!("Bearer {}", token(&f, &later));
    let now = NOW + 400;
    assert!(run_cached(&f, &cache, &keys, &auth, None, now).is_ok());
    assert!(run_cached(&f, &cache, &keys, &auth, None, now).is_ok());
    assert_eq!((cache.len(), cache.hits()), (1, 2));
}

#[test]
fn an_svid_presented_to_the_issuer_is_verified_once() {
    let f = fixture();
    let cache = VerifiedTokens::new(10);
    let identity = svid(&f);
    let check = |now| SvidCheck {
        issuer: ISS,
        audience: Some(ISS),
        now,
        leeway_s: LEEWAY_S,
    };
    let verify = |keys: &HashMap<String, VerifyingKey>, now| {
        let lookup = |kid: &str| keys.get(kid);
        cache.identity(&identity, &check(now), key_resolver(&lookup), &|kid| {
            lookup(kid).is_some()
        })
    };
    let claims = verify(&f.keys, NOW).unwrap();
    assert_eq!(claims.jti.as_str(), "svid-1");
    assert_eq!((cache.len(), cache.hits()), (1, 0));
    assert_eq!(verify(&f.keys, NOW).unwrap(), claims);
    assert_eq!(cache.hits(), 1);
    // A key no longer trusted, or an expired SVID: no hit, and it does not verify.
    assert_eq!(verify(&HashMap::new(), NOW), Err(TokenError::UnknownKey));
    assert_eq!(
        verify(&f.keys, claims.exp + LEEWAY_S + 1),
        Err(TokenError::Expired)
    );
    assert_eq!(cache.hits(), 1);
    // A task token is never taken for an identity.
    let task = token(&f, &task_claims(&f, false));
    let lookup = |kid: &str| f.keys.get(kid);
    let access_check = AccessCheck {
        issuer: ISS,
        audience: Some(AUD),
        now: NOW,
        leeway_s: LEEWAY_S,
    };
    cache
        .access(&task, &access_check, key_resolver(&lookup), &|_| true)
        .unwrap();
    assert_eq!(
        cache.identity(&task, &check(NOW), key_resolver(&lookup), &|_| true),
        Err(TokenError::Type)
    );
}
