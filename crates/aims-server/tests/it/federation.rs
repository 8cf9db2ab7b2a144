//! Federated attestation against issuers the test itself runs on loopback: a Kubernetes-like
//! issuer (ES256, no `typ`, subject pattern) and a CI-like issuer (RS256, exact subject,
//! required claims), and every way such a token must be refused.

use std::collections::HashMap;
use std::sync::Arc;

use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use aims_token::signing::SigningKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, TestServer, open_store};

const RSA_FIXTURE: &[u8] = include_bytes!("../../../aims-token/tests/fixtures/rsa2048.pk8.der");

/// The two test issuers' keys and their loopback JWKS endpoints.
struct Issuers {
    k8s_key: SigningKey,
    ci_key: RsaKeyPair,
    k8s_jwks: String,
    ci_jwks: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn serve_jwks(jwks: Value) -> String {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    format!("{}/jwks", crate::kit::serve_on_loopback(app).await)
}

async fn issuers() -> Issuers {
    let rng = SystemRandom::new();
    let k8s_key = SigningKey::generate(&rng).unwrap().key;
    let mut k8s_jwk = serde_json::to_value(k8s_key.public_jwk()).unwrap();
    k8s_jwk["use"] = json!("sig");
    let ci_key = RsaKeyPair::from_pkcs8(RSA_FIXTURE).unwrap();
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = ci_key.public().into();
    let ci_jwk = json!({
        "kty": "RSA", "kid": "ci-1", "use": "sig", "alg": "RS256",
        "n": b64(public.n.strip_prefix(&[0u8]).unwrap_or(&public.n)),
        "e": b64(&public.e),
    });
    Issuers {
        k8s_jwks: serve_jwks(
            json!({"keys": [k8s_jwk, {"kty": "oct", "kid": "skip-me", "k": "AAAA"}]}),
        )
        .await,
        ci_jwks: serve_jwks(json!({"keys": [ci_jwk]})).await,
        k8s_key,
        ci_key,
    }
}

impl Issuers {
    /// A Kubernetes-style token: ES256, `kid`, no `typ`.
    fn k8s_token(&self, claims: Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.k8s_key.kid()});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self
            .k8s_key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(&signature))
    }

    /// A CI-OIDC-style token: RS256, `typ: JWT`.
    fn ci_token(&self, claims: Value) -> String {
        let header = json!({"alg": "RS256", "kid": "ci-1", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.ci_key.public().modulus_len()];
        self.ci_key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{input}.{}", b64(&signature))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn k8s_claims(sub: &str) -> Value {
    json!({"iss": "https://k8s.test", "sub": sub, "aud": "aims", "iat": now(), "exp": now() + 300})
}

fn ci_claims(sub: &str, owner: &str) -> Value {
    json!({"iss": "https://ci.test", "sub": sub, "aud": "aims-ci", "iat": now(), "exp": now() + 300, "repository_owner": owner})
}

async fn server_trusting(issuers: &Issuers) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = dir.path().join("aims.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[[trusted_issuers]]
issuer = "https://k8s.test"
jwks_uri = "{}"
audience = "aims"
subject = "system:serviceaccount:agents:{{agent}}"

[[trusted_issuers]]
issuer = "https://ci.test"
jwks_uri = "{}"
audience = "aims-ci"
subject = "repo:acme/deploy:ref:refs/heads/main"
agent = "ci-deployer"
required_claims = {{ repository_owner = "acme" }}
"#,
            issuers.k8s_jwks, issuers.ci_jwks
        ),
    )
    .unwrap();
    let store = open_store(Backend::Sqlite, &dir).await;
    let env = HashMap::from([
        ("AIMS_BOOTSTRAP_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        (
            "AIMS_CONFIG".to_owned(),
            config.to_str().unwrap().to_owned(),
        ),
    ]);
    let server = TestServer::start_on(Backend::Sqlite, dir, store, env)
        .await
        .unwrap();
    for name in ["coder", "ci-deployer"] {
        server.register(name, "platform@acme.example").await;
    }
    server
}

async fn attest(server: &TestServer, token: String) -> Result<aims_api::AttestResponse, String> {
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    Attestor::new(AdminClient::new(&server.base, None).unwrap(), key)
        .attest(&Default::default(), &Credential::Federated(token), None)
        .await
        .map_err(|e| match e {
            aims_sdk::SdkError::Api { code, .. } => code,
            other => other.to_string(),
        })
}

#[tokio::test]
async fn tokens_of_trusted_issuers_prove_identity() {
    let issuers = issuers().await;
    let server = server_trusting(&issuers).await;
    let k8s = attest(
        &server,
        issuers.k8s_token(k8s_claims("system:serviceaccount:agents:coder")),
    )
    .await
    .unwrap();
    assert_eq!(k8s.spiffe_id, "spiffe://test.example/agent/coder");
    let ci = attest(
        &server,
        issuers.ci_token(ci_claims("repo:acme/deploy:ref:refs/heads/main", "acme")),
    )
    .await
    .unwrap();
    assert_eq!(ci.spiffe_id, "spiffe://test.example/agent/ci-deployer");
    let proofs: Vec<_> = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.action == "identity.issue")
        .map(|e| e.details["proof"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(proofs, ["federated", "federated"]);
}

#[tokio::test]
async fn bad_federated_tokens_are_refused_and_issue_nothing() {
    let issuers = issuers().await;
    let server = server_trusting(&issuers).await;
    let mut expired = k8s_claims("system:serviceaccount:agents:coder");
    expired["exp"] = json!(now() - 600);
    expired["iat"] = json!(now() - 900);
    let mut wrong_aud = k8s_claims("system:serviceaccount:agents:coder");
    wrong_aud["aud"] = json!("someone-else");
    let mut untrusted = k8s_claims("system:serviceaccount:agents:coder");
    untrusted["iss"] = json!("https://evil.test");
    let good = issuers.k8s_token(k8s_claims("system:serviceaccount:agents:coder"));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = b64(k8s_claims("system:serviceaccount:agents:ci-deployer")
        .to_string()
        .as_bytes());
    let resigned_payload = parts.join(".");

    let cases = [
        (issuers.k8s_token(untrusted), "untrusted_issuer"),
        (issuers.k8s_token(expired), "invalid_federated_token"),
        (issuers.k8s_token(wrong_aud), "invalid_federated_token"),
        (resigned_payload, "invalid_federated_token"),
        (
            issuers.k8s_token(k8s_claims("system:serviceaccount:other:coder")),
            "invalid_federated_token",
        ),
        (
            issuers.k8s_token(k8s_claims("system:serviceaccount:agents:ghost")),
            "unknown_agent",
        ),
        (
            issuers.ci_token(ci_claims(
                "repo:acme/deploy:ref:refs/heads/main",
                "evil-corp",
            )),
            "invalid_federated_token",
        ),
        (
            issuers.ci_token(ci_claims("repo:acme/deploy:ref:refs/heads/dev", "acme")),
            "invalid_federated_token",
        ),
        ("not.a.token".to_owned(), "untrusted_issuer"),
    ];
    for (token, code) in cases {
        assert_eq!(attest(&server, token).await.err().as_deref(), Some(code));
    }
    assert_eq!(server.count_events("identity.issue").await, 0);
    let reply = server.admin(Method::GET, "/v1/agents/coder", None).await;
    assert_eq!(reply.body["state"], "active", "refusals do not quarantine");
}
