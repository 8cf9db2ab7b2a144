//! `/v1/audit`: read the audit log in order, query it by agent, task, owner, action, decision,
//! resource, policy and time, verify its hash chain, and trace one task as a tree (admins and
//! auditors); and the Merkle tree log ([`crate::tlog`]): signed checkpoints, every column of
//! the entries, inclusion and consistency proofs, the published log key, and the log as C2SP
//! tlog-tiles with the prefix `/v1/audit/tlog` (`checkpoint`, the latest signed note;
//! `tile/<L>/<N>[.p/<W>]`, hash tiles; `tile/entries/<N>[.p/<W>]`, entry bundles of its tree)
//! for mirrors that recompute it.

use aims_api::tlog::{
    AuditEntryPage, AuditEntryView, CheckpointPage, CheckpointQuery, CheckpointView,
    ConsistencyProofView, ConsistencyQuery, InclusionProofView, InclusionQuery, LogKeyView,
};
use aims_api::{
    AuditPage, AuditQuery, AuditRecordView, AuditSearch, AuditSearchPage, AuditVerification,
    MAX_AUDIT_EXAMINED, MAX_TRACE_EVENTS, OcsfPage, TaskTrace,
};
use aims_core::audit::{AuditEvent, AuditRecord, ChainHead};
use aims_core::task::is_valid_task_id;
use aims_core::tiles::{TileError, TileKind, TilePath};
use aims_core::tlog::TreeError;
use aims_store::{AuditKey, MAX_PAGE, StoredCheckpoint};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::auth::{Allowed, ToRead};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Path, Query};
use crate::state::AppState;
use crate::tlog::TlogError;
use crate::trace::trace_of;

/// `GET /v1/audit?after=&limit=`.
pub async fn page(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    state.audit_sequenced().await?;
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
    state.audit_sequenced().await?;
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

/// Whether `event` passes every filter of `search` but the agent and task (checked by the
/// caller).
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

/// How late, at most, a record is appended after its time: records further than this past a
/// query's `until` are not read.
const LATEST_APPEND: time::Duration = time::Duration::minutes(1);

/// The index a query reads the log by: the most selective filter it has (agent, task,
/// policy, owner, action, decision), or none (log order).
fn index_key<'a>(search: &'a AuditSearch, spiffe_id: Option<&'a str>) -> Option<AuditKey<'a>> {
    spiffe_id
        .map(AuditKey::Agent)
        .or(search.task.as_deref().map(AuditKey::Task))
        .or(search.policy.as_deref().map(AuditKey::Policy))
        .or(search.owner.as_deref().map(AuditKey::Owner))
        .or(search.action.as_deref().map(AuditKey::Action))
        .or(search.decision.as_deref().map(AuditKey::Decision))
}

/// `GET /v1/audit/query`: the records matching every filter, read by the index of its most
/// selective filter ([`index_key`]) from the first record of `since` (the time index) up to
/// the last that can be timed before `until`; at most [`MAX_AUDIT_EXAMINED`] records are read
/// per request and `next_after` says where to go on. Every record read is checked against its
/// body, so the index only chooses what is read.
pub async fn query(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(search): Query<AuditSearch>,
) -> Result<Json<AuditSearchPage>, ApiError> {
    state.audit_sequenced().await?;
    check_search(&search)?;
    let limit = search.limit.unwrap_or(100) as usize;
    let spiffe_id = search
        .agent
        .as_ref()
        .map(|a| format!("spiffe://{}/agent/{a}", state.trust_domain));
    let key = index_key(&search, spiffe_id.as_deref());
    let mut after = search.after.unwrap_or(0);
    if let Some(since) = search.since {
        after = after.max(state.store.audit_position_at(since).await?);
    }
    let last = match search.until {
        Some(until) => Some(state.store.audit_position_at(until + LATEST_APPEND).await?),
        None => None,
    };
    let mut examined = 0;
    let mut records = Vec::new();
    loop {
        let page = match key {
            Some(key) => state.store.audit_records_of(key, after, MAX_PAGE).await?,
            None => state.store.audit_records(after, MAX_PAGE).await?,
        };
        let ended = page.len() < MAX_PAGE as usize;
        for record in page {
            if last.is_some_and(|last| record.seq > last) {
                return Ok(Json(AuditSearchPage {
                    records,
                    examined,
                    next_after: None,
                }));
            }
            after = record.seq;
            examined += 1;
            let Ok(event) = serde_json::from_str::<AuditEvent>(&record.body) else {
                continue;
            };
            let in_scope = search
                .task
                .as_ref()
                .is_none_or(|t| event.task_id.as_ref() == Some(t))
                && spiffe_id
                    .as_ref()
                    .is_none_or(|a| event.agent.as_ref() == Some(a));
            if in_scope && matches(&search, &event) {
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
    state.audit_sequenced().await?;
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
    state.audit_sequenced().await?;
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

/// A stored checkpoint as the API shows it.
fn checkpoint_view(stored: StoredCheckpoint) -> CheckpointView {
    CheckpointView {
        tree_size: stored.tree_size,
        root_hash: STANDARD.encode(stored.root),
        note: stored.note,
    }
}

/// The checkpoint of `size`, or `checkpoint_not_found`.
async fn checkpointed(state: &AppState, size: u64) -> Result<StoredCheckpoint, ApiError> {
    state.store.checkpoint(size).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::CheckpointNotFound,
            format!("no checkpoint was signed for tree size {size}"),
        )
    })
}

/// A tree error as an answer; the detail of a broken log goes to the server log only.
fn tree_refusal(error: TlogError) -> ApiError {
    match error {
        TlogError::Store(e) => e.into(),
        TlogError::Tree(TreeError::IndexBeyondTree { index, size }) => ApiError::bad_request(
            ErrorCode::IndexBeyondTree,
            format!("index {index} is not inside the tree of size {size}"),
        ),
        TlogError::Tree(TreeError::SizeOrder { first, second }) => ApiError::bad_request(
            ErrorCode::TreeSizesOutOfOrder,
            format!("first ({first}) must not be larger than second ({second})"),
        ),
        TlogError::Tile(TileError::Malformed(why)) => {
            ApiError::bad_request(ErrorCode::InvalidTilePath, why)
        }
        TlogError::Tile(TileError::BeyondTree) => ApiError::not_found(
            ErrorCode::TileBeyondTree,
            "the tile reaches past the tree of the latest signed checkpoint",
        ),
        TlogError::Tile(TileError::EntryTooLarge { index, len }) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BundleEntryTooLarge,
            format!(
                "entry {} is {len} bytes, more than an entry bundle can hold (65535)",
                index + 1
            ),
        ),
        TlogError::Behind { .. } | TlogError::Tree(TreeError::SizeBeyondTree { .. }) => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::AuditTreeBehind,
                "this replica has not integrated that tree yet; retry shortly",
            )
        }
        other => {
            tracing::error!(error = %other, "audit proof refused");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::AuditTreeBroken,
                "the stored audit log does not match its signed checkpoints",
            )
        }
    }
}

