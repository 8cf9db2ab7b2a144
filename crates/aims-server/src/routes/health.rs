//! Liveness, readiness and metrics.
//!
//! `/healthz` answers while the process serves HTTP. `/readyz` answers 200 only when the store
//! accepts writes, the audit log can be written (after a failed audit commit it stays unready
//! until a recovery probe event commits) and the active policy version is the one in force.
//! `/metrics` reads this replica's revocation view as it is scraped.

use aims_core::audit::{Actor, Outcome};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// Audit action of the probe that proves the log writable again after a failure.
const AUDIT_RECOVERED: &str = "audit.recovered";

/// `GET /healthz`.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.store.ping().await;
    let audit = if state.audit.healthy() {
        true
    } else {
        store.is_ok()
            && state
                .audit
                .record(state.event(Actor::System, AUDIT_RECOVERED, Outcome::Success))
                .await
                .is_ok()
    };
    let policy = state.policy.healthy();
    let ready = store.is_ok() && audit && policy;
    if let Err(error) = &store {
        tracing::warn!(%error, "readiness: store check failed");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "store": store.is_ok(),
            "audit": audit,
            "policy": policy,
        })),
    )
        .into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics;
    metrics
        .revocation_log_position
        .set(state.revocations.cursor());
    metrics
        .revoked_tokens_tracked
        .set(u64::try_from(state.revocations.tracked()).unwrap_or(u64::MAX));
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
