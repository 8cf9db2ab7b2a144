//! Federated attestation: a token from a trusted third-party issuer (a Kubernetes
//! service-account token, a CI system's OIDC token) as an agent's proof of identity.
//!
//! Each trusted issuer is configured with its `issuer`, `jwks_uri`, the `audience` its tokens
//! must name, a `subject` rule and optional `required_claims`. The subject rule is either an
//! exact subject plus a fixed `agent`, or a pattern with one `{agent}` placeholder (e.g.
//! `system:serviceaccount:agents:{agent}`). Keys are fetched from `jwks_uri` (bounded size and
//! time), cached, and re-fetched at most every [`REFETCH_AFTER`] when a token names an unknown
//! `kid`. Only RS256 and ES256 are accepted. The token's `iss` is read before verification only
//! to pick which issuer's keys to verify with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_core::id::AgentName;
use aims_token::TokenError;
use aims_token::jws::{self, Alg, ClaimChecks, VerifyingKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// How long fetched keys are used before they are fetched again.
const CACHE_FOR: Duration = Duration::from_secs(300);
/// Least time between two fetches triggered by an unknown `kid`.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The placeholder in a subject pattern.
const AGENT_PLACEHOLDER: &str = "{agent}";

/// One trusted issuer as written in the config file (`[[trusted_issuers]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedIssuer {
    /// Exact `iss` of its tokens.
    pub issuer: String,
    /// Where its signing keys are published.
    pub jwks_uri: String,
    /// The `aud` its tokens must carry for AIMS.
    pub audience: String,
    /// Exact subject, or a pattern with one `{agent}` placeholder.
    pub subject: String,
    /// The agent an exact subject maps to.
    #[serde(default)]
    pub agent: Option<String>,
    /// Claims that must be present with exactly these string values.
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
}

/// How a token's subject names the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SubjectRule {
    /// This exact subject is this agent.
    Exact { subject: String, agent: AgentName },
    /// `prefix{agent}suffix`.
    Pattern { prefix: String, suffix: String },
}

/// A validated trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    issuer: String,
    jwks_uri: String,
    audience: String,
    subject: SubjectRule,
    required_claims: BTreeMap<String, String>,
}

impl TrustedIssuer {
    /// Validates one configured issuer; the error names what is wrong.
    pub fn try_from_raw(raw: RawTrustedIssuer) -> Result<Self, String> {
        let name = &raw.issuer;
        if raw.issuer.is_empty() || raw.audience.is_empty() {
            return Err(format!(
                "trusted issuer {name:?}: issuer and audience are required"
            ));
        }
        if !(raw.jwks_uri.starts_with("https://") || raw.jwks_uri.starts_with("http://")) {
            return Err(format!("trusted issuer {name:?}: jwks_uri must be http(s)"));
        }
        let subject = match (raw.subject.split_once(AGENT_PLACEHOLDER), raw.agent) {
            (Some((prefix, suffix)), None) if !suffix.contains(AGENT_PLACEHOLDER) => {
                SubjectRule::Pattern {
                    prefix: prefix.to_owned(),
                    suffix: suffix.to_owned(),
                }
            }
            (None, Some(agent)) if !raw.subject.is_empty() => SubjectRule::Exact {
                subject: raw.subject,
                agent: AgentName::new(agent)
                    .map_err(|e| format!("trusted issuer {name:?}: agent: {e}"))?,
            },
            _ => {
                return Err(format!(
                    "trusted issuer {name:?}: give either a subject with one {AGENT_PLACEHOLDER} or an exact subject and an agent"
                ));
            }
        };
        Ok(Self {
            issuer: raw.issuer,
            jwks_uri: raw.jwks_uri,
            audience: raw.audience,
            subject,
            required_claims: raw.required_claims,
        })
    }

    /// The agent a token with subject `sub` stands for, if any.
    fn agent_for(&self, sub: &str) -> Option<AgentName> {
        match &self.subject {
            SubjectRule::Exact { subject, agent } => (subject == sub).then(|| agent.clone()),
            SubjectRule::Pattern { prefix, suffix } => sub
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .and_then(|name| AgentName::new(name).ok()),
        }
    }
}

