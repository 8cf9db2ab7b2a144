//! Outbound notifications: when an agent is quarantined for drift, an approval request is
//! opened, or an agent's recertification falls due or lapses, a signed event is POSTed to the webhook configured for it, retried with backoff in
//! the background.
//!
//! The body is a compact JWS (`Content-Type: application/jwt`, `typ: aims-event+jwt`) signed
//! with the trust domain's current key, so a receiver verifies it against the JWKS. Delivery
//! never blocks or fails the request that caused it; failures are logged and counted.

use std::time::Duration;

use aims_token::jws;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::state::AppState;

/// `typ` of signed event bodies.
pub const EVENT_TYP: &str = "aims-event+jwt";
/// Delivery attempts before giving up.
const ATTEMPTS: u32 = 5;
/// Wait before the second attempt; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Per-attempt timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which webhook an event goes to.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// An agent was quarantined for posture drift.
    Drift,
    /// An approval request was opened.
    Approval,
    /// An agent's recertification date is near, or it was suspended for missing it.
    Recertify,
}

impl Hook {
    fn url(self, state: &AppState) -> Option<String> {
        match self {
            Self::Drift => state.config.drift_webhook_url.clone(),
            Self::Approval => state.config.approval_webhook_url.clone(),
            Self::Recertify => state.config.recertify_webhook_url.clone(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Drift => "drift",
            Self::Approval => "approval",
            Self::Recertify => "recertify",
        }
    }
}

/// Signs `event` and delivers it to `hook`'s webhook, if one is configured.
pub fn notify(state: &AppState, hook: Hook, event: Value) {
    let Some(url) = hook.url(state) else {
        return;
    };
    let hook = hook.name();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let body = aims_token::random_id(&state.rng).and_then(|jti| {
        let claims = json!({
            "iss": state.issuer,
            "aud": url,
            "iat": now,
            "exp": now.saturating_add(300),
            "jti": jti,
            "event": event,
        });
        jws::sign(&state.keys().current, &state.rng, EVENT_TYP, &claims)
    });
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, hook, "cannot sign the notification");
            return;
        }
    };
    let http = state.http.clone();
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/jwt")
                .timeout(ATTEMPT_TIMEOUT)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::warn!(attempt, hook, status = %response.status(), "webhook refused the notification");
                }
                Err(error) => {
                    let error = error.without_url();
                    tracing::warn!(attempt, hook, %error, "webhook unreachable");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        tracing::error!(hook, "notification not delivered after {ATTEMPTS} attempts");
    });
}
