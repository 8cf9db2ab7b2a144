//! Liveness, readiness and metrics.
//!
//! `/healthz` answers while the process serves HTTP. `/readyz` answers 200 only when the store
//! answers and commits a write now (a heartbeat row) with its free-space reserve intact, the
//! audit log can be written (after a failed audit commit it stays unready until a recovery
//! probe event commits) and the active policy version is the one in force; when it is not
//! ready its `reasons` say why. The probe runs at most once per
//! [`crate::readiness::PROBE_EVERY`] however often `/readyz` is asked, so polling it cannot
//! load the store. `/metrics` reads this replica's revocation view as it is scraped.

use aims_core::audit::{Actor, Outcome};
use aims_store::StoreError;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::readiness::Report;
use crate::state::AppState;

/// Audit action of the probe that proves the log writable again after a failure.
const AUDIT_RECOVERED: &str = "audit.recovered";
/// `GET /healthz`.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let report = state.readiness.answer(|| probe(&state)).await;
    let status = if report.reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Checks the store (a committed heartbeat), the audit log and the policy in force.
async fn probe(state: &AppState) -> Report {
    let mut reasons = Vec::new();
    let store = state.store.ping().await;
    if let Err(error) = &store {
        tracing::warn!(%error, "readiness: store check failed");
        reasons.push(match error {
            StoreError::LowSpace { .. } => "storage_reserve",
            _ => "store_unavailable",
        });
    }
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
    if !audit {
        reasons.push("audit_unavailable");
    }
    let policy = state.policy.healthy();
    if !policy {
        reasons.push("policy_not_loaded");
    }
    let leases_overdue = match state
        .store
        .leases_overdue(time::OffsetDateTime::now_utc())
        .await
    {
        Ok(count) => count,
        Err(_) => state.metrics.leases_overdue.get(),
    };
    let audit_tree = state.audit_tree.broken().is_none();
    if !audit_tree {
        reasons.push("audit_tree_broken");
    }
    Report {
        leases_overdue,
        status: if reasons.is_empty() {
            "ready"
        } else {
            "unavailable"
        },
        store: store.is_ok(),
        audit,
        policy,
        audit_tree,
        reasons,
    }
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
    metrics
        .refusal_sources_tracked
        .set(u64::try_from(state.refusals.sources()).unwrap_or(u64::MAX));
    metrics
        .rate_limit_buckets
        .set(u64::try_from(state.limits.tracked()).unwrap_or(u64::MAX));
    metrics
        .verified_tokens_cached
        .set(u64::try_from(state.verified_tokens.len()).unwrap_or(u64::MAX));
    metrics
        .verified_token_cache_hits
        .set(state.verified_tokens.hits());
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
