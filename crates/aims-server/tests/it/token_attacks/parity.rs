//! One table of attacks on a presented task token, run against both enforcement points that
//! call the one authentication core (`aims_token::authn`): the server's `/v1/decisions` and
//! the SDK's `VerifierState` (what a tool server's `Verifier` checks every request with).
//!
//! Each row forges what a request presents (its `Authorization` and `DPoP` headers) from the
//! planner's genuine DPoP-bound task token. Both points must refuse every row; both accept the
//! genuine token with a fresh proof first, so the table cannot pass by refusing everything.
//! (A token for another audience is not in the table: the server decides for every resource
//! server, so it accepts any audience it issued; the SDK's audience check has its own tests.)

use aims_sdk::verifier::VerifierState;
use aims_token::agent_key::{AgentKey, AgentKeyKind};

use super::*;
use crate::on_both_stores;
use crate::task_tokens::repository;

on_both_stores!(the_server_and_the_sdk_verifier_refuse_the_same_attacks);

/// Where the SDK verifier sits: a tool of the resource server the token is for.
const TOOL_URL: &str = "https://tools.acme.example/repo/call";

/// One request to one enforcement point.
struct Target {
    method: &'static str,
    url: String,
    /// The enforcement point's DPoP nonce, when it hands them out.
    nonce: Option<String>,
}

/// What a request presents.
struct Presented {
    authorization: String,
    proof: Option<String>,
}

/// The genuine material the forgeries start from.
struct Material {
    /// The planner's DPoP-bound task token.
    token: String,
    /// The key it is bound to.
    key: Arc<AgentKey>,
    /// Another agent's key.
    other: AgentKey,
    /// The server's own signing key (an insider's forgeries verify).
    server: ServerKey,
    /// A key the server has never seen.
    attacker: SigningKey,
    rng: SystemRandom,
}

impl Material {
    /// A proof by `key` for `target`, bound to `token`, issued at `iat`.
    fn proof_by(&self, key: &AgentKey, target: &Target, token: &str, iat: i64) -> String {
        dpop::sign_proof_with_nonce(
            key,
            &self.rng,
            target.method,
            &target.url,
            Some(token),
            target.nonce.as_deref(),
            iat,
        )
        .unwrap()
    }

    /// `token` presented with the DPoP scheme and a valid proof of the planner's key for it.
    fn bound(&self, token: String, target: &Target) -> Presented {
        let proof = self.proof_by(&self.key, target, &token, now());
        Presented {
            authorization: format!("DPoP {token}"),
            proof: Some(proof),
        }
    }

    /// The genuine token with its claims edited, re-signed with the server's key.
    fn reclaimed(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        self.server.reclaim(&self.token, edit)
    }

    /// The genuine token with its header edited, re-signed with the server's key.
    fn reheadered(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        self.server.resign(&self.token, |header, _| edit(header))
    }

    /// The genuine claims under `header`, signed by the attacker's key.
    fn by_attacker(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut header = segment(&self.token, 0);
        edit(&mut header);
        let claims = text(&segment(&self.token, 1));
        compact(text(&header).as_bytes(), claims.as_bytes(), |input| {
            self.attacker.sign(&self.rng, input).unwrap()
        })
    }

    /// The genuine header and claims with `signature`.
    fn with_signature(&self, signature: &[u8]) -> String {
        let (input, _) = self.token.rsplit_once('.').unwrap();
        format!("{input}.{}", b64(signature))
    }
}

type Forge = fn(&Material, &Target) -> Presented;