/// Why a federated token was refused (the code goes to the caller, the detail to the log).
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// No configured issuer has the token's `iss`.
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    /// The issuer's keys could not be fetched.
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// Signature, type, time or audience checks failed.
    #[error("the token was refused: {0}")]
    Token(#[from] TokenError),
    /// The token's subject or claims do not map to an agent under the configured rules.
    #[error("the token does not name an agent this issuer may attest: {0}")]
    Mapping(&'static str),
}

struct CachedKeys {
    fetched: Instant,
    keys: HashMap<String, VerifyingKey>,
}

struct Issuer {
    config: TrustedIssuer,
    cache: Mutex<Option<CachedKeys>>,
}

/// Every trusted issuer with its key cache.
#[derive(Clone, Default)]
pub struct Federation {
    issuers: Arc<Vec<Issuer>>,
}

impl Federation {
    /// The federation of `issuers` (none: federated attestation is refused).
    pub fn new(issuers: Vec<TrustedIssuer>) -> Self {
        Self {
            issuers: Arc::new(
                issuers
                    .into_iter()
                    .map(|config| Issuer {
                        config,
                        cache: Mutex::new(None),
                    })
                    .collect(),
            ),
        }
    }

    /// Verifies `token` against its issuer's keys and rules; returns the agent it names.
    pub async fn verify(
        &self,
        http: &reqwest::Client,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<AgentName, FederationError> {
        let iss = unverified_issuer(token).ok_or(FederationError::UntrustedIssuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(FederationError::UntrustedIssuer)?;
        let mut keys = issuer.keys(http, false).await?;
        let kid = header_kid(token);
        if kid.as_ref().is_some_and(|kid| !keys.contains_key(kid)) {
            keys = issuer.keys(http, true).await?;
        }
        let verified = jws::verify_third_party(token, &[Alg::Rs256, Alg::Es256], |header| {
            header
                .kid
                .as_deref()
                .and_then(|kid| keys.get(kid))
                .ok_or(TokenError::UnknownKey)
        })?;
        let config = &issuer.config;
        jws::check_claims(
            &verified.claims,
            &ClaimChecks {
                issuer: Some(&config.issuer),
                audience: &config.audience,
                now: now.unix_timestamp(),
                leeway_s: aims_token::LEEWAY_S,
                max_lifetime_s: None,
            },
        )?;
        for (name, expected) in &config.required_claims {
            if verified.claims.get(name).and_then(Value::as_str) != Some(expected.as_str()) {
                return Err(FederationError::Mapping(
                    "a required claim is missing or differs",
                ));
            }
        }
        let sub = verified
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(FederationError::Mapping("the token has no subject"))?;
        config
            .agent_for(sub)
            .ok_or(FederationError::Mapping("the subject maps to no agent"))
    }
}

impl Issuer {
    /// The cached keys, fetched when stale, or when `refresh` and the last fetch is old enough.
    async fn keys(
        &self,
        http: &reqwest::Client,
        refresh: bool,
    ) -> Result<HashMap<String, VerifyingKey>, FederationError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.as_ref().is_some_and(|c| {
            let age = c.fetched.elapsed();
            age < CACHE_FOR && !(refresh && age >= REFETCH_AFTER)
        });
        if !fresh {
            let keys = fetch_jwks(http, &self.config.jwks_uri).await?;
            *cache = Some(CachedKeys {
                fetched: Instant::now(),
                keys,
            });
        }
        Ok(cache.as_ref().map(|c| c.keys.clone()).unwrap_or_default())
    }
}

async fn fetch_jwks(
    http: &reqwest::Client,
    uri: &str,
) -> Result<HashMap<String, VerifyingKey>, FederationError> {
    let unavailable = |why: String| FederationError::KeysUnavailable(why);
    let mut response = http
        .get(uri)
        .send()
        .await
        .map_err(|e| unavailable(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("HTTP {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unavailable(e.without_url().to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable("the JWKS is too large".to_owned()));
        }
    }
    let document: Value = serde_json::from_slice(&body)
        .map_err(|_| unavailable("the JWKS is not JSON".to_owned()))?;
    // Keys AIMS cannot use (encryption keys, other types) are skipped, not fatal.
    Ok(document
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|jwk| match VerifyingKey::from_jwk(jwk) {
            Ok((key, Some(kid))) => Some((kid, key)),
            _ => None,
        })
        .collect())
}

/// The `iss` claim, read without verification, only to choose the issuer to verify with.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// The `kid` header, read without verification, to decide whether to re-fetch keys.
fn header_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(subject: &str, agent: Option<&str>) -> RawTrustedIssuer {
        RawTrustedIssuer {
            issuer: "https://ci.example".into(),
            jwks_uri: "https://ci.example/jwks".into(),
            audience: "aims".into(),
            subject: subject.into(),
            agent: agent.map(str::to_owned),
            required_claims: BTreeMap::new(),
        }
    }

    #[test]
    fn subject_rules_map_to_agents() {
        let pattern =
            TrustedIssuer::try_from_raw(raw("system:serviceaccount:agents:{agent}", None)).unwrap();
        assert_eq!(
            pattern
                .agent_for("system:serviceaccount:agents:coder")
                .map(|a| a.to_string()),
            Some("coder".into())
        );
        assert_eq!(pattern.agent_for("system:serviceaccount:other:coder"), None);
        assert_eq!(pattern.agent_for("system:serviceaccount:agents:a/b"), None);
        assert_eq!(pattern.agent_for("system:serviceaccount:agents:"), None);

        let exact = TrustedIssuer::try_from_raw(raw(
            "repo:acme/app:ref:refs/heads/main",
            Some("ci-deployer"),
        ))
        .unwrap();
        assert_eq!(
            exact
                .agent_for("repo:acme/app:ref:refs/heads/main")
                .map(|a| a.to_string()),
            Some("ci-deployer".into())
        );
        assert_eq!(exact.agent_for("repo:acme/app:ref:refs/heads/dev"), None);
    }

    #[test]
    fn ambiguous_rules_are_refused() {
        assert!(TrustedIssuer::try_from_raw(raw("x:{agent}", Some("a"))).is_err());
        assert!(TrustedIssuer::try_from_raw(raw("{agent}:{agent}", None)).is_err());
        assert!(TrustedIssuer::try_from_raw(raw("exact", None)).is_err());
        assert!(TrustedIssuer::try_from_raw(raw("exact", Some("../x"))).is_err());
        let mut bad_uri = raw("x:{agent}", None);
        bad_uri.jwks_uri = "file:///etc/passwd".into();
        assert!(TrustedIssuer::try_from_raw(bad_uri).is_err());
    }
}