/// `GET /v1/audit/checkpoint?tree_size=`: the latest signed checkpoint, or the one of a size.
pub async fn checkpoint(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<CheckpointQuery>,
) -> Result<Json<CheckpointView>, ApiError> {
    let stored = match query.tree_size {
        Some(size) => checkpointed(&state, size).await?,
        None => state.store.latest_checkpoint().await?.ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::CheckpointNotFound,
                "no checkpoint has been signed yet",
            )
        })?,
    };
    Ok(Json(checkpoint_view(stored)))
}

/// `GET /v1/audit/checkpoints?after=&limit=`: stored checkpoints of trees larger than
/// `after`, by size.
pub async fn checkpoints(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<CheckpointPage>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let checkpoints = state
        .store
        .checkpoints(query.after.unwrap_or(0), limit)
        .await?
        .into_iter()
        .map(checkpoint_view)
        .collect();
    Ok(Json(CheckpointPage { checkpoints }))
}

/// `GET /v1/audit/entries?after=&limit=`: stored rows with every column, exactly as the
/// leaves hash them, for verifiers that recompute the tree.
pub async fn entries(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditEntryPage>, ApiError> {
    state.audit_sequenced().await?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let entries = state
        .store
        .audit_entries(query.after.unwrap_or(0), limit)
        .await?
        .into_iter()
        .map(|e| AuditEntryView {
            seq: e.record.seq,
            time_ms: e.time_ms,
            action: e.action,
            agent: e.agent,
            task_id: e.task_id,
            txn: e.txn,
            prev_hash: e.record.prev_hash.to_hex(),
            hash: e.record.hash.to_hex(),
            body: e.record.body,
        })
        .collect();
    Ok(Json(AuditEntryPage { entries }))
}

/// Integrates entries appended since the last look, so a checkpoint signed by another
/// replica can be proved here.
async fn catch_up(state: &AppState, size: u64) -> Result<(), ApiError> {
    if state.audit_tree.size() < size {
        state
            .audit_tree
            .integrate(state.store.as_ref())
            .await
            .map_err(tree_refusal)?;
    }
    Ok(())
}

/// `GET /v1/audit/proof/inclusion?index=&tree_size=`: the RFC 9162 inclusion proof of leaf
/// `index` in the checkpointed tree of `tree_size` entries, with that checkpoint.
pub async fn inclusion(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<InclusionQuery>,
) -> Result<Json<InclusionProofView>, ApiError> {
    if query.index >= query.tree_size {
        return Err(tree_refusal(TlogError::Tree(TreeError::IndexBeyondTree {
            index: query.index,
            size: query.tree_size,
        })));
    }
    let stored = checkpointed(&state, query.tree_size).await?;
    catch_up(&state, query.tree_size).await?;
    let (leaf, proof) = state
        .audit_tree
        .inclusion(query.index, &stored)
        .map_err(tree_refusal)?;
    Ok(Json(InclusionProofView {
        index: query.index,
        tree_size: query.tree_size,
        leaf_hash: STANDARD.encode(leaf),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
        checkpoint: stored.note,
    }))
}

/// `GET /v1/audit/proof/consistency?first=&second=`: the RFC 9162 consistency proof between
/// two checkpointed tree sizes, with both checkpoints.
pub async fn consistency(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProofView>, ApiError> {
    if query.first > query.second {
        return Err(tree_refusal(TlogError::Tree(TreeError::SizeOrder {
            first: query.first,
            second: query.second,
        })));
    }
    let first = checkpointed(&state, query.first).await?;
    let second = checkpointed(&state, query.second).await?;
    catch_up(&state, query.second).await?;
    let proof = state
        .audit_tree
        .consistency(&first, &second)
        .map_err(tree_refusal)?;
    Ok(Json(ConsistencyProofView {
        first: query.first,
        second: query.second,
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
        first_checkpoint: first.note,
        second_checkpoint: second.note,
    }))
}

/// `GET /.well-known/aims-audit-log-key`: the key that signs the log's checkpoints, as a
/// signed-note verifier key (anyone may read it, like the JWKS).
pub async fn log_key(State(state): State<AppState>) -> Json<LogKeyView> {
    Json(LogKeyView {
        origin: state.audit_tree.origin().to_owned(),
        verifier_key: state.audit_tree.verifier_key(),
    })
}

/// How long a client may keep a full tile or bundle: a year, as it never changes (its
/// contents are fixed by a signed checkpoint). `private`: it is served to operators only.
const IMMUTABLE: &str = "private, max-age=31536000, immutable";

/// A partial tile or bundle, or the checkpoint: revalidated before each use.
const MUTABLE: &str = "private, no-cache";

/// A successful answer that is not JSON.
fn plain(content_type: &'static str, cache: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// `GET /v1/audit/tlog/checkpoint`: the latest signed checkpoint note as C2SP tlog-tiles
/// serves it (`text/plain`), the same note as `GET /v1/audit/checkpoint` holds.
pub async fn tlog_checkpoint(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
) -> Result<Response, ApiError> {
    let stored = state.store.latest_checkpoint().await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::CheckpointNotFound,
            "no checkpoint has been signed yet",
        )
    })?;
    Ok(plain("text/plain; charset=utf-8", MUTABLE, stored.note))
}