/// The attack classes: forged JOSE headers and signatures, claims signed by the server's own
/// key but wrong, malformed serializations, and every way to misuse the DPoP binding.
const ATTACKS: &[(&str, Forge)] = &[
    ("alg none", |m, t| {
        let token = reheader(
            &m.token,
            |h| drop(h.insert("alg".into(), json!("none"))),
            b"",
        );
        m.bound(token, t)
    }),
    ("alg nOnE", |m, t| {
        let token = reheader(
            &m.token,
            |h| drop(h.insert("alg".into(), json!("nOnE"))),
            b"",
        );
        m.bound(token, t)
    }),
    ("HS256 keyed with our public JWK", |m, t| {
        let mut header = segment(&m.token, 0);
        header.insert("alg".into(), json!("HS256"));
        let secret = serde_json::to_vec(m.server.key.public_jwk()).unwrap();
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let claims = text(&segment(&m.token, 1));
        let token = compact(text(&header).as_bytes(), claims.as_bytes(), |input| {
            hmac::sign(&hmac_key, input).as_ref().to_vec()
        });
        m.bound(token, t)
    }),
    ("signature stripped", |m, t| {
        m.bound(m.with_signature(b""), t)
    }),
    ("all-zero ECDSA signature", |m, t| {
        m.bound(m.with_signature(&[0u8; 64]), t)
    }),
    ("signature bit flipped", |m, t| {
        let (_, signature) = m.token.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        signature[10] ^= 1;
        m.bound(m.with_signature(&signature), t)
    }),
    ("claims edited, signature kept", |m, t| {
        let mut claims = segment(&m.token, 1);
        claims.insert("scope".into(), json!("admin:*"));
        let mut parts = m.token.split('.');
        let header = parts.next().unwrap();
        let signature = parts.nth(1).unwrap();
        let token = format!("{header}.{}.{signature}", b64(text(&claims).as_bytes()));
        m.bound(token, t)
    }),
    ("an unknown key and kid", |m, t| {
        let kid = m.attacker.kid().to_owned();
        m.bound(
            m.by_attacker(|h| drop(h.insert("kid".into(), json!(kid)))),
            t,
        )
    }),
    ("an unknown key under our kid", |m, t| {
        m.bound(m.by_attacker(|_| {}), t)
    }),
    ("an embedded jwk", |m, t| {
        let jwk = serde_json::to_value(m.attacker.public_jwk()).unwrap();
        m.bound(m.by_attacker(|h| drop(h.insert("jwk".into(), jwk))), t)
    }),
    ("a jku to fetch keys from", |m, t| {
        let token = m.by_attacker(|h| {
            h.insert("jku".into(), json!("http://127.0.0.1:9/jwks.json"));
            h.insert("kid".into(), json!("fetched"));
        });
        m.bound(token, t)
    }),
    ("no kid", |m, t| {
        m.bound(m.reheadered(|h| drop(h.remove("kid"))), t)
    }),
    ("an unknown crit", |m, t| {
        let token = m.reheadered(|h| {
            h.insert("crit".into(), json!(["urn:example:must-understand"]));
            h.insert("urn:example:must-understand".into(), json!(true));
        });
        m.bound(token, t)
    }),
    ("typ of another kind", |m, t| {
        m.bound(
            m.reheadered(|h| drop(h.insert("typ".into(), json!("JWT")))),
            t,
        )
    }),
    ("another issuer", |m, t| {
        let token = m.reclaimed(|c| drop(c.insert("iss".into(), json!("https://evil.example"))));
        m.bound(token, t)
    }),
    ("no sub", |m, t| {
        m.bound(m.reclaimed(|c| drop(c.remove("sub"))), t)
    }),
    ("audience as an array", |m, t| {
        let token = m.reclaimed(|c| drop(c.insert("aud".into(), json!([AUDIENCE]))));
        m.bound(token, t)
    }),
    ("expired", |m, t| {
        let token = m.reclaimed(|c| {
            c.insert("iat".into(), json!(now() - 7200));
            c.insert("exp".into(), json!(now() - 3600));
        });
        m.bound(token, t)
    }),
    ("no exp", |m, t| {
        m.bound(m.reclaimed(|c| drop(c.remove("exp"))), t)
    }),
    ("exp as a string", |m, t| {
        let token = m.reclaimed(|c| drop(c.insert("exp".into(), json!((now() + 600).to_string()))));
        m.bound(token, t)
    }),
    ("nbf in the future", |m, t| {
        let token = m.reclaimed(|c| drop(c.insert("nbf".into(), json!(now() + 3600))));
        m.bound(token, t)
    }),
    ("iat in the future", |m, t| {
        let token = m.reclaimed(|c| drop(c.insert("iat".into(), json!(now() + 3600))));
        m.bound(token, t)
    }),
    ("a duplicate aud member", |m, t| {
        let header = text(&segment(&m.token, 0));
        let claims = append_raw(
            &text(&segment(&m.token, 1)),
            r#""aud":"https://other.example/api""#,
        );
        m.bound(m.server.raw(header.as_bytes(), claims.as_bytes()), t)
    }),
    ("deeply nested claims", |m, t| {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let header = text(&segment(&m.token, 0));
        let claims = append_raw(&text(&segment(&m.token, 1)), &format!(r#""deep":{deep}"#));
        m.bound(m.server.raw(header.as_bytes(), claims.as_bytes()), t)
    }),
    ("oversized", |m, t| {
        let pad = "a".repeat(aims_token::jws::MAX_TOKEN_LEN);
        m.bound(m.reclaimed(|c| drop(c.insert("pad".into(), json!(pad)))), t)
    }),
    ("four segments", |m, t| {
        m.bound(format!("{}.e30", m.token), t)
    }),
    ("a bound token as a bearer token", |m, _| Presented {
        authorization: format!("Bearer {}", m.token),
        proof: None,
    }),
    ("a bound token without its proof", |m, _| Presented {
        authorization: format!("DPoP {}", m.token),
        proof: None,
    }),
    ("a proof by another key", |m, t| Presented {
        authorization: format!("DPoP {}", m.token),
        proof: Some(m.proof_by(&m.other, t, &m.token, now())),
    }),
    ("a proof for another token", |m, t| {
        let other = m.reclaimed(|_| {});
        Presented {
            authorization: format!("DPoP {}", m.token),
            proof: Some(m.proof_by(&m.key, t, &other, now())),
        }
    }),
    ("a proof for another method", |m, t| {
        let get = Target {
            method: "GET",
            url: t.url.clone(),
            nonce: t.nonce.clone(),
        };
        Presented {
            authorization: format!("DPoP {}", m.token),
            proof: Some(m.proof_by(&m.key, &get, &m.token, now())),
        }
    }),
    ("a proof for another URL", |m, t| {
        let elsewhere = Target {
            method: t.method,
            url: format!("{}/elsewhere", t.url),
            nonce: t.nonce.clone(),
        };
        Presented {
            authorization: format!("DPoP {}", m.token),
            proof: Some(m.proof_by(&m.key, &elsewhere, &m.token, now())),
        }
    }),
    ("a stale proof", |m, t| Presented {
        authorization: format!("DPoP {}", m.token),
        proof: Some(m.proof_by(&m.key, t, &m.token, now() - 3600)),
    }),
    ("a proof from the future", |m, t| Presented {
        authorization: format!("DPoP {}", m.token),
        proof: Some(m.proof_by(&m.key, t, &m.token, now() + 3600)),
    }),
];

/// Asks `/v1/decisions` with what `presented` holds.
async fn at_server(scene: &Scene, presented: &Presented) -> Reply {
    let mut request = scene
        .server
        .http
        .post(scene.url("/v1/decisions"))
        .header("Authorization", &presented.authorization)
        .json(&json!({"action": "read", "resource": repository("repo/acme/app")}));
    if let Some(proof) = &presented.proof {
        request = request.header("DPoP", proof);
    }
    let reply = scene.server.send(request).await;
    scene.remember_nonce(&reply);
    reply
}

/// Checks what `presented` holds with the SDK verifier.
fn at_sdk(sdk: &VerifierState, presented: &Presented) -> Result<(), aims_sdk::VerifyError> {
    sdk.check(
        &presented.authorization,
        presented.proof.as_deref(),
        "POST",
        TOOL_URL,
        now(),
    )
    .map(drop)
}

async fn the_server_and_the_sdk_verifier_refuse_the_same_attacks(backend: Backend) {
    let lab = Lab::start(backend).await;
    let scene = &lab.scene;
    let jwks: Value = serde_json::from_slice(&lab.jwks_document().await).unwrap();
    let mut sdk = VerifierState::new(lab.issuer(), AUDIENCE, Duration::from_secs(60));
    sdk.set_jwks(&jwks).unwrap();
    sdk.mark_synced(now());
    let material = Material {
        token: lab.access.clone(),
        key: scene.planner.key.clone(),
        other: AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap(),
        server: ServerKey::load(&scene.server).await,
        attacker: attacker_key(),
        rng: SystemRandom::new(),
    };
    let server_target = || Target {
        method: "POST",
        url: scene.url("/v1/decisions"),
        nonce: scene.nonce(),
    };
    let sdk_target = Target {
        method: "POST",
        url: TOOL_URL.to_owned(),
        nonce: None,
    };

    // Controls: the genuine token with a fresh proof passes both, and the replay of that
    // proof is refused by both.
    let genuine = material.bound(material.token.clone(), &server_target());
    let reply = at_server(scene, &genuine).await;
    assert_eq!(reply.status, StatusCode::OK, "control: {}", reply.body);
    let replayed = at_server(scene, &genuine).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "replay: {}",
        replayed.body
    );
    assert_eq!(replayed.code(), "invalid_dpop_proof");
    let genuine = material.bound(material.token.clone(), &sdk_target);
    at_sdk(&sdk, &genuine).expect("control: the SDK accepts the genuine token");
    let replay = at_sdk(&sdk, &genuine).unwrap_err();
    assert_eq!(replay.error_code(), Some("invalid_dpop_proof"), "{replay}");

    assert!(
        ATTACKS.len() >= 26,
        "the table names {} attacks",
        ATTACKS.len()
    );
    for (case, forge) in ATTACKS {
        let reply = at_server(scene, &forge(&material, &server_target())).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: the server accepted or misanswered: {}",
            reply.body
        );
        let refused = at_sdk(&sdk, &forge(&material, &sdk_target))
            .err()
            .unwrap_or_else(|| panic!("{case}: the SDK verifier accepted it"));
        assert!(
            matches!(refused.status(), 400 | 401),
            "{case}: the SDK answered {} ({refused})",
            refused.status()
        );
        // The same refusal, except where the server, which also takes a bearer SVID, calls an
        // unusable credential an invalid identity and the SDK an invalid request.
        if reply.code() != "invalid_svid" {
            assert_eq!(Some(reply.code()), refused.error_code(), "{case}");
        }
        eprintln!(
            "{case:40} | server 401 {:18} | sdk {} {}",
            reply.code(),
            refused.status(),
            refused.error_code().unwrap_or("-")
        );
    }
}
