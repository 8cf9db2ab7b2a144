//! `/v1/tasks`: tasks are created by an agent's first token exchange or explicitly by the
//! agent (with its SVID); operators list, show and end them. Ending a task revokes every token
//! issued for it, delegated ones included.

use aims_api::oauth::{CreateTaskRequest, TaskEnded, TaskList, TaskView};
use aims_core::audit::{Actor, Outcome, action};
use aims_core::id::{AgentName, Intent};
use aims_core::task::{Task, TaskState, is_valid_subject, is_valid_task_id};
use aims_store::{StoreError, TaskFilter};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Allowed, AuthenticatedAgent, ToAdminister, ToRead};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Body, Path, Query};
use crate::state::AppState;

/// `POST /v1/tasks`: an agent declares a task before its first exchange.
pub async fn create(
    State(state): State<AppState>,
    caller: AuthenticatedAgent,
    headers: HeaderMap,
    Body(req): Body<CreateTaskRequest>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let now = OffsetDateTime::now_utc();
    let intent = Intent::new(req.intent).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidIntent,
            "intent must be 1 to 1024 characters without control characters",
        )
    })?;
    if req.subject.as_deref().is_some_and(|s| !is_valid_subject(s)) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidSubject,
            "subject must be 1 to 256 characters without control characters",
        ));
    }
    let ceiling = state.config.task_ttl.as_secs();
    let ttl = req.ttl_s.unwrap_or(ceiling);
    if ttl == 0 || ttl > ceiling {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTtl,
            format!("ttl_s must be 1 to {ceiling}"),
        ));
    }
    let task = Task {
        id: aims_token::new_id(&state.rng).map_err(|_| ApiError::internal())?,
        agent: caller.agent().name.clone(),
        intent,
        subject: req.subject.unwrap_or_else(|| caller.spiffe_id.to_string()),
        state: TaskState::Active,
        created_at: now,
        deadline: now + std::time::Duration::from_secs(ttl),
        ended_at: None,
    };
    let spiffe_id = caller.spiffe_id.to_string();
    let event = state
        .event(
            Actor::Agent {
                spiffe_id: spiffe_id.clone(),
            },
            action::TASK_CREATE,
            Outcome::Success,
        )
        .request(crate::auth::request_id(&headers))
        .agent(spiffe_id)
        .task(task.id.clone())
        .intent(task.intent.clone());
    state.store.create_task(&task, &event).await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// Filters of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    agent: Option<AgentName>,
    state: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/tasks`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<TaskQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let task_state = query
        .state
        .as_deref()
        .map(|s| {
            TaskState::parse(s).ok_or_else(|| {
                ApiError::bad_request(ErrorCode::InvalidState, "state is active, ended or revoked")
            })
        })
        .transpose()?;
    let tasks = state
        .store
        .list_tasks(&TaskFilter {
            agent: query.agent,
            state: task_state,
            limit: query.limit.unwrap_or(100),
        })
        .await?;
    Ok(Json(TaskList {
        tasks: tasks.into_iter().map(TaskView::from).collect(),
    }))
}

fn task_id(id: &str) -> Result<&str, ApiError> {
    if is_valid_task_id(id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidTaskId,
            "task id is malformed",
        ))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::TaskNotFound, format!("no task {id}"))
}

/// `GET /v1/tasks/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state
        .store
        .task(task_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(task.into()))
}

/// `POST /v1/tasks/{id}/end`: ends the task and revokes everything issued for it.
pub async fn end(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Path(id): Path<String>,
) -> Result<Json<TaskEnded>, ApiError> {
    let id = task_id(&id)?.to_owned();
    let now = OffsetDateTime::now_utc();
    let event = caller
        .event(&state, action::TASK_END)
        .task(id.clone())
        .details(json!({ "cause": "task ended by an operator" }));
    let revoked = match state.store.end_task(&id, now, &event).await {
        Ok(count) => count,
        Err(StoreError::NotFound { .. }) => return Err(not_found(&id)),
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(
                ErrorCode::TaskNotActive,
                "the task has already ended",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    state.apply_own_revocations().await;
    let task = state.store.task(&id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(TaskEnded {
        task: task.into(),
        revoked,
    }))
}
