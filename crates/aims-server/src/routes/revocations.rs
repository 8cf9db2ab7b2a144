//! `/v1/revocations`: operators revoke by token, delegation subtree, task, agent or owner;
//! resource servers, replicas and the SDK's verifier follow the revocation feed, by polling
//! (`GET /v1/revocations?since=N`) or as server-sent events (`GET /v1/revocations/stream`).
//!
//! A revocation is committed (with its audit event, one log entry per revoked credential and,
//! for a task, agent or owner, its epoch entries) before it is acknowledged; the feed is read
//! from that log, so a follower that resumes with `since` never misses an entry. Each reader
//! sees what concerns it: a resource server the entries for tokens of its audience, without
//! the operator's free-text reason; an operator every entry, with its reason.

use std::convert::Infallible;
use std::time::Duration;

use aims_api::oauth::{
    RevocationEntry, RevocationKind, RevocationPage, RevokeRequest, RevokeResponse, RevokeTarget,
};
use aims_core::audit::action;
use aims_core::id::{AgentName, Owner};
use aims_core::task::is_valid_task_id;
use aims_store::{Revocation, RevocationTarget, Revoked};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Allowed, ToAdminister};
use crate::auth::{ServiceCaller, service_caller};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Body, Query};
use crate::state::AppState;

/// Entries per feed page.
const FEED_PAGE: u32 = 1000;

/// Who reads the feed, which decides what it shows.
enum Reader {
    /// An operator: every entry, with its reason.
    Operator,
    /// A resource server: the entries for tokens of its audience, without reasons.
    ResourceServer {
        /// Its audience.
        audience: String,
    },
}

impl Reader {
    fn of(caller: ServiceCaller) -> Self {
        match caller {
            ServiceCaller::Operator(_) => Self::Operator,
            ServiceCaller::ResourceServer(rs) => Self::ResourceServer {
                audience: rs.audience,
            },
        }
    }

    /// The audience whose entries the reader sees; `None` for all of them.
    fn audience(&self) -> Option<&str> {
        match self {
            Self::Operator => None,
            Self::ResourceServer { audience } => Some(audience),
        }
    }

    fn shows(&self, revocation: &Revocation) -> bool {
        self.audience()
            .is_none_or(|audience| revocation.audience.as_deref() == Some(audience))
    }

    /// The entry as this reader sees it.
    fn entry(&self, revocation: Revocation) -> RevocationEntry {
        let (kind, jti) = match revocation.revoked {
            Revoked::Credential(jti) => (RevocationKind::Token, Some(jti)),
            Revoked::Agent => (RevocationKind::Agent, None),
            Revoked::Task => (RevocationKind::Task, None),
        };
        RevocationEntry {
            seq: revocation.seq,
            kind,
            jti,
            agent: revocation.agent,
            task_id: revocation.task_id,
            revoked_at: revocation.revoked_at,
            expires_at: revocation.expires_at,
            reason: matches!(self, Self::Operator).then_some(revocation.reason),
        }
    }
}

/// `POST /v1/revocations`.
pub async fn revoke(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request(ErrorCode::InvalidTarget, format!("{what} is malformed"))
    };
    let target = match req.target {
        RevokeTarget::Token if aims_token::jws::kid_is_valid(&req.id) => {
            RevocationTarget::Credential(req.id.clone())
        }
        RevokeTarget::Subtree if aims_token::jws::kid_is_valid(&req.id) => {
            RevocationTarget::Subtree(req.id.clone())
        }
        RevokeTarget::Token | RevokeTarget::Subtree => return Err(bad("the token id")),
        RevokeTarget::Task if is_valid_task_id(&req.id) => RevocationTarget::Task(req.id.clone()),
        RevokeTarget::Task => return Err(bad("the task id")),
        RevokeTarget::Agent => RevocationTarget::Agent(
            AgentName::new(req.id.clone()).map_err(|_| bad("the agent name"))?,
        ),
        RevokeTarget::Owner => {
            RevocationTarget::Owner(Owner::new(req.id.clone()).map_err(|_| bad("the owner"))?)
        }
    };
    let reason = req
        .reason
        .unwrap_or_else(|| "revoked by an operator".to_owned());
    if !aims_core::revocation::is_valid_reason(&reason) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidReason,
            "reason must be 1 to 256 characters without control characters",
        ));
    }
    let mut event = caller
        .event(&state, action::REVOKE)
        .details(json!({ "target": req.target, "id": req.id, "reason": reason }));
    match &target {
        RevocationTarget::Credential(id) | RevocationTarget::Subtree(id) => {
            event.token_id = Some(id.clone());
        }
        RevocationTarget::Task(id) => event.task_id = Some(id.clone()),
        RevocationTarget::Agent(name) => {
            event.agent = Some(
                aims_core::id::SpiffeId::for_agent(state.trust_domain.clone(), name.clone())
                    .to_string(),
            );
        }
        RevocationTarget::Owner(owner) => event.owner = Some(owner.to_string()),
    }
    let revoked = state
        .store
        .revoke(&target, &reason, OffsetDateTime::now_utc(), &event)
        .await?;
    state.apply_own_revocations().await;
    Ok(Json(RevokeResponse { revoked }))
}

