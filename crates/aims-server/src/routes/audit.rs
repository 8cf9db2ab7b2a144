//! `/v1/audit`: read the audit log in order, verify its hash chain, and trace one task as a
//! tree (admins and auditors).

use aims_api::{
    AuditPage, AuditQuery, AuditRecordView, AuditVerification, MAX_TRACE_EVENTS, TaskTrace,
};
use aims_core::audit::ChainHead;
use aims_core::task::is_valid_task_id;
use aims_store::MAX_PAGE;
use axum::Json;
use axum::extract::State;

use crate::auth::{Allowed, ToRead};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Path, Query};
use crate::state::AppState;
use crate::trace::trace_of;

/// `GET /v1/audit?after=&limit=`.
pub async fn page(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let records = state
        .store
        .audit_records(query.after.unwrap_or(0), limit)
        .await?
        .into_iter()
        .map(|r| AuditRecordView {
            seq: r.seq,
            prev_hash: r.prev_hash.to_hex(),
            hash: r.hash.to_hex(),
            event: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body)),
        })
        .collect();
    Ok(Json(AuditPage { records }))
}

/// `GET /v1/audit/verify`: walks the chain from the first record up to the head recorded when
/// the walk began (records appended meanwhile are left for the next walk) and checks that the
/// chain ends exactly at that head, which also catches a truncated tail.
pub async fn verify(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
) -> Result<Json<AuditVerification>, ApiError> {
    let recorded = state.store.audit_head().await?;
    let mut head = ChainHead::EMPTY;
    let broken = |head: ChainHead, problem: String| {
        Json(AuditVerification {
            intact: false,
            records: head.seq,
            head_hash: head.hash.to_hex(),
            problem: Some(problem),
        })
    };
    while head.seq < recorded.seq {
        let records = state.store.audit_records(head.seq, MAX_PAGE).await?;
        if records.is_empty() {
            break;
        }
        for record in records.iter().take_while(|r| r.seq <= recorded.seq) {
            match head.verify_next(record) {
                Ok(next) => head = next,
                Err(problem) => return Ok(broken(head, problem.to_string())),
            }
        }
    }
    if head != recorded {
        let problem = format!(
            "the log's recorded head is record {} but the chain ends at record {}",
            recorded.seq, head.seq
        );
        return Ok(broken(head, problem));
    }
    Ok(Json(AuditVerification {
        intact: true,
        records: head.seq,
        head_hash: head.hash.to_hex(),
        problem: None,
    }))
}

/// `GET /v1/audit/trace/{task_id}`: the task's events as a tree of its tokens
/// ([`crate::trace`]), at most [`MAX_TRACE_EVENTS`] of them.
pub async fn trace(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Path(task_id): Path<String>,
) -> Result<Json<TaskTrace>, ApiError> {
    if !is_valid_task_id(&task_id) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTaskId,
            "task id is malformed",
        ));
    }
    let task = state.store.task(&task_id).await?.ok_or_else(|| {
        ApiError::not_found(ErrorCode::TaskNotFound, format!("no task {task_id}"))
    })?;
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = state
            .store
            .task_audit_records(&task_id, after, MAX_PAGE)
            .await?;
        let full = page.len() == MAX_PAGE as usize;
        after = page.last().map_or(after, |r| r.seq);
        records.extend(page);
        if !full || records.len() > MAX_TRACE_EVENTS {
            break;
        }
    }
    let truncated = records.len() > MAX_TRACE_EVENTS;
    records.truncate(MAX_TRACE_EVENTS);
    Ok(Json(trace_of(task.into(), records, truncated)))
}
