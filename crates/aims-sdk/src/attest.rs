//! The agent side of attestation: build the proof (signed by the agent's own key, which never
//! leaves the process), obtain a JWT-SVID, and keep it renewed before it expires.
//!
//! [`Attestor`] does one attestation; [`SvidSource`] holds the current SVID and renews it in the
//! background at about two thirds of its lifetime, with jitter so a fleet does not renew in
//! lockstep. Evidence is whatever the caller measured at runtime; this module does not measure.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aims_api::{AttestRequest, AttestResponse};
use aims_core::posture::Evidence;
use aims_token::agent_key::AgentKey;
use aims_token::jws::TYP_ATTESTATION;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::json;
use time::OffsetDateTime;

use crate::{AdminClient, SdkError};

/// Lifetime of an attestation proof, seconds.
const PROOF_LIFETIME_S: i64 = 60;

/// How the agent proves who it is in one attestation.
#[derive(Clone)]
pub enum Credential {
    /// First boot: the one-time join token from registration.
    JoinToken(String),
    /// Renewal: the current SVID (bound to the same key).
    Svid(String),
    /// A token of a trusted third-party issuer (Kubernetes, CI OIDC) that maps to the agent.
    Federated(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::JoinToken(_) => "JoinToken(..)",
            Self::Svid(_) => "Svid(..)",
            Self::Federated(_) => "Federated(..)",
        })
    }
}

/// Performs attestations against one AIMS server with one agent key.
pub struct Attestor {
    client: AdminClient,
    key: Arc<AgentKey>,
    rng: SystemRandom,
}

impl Attestor {
    /// An attestor for the server `client` talks to, signing with `key`.
    pub fn new(client: AdminClient, key: Arc<AgentKey>) -> Self {
        Self {
            client,
            key,
            rng: SystemRandom::new(),
        }
    }

    /// Fetches a nonce, signs a proof over it and `evidence`, and presents it with
    /// `credential`. `audience` is the SVID's audience (default: the AIMS issuer).
    pub async fn attest(
        &self,
        evidence: &Evidence,
        credential: &Credential,
        audience: Option<&str>,
    ) -> Result<AttestResponse, SdkError> {
        let metadata = self.client.metadata().await?;
        let issuer = metadata
            .get("issuer")
            .and_then(|i| i.as_str())
            .ok_or_else(|| SdkError::Decode("the server's metadata has no issuer".into()))?
            .to_owned();
        let nonce = self.client.attestation_nonce().await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| SdkError::Decode("the system random number generator failed".into()))?;
        let claims = json!({
            "aud": issuer,
            "iat": now,
            "exp": now.saturating_add(PROOF_LIFETIME_S),
            "jti": hex_string(&jti),
            "nonce": nonce.nonce,
            "evidence": evidence,
        });
        let proof = self
            .key
            .sign_self_signed(&self.rng, TYP_ATTESTATION, &claims)
            .map_err(|e| SdkError::Decode(format!("cannot sign the attestation proof: {e}")))?;
        let (join_token, svid, federated_token) = match credential {
            Credential::JoinToken(t) => (Some(t.clone()), None, None),
            Credential::Svid(s) => (None, Some(s.clone()), None),
            Credential::Federated(t) => (None, None, Some(t.clone())),
        };
        self.client
            .attest(&AttestRequest {
                proof,
                join_token,
                svid,
                federated_token,
                audience: audience.map(str::to_owned),
            })
            .await
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's current SVID, renewed in the background.
#[derive(Clone)]
pub struct SvidSource {
    current: Arc<RwLock<AttestResponse>>,
}

impl SvidSource {
    /// Attests once with `credential`, then keeps renewing with the SVID itself, re-measuring
    /// evidence with `measure` each time. The background task stops when renewal is refused
    /// (for example after quarantine) or the source is dropped.
    pub async fn start(
        attestor: Attestor,
        credential: Credential,
        audience: Option<String>,
        measure: impl Fn() -> Evidence + Send + Sync + 'static,
    ) -> Result<Self, SdkError> {
        let first = attestor
            .attest(&measure(), &credential, audience.as_deref())
            .await?;
        let current = Arc::new(RwLock::new(first));
        let weak = Arc::downgrade(&current);
        tokio::spawn(async move {
            loop {
                let Some(current) = weak.upgrade() else {
                    return;
                };
                let (svid, expires_at) = match current.read() {
                    Ok(c) => (c.svid.clone(), c.expires_at),
                    Err(_) => return,
                };
                drop(current);
                tokio::time::sleep(renew_after(
                    expires_at,
                    OffsetDateTime::now_utc(),
                    jitter(&attestor.rng),
                ))
                .await;
                let renewed = attestor
                    .attest(&measure(), &Credential::Svid(svid), audience.as_deref())
                    .await;
                let Some(current) = weak.upgrade() else {
                    return;
                };
                match (renewed, current.write()) {
                    (Ok(next), Ok(mut slot)) => *slot = next,
                    _ => return,
                }
            }
        });
        Ok(Self { current })
    }

    /// The current SVID (compact JWS).
    pub fn svid(&self) -> Option<String> {
        self.current.read().ok().map(|c| c.svid.clone())
    }

    /// When the current SVID expires.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.current.read().ok().map(|c| c.expires_at)
    }
}

/// A factor in [0.9, 1.0) spreading renewals of a fleet.
fn jitter(rng: &SystemRandom) -> f64 {
    let mut byte = [0u8; 1];
    let random = rng
        .fill(&mut byte)
        .map(|()| f64::from(u8::from_ne_bytes(byte)) / 256.0)
        .unwrap_or(0.5);
    0.9 + random * 0.1
}

/// Sleep until about two thirds of the remaining lifetime have passed (times `jitter`).
fn renew_after(expires_at: OffsetDateTime, now: OffsetDateTime, jitter: f64) -> Duration {
    let remaining = (expires_at - now).as_seconds_f64().max(0.0);
    Duration::from_secs_f64(remaining * 2.0 / 3.0 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_happens_well_before_expiry() {
        let now = OffsetDateTime::now_utc();
        let after = renew_after(now + time::Duration::seconds(600), now, 1.0);
        assert_eq!(after.as_secs(), 400);
        let early = renew_after(now + time::Duration::seconds(600), now, 0.9);
        assert_eq!(early.as_secs(), 360);
        assert_eq!(
            renew_after(now - time::Duration::seconds(5), now, 1.0),
            Duration::ZERO
        );
        let rng = SystemRandom::new();
        for _ in 0..100 {
            let j = jitter(&rng);
            assert!((0.9..1.0).contains(&j));
        }
    }
}