/// `since` and `limit` of the feed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    #[serde(default)]
    since: u64,
    limit: Option<u32>,
}

/// The reader of the feed; refuses callers that are neither a resource server nor an operator
/// who may read.
async fn feed_reader(state: &AppState, headers: &HeaderMap) -> Result<Reader, Response> {
    match service_caller(state, headers).await {
        Ok(Some(caller)) => Ok(Reader::of(caller)),
        Ok(None) => Err(ApiError::unauthenticated()
            .with_challenge("Basic realm=\"aims\"".to_owned())
            .into_response()),
        Err(refusal) => Err(refusal.into_response()),
    }
}

/// `GET /v1/revocations?since=N&limit=M`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, ApiError>,
) -> Response {
    // The reader is authenticated before its query is looked at.
    let reader = match feed_reader(&state, &headers).await {
        Ok(reader) => reader,
        Err(refused) => return refused,
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let limit = query.limit.unwrap_or(FEED_PAGE).clamp(1, FEED_PAGE);
    match state
        .store
        .revocations_since(query.since, limit, reader.audience())
        .await
    {
        Ok(entries) => {
            let next = entries.last().map_or(query.since, |e| e.seq);
            Json(RevocationPage {
                revocations: entries.into_iter().map(|e| reader.entry(e)).collect(),
                next,
            })
            .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /v1/revocations/stream?since=N`: the log after `since` (or `Last-Event-ID`), then
/// every new entry as it is applied on this replica. Each event's id is its `seq`.
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, ApiError>,
) -> Response {
    // The reader is authenticated before its query is looked at.
    let reader = match feed_reader(&state, &headers).await {
        Ok(reader) => reader,
        Err(refused) => return refused,
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(refused) => return refused.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(query.since);
    Sse::new(follow(state, reader, resume))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The entries after `since` that `reader` sees: the backlog from the store, then live ones,
/// never a duplicate or a gap (a lagging subscriber re-reads the store).
fn follow(
    state: AppState,
    reader: Reader,
    since: u64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let live = state.revocations.subscribe();
    futures_util::stream::unfold(
        (state, reader, live, since, Vec::<Revocation>::new()),
        |(state, reader, mut live, mut sent, mut pending)| async move {
            loop {
                if let Some(next) = pending.pop() {
                    if next.seq <= sent {
                        continue;
                    }
                    sent = next.seq;
                    let event = Event::default()
                        .id(next.seq.to_string())
                        .event("revocation")
                        .json_data(reader.entry(next))
                        .unwrap_or_else(|_| Event::default().comment("unencodable entry"));
                    return Some((Ok(event), (state, reader, live, sent, pending)));
                }
                // Catch up from the store whenever live delivery might have missed something.
                if sent < state.revocations.cursor() {
                    match state
                        .store
                        .revocations_since(sent, FEED_PAGE, reader.audience())
                        .await
                    {
                        Ok(mut page) if !page.is_empty() => {
                            page.reverse();
                            pending = page;
                            continue;
                        }
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
                match live.recv().await {
                    Ok(revocation) if reader.shows(&revocation) => pending = vec![revocation],
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}
