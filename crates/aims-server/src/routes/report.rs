//! `/v1/report`: the governance report of a window of days ([`crate::report`]), for admins
//! and auditors.

use aims_api::report::{
    DEFAULT_REPORT_WINDOW_DAYS, GovernanceReport, MAX_REPORT_WINDOW_DAYS, ReportQuery,
};
use axum::Json;
use axum::extract::State;
use time::OffsetDateTime;

use crate::auth::{Allowed, ToRead};
use crate::error::{ApiError, ErrorCode};
use crate::extract::Query;
use crate::state::AppState;

/// `GET /v1/report?window_days=N`: 1 to [`MAX_REPORT_WINDOW_DAYS`] days, 30 unless given.
pub async fn report(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<ReportQuery>,
) -> Result<Json<GovernanceReport>, ApiError> {
    let days = query.window_days.unwrap_or(DEFAULT_REPORT_WINDOW_DAYS);
    if !(1..=MAX_REPORT_WINDOW_DAYS).contains(&days) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidWindow,
            format!("window_days must be between 1 and {MAX_REPORT_WINDOW_DAYS}"),
        ));
    }
    let report = crate::report::build(&state, days, OffsetDateTime::now_utc()).await?;
    Ok(Json(report))
}
