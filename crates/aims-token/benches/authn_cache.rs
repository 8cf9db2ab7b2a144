//! What the verified-token cache saves an enforcement point: `authn::authenticate` on a
//! DPoP-bound task token with a fresh proof per request, without the cache (the token's
//! signature and claims verified every time) and with it (verified once), interleaved over
//! rounds in one run. The proofs are signed before the clock starts; both sides verify every
//! proof and burn it in the replay cache, and check the revoked set.
//!
//! Run: `cargo bench -p aims-token --bench authn_cache`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::collections::HashMap;
use std::time::Instant;

use aims_core::id::{Intent, TaskId, TokenId};
use aims_core::revocation::RevokedSet;
use aims_token::access::{self, AccessClaims, Confirmation};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use aims_token::authn::{self, Presented, Rules};
use aims_token::dpop::{self, ReplayCache};
use aims_token::jws::VerifyingKey;
use aims_token::signing::SigningKey;
use aims_token::verified::VerifiedTokens;
use ring::rand::SystemRandom;

const ISS: &str = "https://aims.bench.example";
const AUD: &str = "https://tools.bench.example";
const URL: &str = "https://tools.bench.example/repos/app";
const ROUNDS: usize = 7;
const PER_ROUND: usize = 2_000;

fn main() {
    let rng = SystemRandom::new();
    let signer = SigningKey::generate(&rng).unwrap().key;
    let jwk = serde_json::to_value(signer.public_jwk()).unwrap();
    let (key, _) = VerifyingKey::from_jwk(&jwk).unwrap();
    let keys = HashMap::from([(signer.kid().to_owned(), key)]);
    let agent = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let claims = AccessClaims {
        iss: ISS.into(),
        sub: "spiffe://bench.example/agent/coder".into(),
        aud: AUD.into(),
        client_id: "spiffe://bench.example/agent/coder".into(),
        scope: "read:repo/acme/*".into(),
        jti: TokenId::new("bench-token").unwrap(),
        iat: now,
        exp: now + 3_600,
        task_id: TaskId::new("bench-task").unwrap(),
        intent: Intent::new("measure").unwrap(),
        cnf: Some(Confirmation {
            jkt: agent.thumbprint(),
        }),
        act: None,
    };
    let token = access::mint(&signer, &rng, &claims).unwrap();
    let authorization = format!("DPoP {token}");
    let revoked = RevokedSet::default();
    let replay = ReplayCache::new(ROUNDS * PER_ROUND * 2 + 10);
    let cache = VerifiedTokens::new(aims_token::verified::DEFAULT_CAPACITY);
    let lookup = |kid: &str| keys.get(kid);

    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..ROUNDS {
        for cached in [false, true] {
            let proofs: Vec<String> = (0..PER_ROUND)
                .map(|_| dpop::sign_proof(&agent, &rng, "GET", URL, Some(&token), now).unwrap())
                .collect();
            let rules = Rules {
                issuer: ISS,
                keys: &lookup,
                task_audience: Some(AUD),
                svid_audience: None,
                revoked: Some(&revoked),
                replay: &replay,
                verified: cached.then_some(&cache),
                nonces: None,
                now,
            };
            let started = Instant::now();
            for proof in &proofs {
                let presented = Presented {
                    authorization: Some(&authorization),
                    proof: Some(proof),
                    method: "GET",
                    url: URL,
                };
                authn::authenticate(&presented, &rules).expect("accepted");
            }
            let per = started.elapsed().as_secs_f64() * 1e6 / PER_ROUND as f64;
            if cached {
                with.push(per)
            } else {
                without.push(per)
            }
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (without, with) = (median(&mut without), median(&mut with));
    println!("| authenticate, µs per request | without cache | with cache | with ÷ without |");
    println!("|---|---:|---:|---:|");
    println!(
        "| DPoP-bound task token, fresh ES256 proof | {without:.1} | {with:.1} | {:.2} |",
        with / without
    );
    println!(
        "(median of {ROUNDS} interleaved rounds of {PER_ROUND} requests; cache hits: {})",
        cache.hits()
    );
}
