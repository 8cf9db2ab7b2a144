//! `/v1/sightings`: enforcement points (the gateway) report the callers they refused before
//! any decision — no token, a token AIMS did not issue for them, a bad proof — counted, not
//! written one by one; admins and auditors read them (the governance report's unmanaged
//! callers).

use aims_api::sightings::{ReportSightings, ReportedSighting, SightingList, SightingsReported};
use aims_core::audit::{Actor, Outcome, action};
use aims_core::sighting::MAX_PER_REPORT;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::json;

use crate::auth::{Allowed, ToRead, resource_server_caller};
use crate::error::{ApiError, ErrorCode};
use crate::extract::Body;
use crate::state::AppState;

/// The most sightings `GET /v1/sightings` answers.
const LIST_LIMIT: u32 = 1000;

/// `POST /v1/sightings/report`: a resource server's report, one audit event for all of it.
pub async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(report): Body<ReportSightings>,
) -> Result<Json<SightingsReported>, ApiError> {
    let reporter = resource_server_caller(&state, &headers).await?;
    if report.sightings.is_empty()
        || report.sightings.len() > MAX_PER_REPORT
        || !report.sightings.iter().all(|s| s.is_valid())
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!(
                "send 1 to {MAX_PER_REPORT} sightings of bounded visible text with positive counts"
            ),
        ));
    }
    let calls: u64 = report.sightings.iter().map(|s| s.count).sum();
    let event = state
        .event(
            Actor::ResourceServer {
                name: reporter.name.to_string(),
            },
            action::SIGHTING_REPORT,
            Outcome::Success,
        )
        .request(crate::auth::request_id(&headers))
        .details(json!({ "sightings": report.sightings.len(), "calls": calls }));
    let kept = state
        .store
        .report_sightings(&reporter.name, &report.sightings, &event)
        .await?;
    Ok(Json(SightingsReported { kept }))
}

/// `GET /v1/sightings`: the most recently seen refused callers, with who saw them.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
) -> Result<Json<SightingList>, ApiError> {
    let sightings = state
        .store
        .sightings(LIST_LIMIT)
        .await?
        .into_iter()
        .map(|(reporter, sighting)| ReportedSighting { reporter, sighting })
        .collect();
    Ok(Json(SightingList { sightings }))
}