/// `GET /v1/audit/tlog/tile/{path}`: a hash tile (`<L>/<N>[.p/<W>]`) or an entry bundle
/// (`entries/<N>[.p/<W>]`) of the tree of the latest signed checkpoint. Every tile whose
/// hashes that tree holds is served, partial ones of any width it covers; one reaching past
/// it is `tile_beyond_tree`, a path that is not a tile path `invalid_tile_path`.
pub async fn tlog_tile(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let tile = TilePath::parse(&path).map_err(|e| tree_refusal(e.into()))?;
    let latest = state.store.latest_checkpoint().await?;
    let size = latest.as_ref().map_or(0, |c| c.tree_size);
    tile.within(size).map_err(|e| tree_refusal(e.into()))?;
    let Some(stored) = latest else {
        return Err(tree_refusal(TileError::BeyondTree.into()));
    };
    catch_up(&state, size).await?;
    let body = match tile.kind {
        TileKind::Hashes(_) => state
            .audit_tree
            .tile(&tile, &stored)
            .map_err(tree_refusal)?
            .concat(),
        TileKind::Entries => state
            .audit_tree
            .entry_bundle(state.store.as_ref(), &tile, &stored)
            .await
            .map_err(tree_refusal)?,
    };
    let cache = if tile.is_full() { IMMUTABLE } else { MUTABLE };
    Ok(plain("application/octet-stream", cache, body))
}
