//! `/v1/audit`: read the audit log in order, query it by agent, task, owner, action, decision,
//! resource, policy and time, verify its hash chain, and trace one task as a tree (admins and
//! auditors).

use aims_api::{
    AuditPage, AuditQuery, AuditRecordView, AuditSearch, AuditSearchPage, AuditVerification,
    MAX_AUDIT_EXAMINED, MAX_TRACE_EVENTS, OcsfPage, TaskTrace,
};
use aims_core::audit::{AuditEvent, AuditRecord, ChainHead};
use aims_core::task::is_valid_task_id;
use aims_store::{AuditKey, MAX_PAGE};
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
        .map(record_view)
        .collect();
    Ok(Json(AuditPage { records }))
}

/// `GET /v1/audit/ocsf?after=&limit=`: records in order as OCSF events ([`crate::ocsf`]).
pub async fn ocsf(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<OcsfPage>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let records = state
        .store
        .audit_records(query.after.unwrap_or(0), limit)
        .await?;
    let next_after = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    let events = records
        .iter()
        .filter_map(|r| {
            let event = serde_json::from_str::<AuditEvent>(&r.body).ok()?;
            Some(crate::ocsf::event(r.seq, &event, &state.issuer))
        })
        .collect();
    Ok(Json(OcsfPage { events, next_after }))
}

/// A stored record as the API shows it.
fn record_view(r: AuditRecord) -> AuditRecordView {
    AuditRecordView {
        seq: r.seq,
        prev_hash: r.prev_hash.to_hex(),
        hash: r.hash.to_hex(),
        event: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body)),
    }
}

/// Whether `event` passes every filter of `search` but the agent and task (which chose the
/// records read).
fn matches(search: &AuditSearch, event: &AuditEvent) -> bool {
    let same = |wanted: &Option<String>, got: &Option<String>| {
        wanted.as_ref().is_none_or(|w| got.as_ref() == Some(w))
    };
    same(&search.owner, &event.owner)
        && search.action.as_ref().is_none_or(|a| *a == event.action)
        && same(&search.decision, &event.decision)
        && search.resource.as_ref().is_none_or(|r| {
            event
                .resource
                .as_ref()
                .is_some_and(|got| got.contains(r.as_str()))
        })
        && search
            .policy
            .as_ref()
            .is_none_or(|p| event.policy_ids.contains(p))
        && search.since.is_none_or(|since| event.time >= since)
        && search.until.is_none_or(|until| event.time < until)
}

/// Refuses filters that cannot match anything a record holds.
fn check_search(search: &AuditSearch) -> Result<(), ApiError> {
    let bad = |message: &str| ApiError::bad_request(ErrorCode::InvalidQuery, message);
    if search.task.as_deref().is_some_and(|t| !is_valid_task_id(t)) {
        return Err(bad("task is a task id"));
    }
    let texts = [
        &search.owner,
        &search.action,
        &search.decision,
        &search.resource,
        &search.policy,
    ];
    if texts
        .iter()
        .filter_map(|t| t.as_deref())
        .any(|t| t.is_empty() || t.len() > 512 || t.chars().any(char::is_control))
    {
        return Err(bad(
            "a filter is 1 to 512 characters without control characters",
        ));
    }
    if let (Some(since), Some(until)) = (search.since, search.until)
        && since >= until
    {
        return Err(bad("since must be before until"));
    }
    if search.limit.is_some_and(|l| !(1..=MAX_PAGE).contains(&l)) {
        return Err(bad("limit is 1 to 1000"));
    }
    Ok(())
}

/// `GET /v1/audit/query`: the records matching every filter, read by the agent's or the
/// task's index when one is given, else in log order; at most [`MAX_AUDIT_EXAMINED`] records
/// are read per request and `next_after` says where to go on.
pub async fn query(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(search): Query<AuditSearch>,
) -> Result<Json<AuditSearchPage>, ApiError> {
    check_search(&search)?;
    let limit = search.limit.unwrap_or(100) as usize;
    let spiffe_id = search
        .agent
        .as_ref()
        .map(|a| format!("spiffe://{}/agent/{a}", state.trust_domain));
    let key = match (&spiffe_id, &search.task) {
        (Some(agent), _) => Some(AuditKey::Agent(agent)),
        (None, Some(task)) => Some(AuditKey::Task(task)),
        (None, None) => None,
    };
    let mut after = search.after.unwrap_or(0);
    let mut examined = 0;
    let mut records = Vec::new();
    loop {
        let page = match key {
            Some(key) => state.store.audit_records_of(key, after, MAX_PAGE).await?,
            None => state.store.audit_records(after, MAX_PAGE).await?,
        };
        let ended = page.len() < MAX_PAGE as usize;
        for record in page {
            after = record.seq;
            examined += 1;
            let Ok(event) = serde_json::from_str::<AuditEvent>(&record.body) else {
                continue;
            };
            let in_task = search
                .task
                .as_ref()
                .is_none_or(|t| event.task_id.as_ref() == Some(t));
            if in_task && matches(&search, &event) {
                records.push(record_view(record));
            }
            if records.len() == limit || examined == MAX_AUDIT_EXAMINED {
                return Ok(Json(AuditSearchPage {
                    records,
                    examined,
                    next_after: Some(after),
                }));
            }
        }
        if ended {
            return Ok(Json(AuditSearchPage {
                records,
                examined,
                next_after: None,
            }));
        }
    }
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
            .audit_records_of(AuditKey::Task(&task_id), after, MAX_PAGE)
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
