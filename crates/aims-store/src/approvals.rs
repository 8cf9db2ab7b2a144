//! The store's side of human approvals: opening (or joining) a request, a human's answer,
//! and spending a grant, each one transaction under the write lock with its audit event, so
//! a grant is never spent twice and an answer never lands on a request that changed.
//!
//! The request's life rules (expiry, who may decide) are `aims_core::approval`'s; this module
//! only makes each change atomic. Revocation reaches approvals through
//! [`revoke_approvals_in`], called from the one revocation closure.

use aims_core::approval::{
    ApprovalRequest, ApprovalState, ApprovalVerdict, BoundCall, MAX_PENDING_PER_AGENT,
};
use aims_core::audit::AuditEvent;
use aims_core::id::ApprovalId;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use crate::errors::{classify, on_unique};
use crate::rows::{self, ApprovalRow};
use crate::write::{
    Backend, Conn, WriteTx, begin_write, require_credentials_allowed, require_open_task, settle,
};
use crate::{RevocationTarget, StoreError, sql};

/// Why a grant could not be spent: rolled back, then answered as `false`.
const GRANT_SPENT: &str = "the grant is spent, expired or revoked";

/// Binds the five fields of `call`, in the order the call statements name them.
macro_rules! bind_call {
    ($query:expr, $call:expr) => {
        $query
            .bind($call.task_id.as_str().to_owned())
            .bind($call.agent.as_str().to_owned())
            .bind($call.action.clone())
            .bind($call.resource.clone())
            .bind($call.arguments_digest.clone())
    };
}

/// [`crate::Store::open_approval`].
pub(crate) async fn open<B>(
    backend: &B,
    request: &ApprovalRequest,
    decision: &AuditEvent,
    opened: &AuditEvent,
) -> Result<ApprovalRequest, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let asked = &request.asked;
    let now = asked.created_at;
    let mut tx = begin_write(backend).await?;
    let outcome: Result<ApprovalRequest, StoreError> = async {
        require_credentials_allowed::<B>(&mut tx, &asked.call.agent).await?;
        require_open_task::<B>(&mut tx, asked.call.task_id.as_str(), now, sql::SELECT_TASK).await?;
        let pending = bind_call!(
            sqlx::query_as::<B::Db, ApprovalRow>(sql::PENDING_APPROVAL_FOR_CALL),
            asked.call
        )
        .bind(rows::to_ms(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        if let Some(row) = pending {
            return row.into_request();
        }
        let waiting = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_PENDING_APPROVALS)
            .bind(asked.call.agent.as_str().to_owned())
            .bind(rows::to_ms(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        if waiting >= i64::from(MAX_PENDING_PER_AGENT) {
            return Err(StoreError::Conflict {
                reason: "the agent has as many pending approval requests as it may",
            });
        }
        let asked_json = serde_json::to_string(asked)
            .map_err(|e| StoreError::Corrupt(format!("approval request: {e}")))?;
        sqlx::query(sql::INSERT_APPROVAL)
            .bind(request.id.as_str().to_owned())
            .bind(asked.call.task_id.as_str().to_owned())
            .bind(asked.call.agent.as_str().to_owned())
            .bind(asked.owner.as_str().to_owned())
            .bind(asked.credential_id.clone())
            .bind(asked.call.action.clone())
            .bind(asked.call.resource.clone())
            .bind(asked.call.arguments_digest.clone())
            .bind(rows::to_ms(asked.created_at))
            .bind(rows::to_ms(asked.expires_at))
            .bind(asked_json)
            .execute(&mut *tx)
            .await
            .map_err(on_unique("approval id already exists"))?;
        Ok(request.clone())
    }
    .await;
    let Ok(stored) = &outcome else {
        return settle(backend, tx, outcome, &[]).await;
    };
    let named = |event: &AuditEvent| event.clone().approval(stored.id.as_str());
    let events: Vec<AuditEvent> = if stored.id == request.id {
        vec![named(decision), named(opened)]
    } else {
        vec![named(decision)]
    };
    settle(backend, tx, outcome, &events).await
}

/// [`crate::Store::decide_approval`].
pub(crate) async fn decide<B>(
    backend: &B,
    id: &ApprovalId,
    verdict: &ApprovalVerdict,
    event: &AuditEvent,
) -> Result<ApprovalRequest, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<ApprovalRequest, StoreError> = async {
        let mut request = sqlx::query_as::<B::Db, ApprovalRow>(sql::SELECT_APPROVAL)
            .bind(id.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .ok_or(StoreError::NotFound { what: "approval" })?
            .into_request()?;
        if request.state_at(verdict.at) != ApprovalState::Pending {
            return Err(StoreError::Conflict {
                reason: "the approval request is not pending",
            });
        }
        require_credentials_allowed::<B>(&mut tx, &request.asked.call.agent).await?;
        require_open_task::<B>(
            &mut tx,
            request.asked.call.task_id.as_str(),
            verdict.at,
            sql::SELECT_TASK,
        )
        .await?;
        request.verdict = Some(verdict.clone());
        (request.state, request.uses_left) = if verdict.approved {
            (ApprovalState::Approved, request.asked.uses)
        } else {
            (ApprovalState::Denied, 0)
        };
        let verdict_json = serde_json::to_string(verdict)
            .map_err(|e| StoreError::Corrupt(format!("approval verdict: {e}")))?;
        let decided = sqlx::query_scalar::<B::Db, String>(sql::DECIDE_APPROVAL)
            .bind(id.as_str().to_owned())
            .bind(request.state.as_str().to_owned())
            .bind(i64::from(request.uses_left))
            .bind(request.grant_expires_at().map(rows::to_ms))
            .bind(verdict_json)
            .bind(rows::to_ms(verdict.at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        decided.map(|_| request).ok_or(StoreError::Conflict {
            reason: "the approval request is not pending",
        })
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// [`crate::Store::grant_for`].
pub(crate) async fn grant_for<B>(
    backend: &B,
    call: &BoundCall,
    now: OffsetDateTime,
) -> Result<Option<ApprovalId>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let found = bind_call!(
        sqlx::query_scalar::<B::Db, String>(sql::GRANT_FOR_CALL),
        call
    )
    .bind(rows::to_ms(now))
    .fetch_optional(backend.reads())
    .await
    .map_err(classify)?;
    found
        .map(|id| {
            ApprovalId::new(id.clone())
                .map_err(|_| StoreError::Corrupt(format!("approval id {id:?}")))
        })
        .transpose()
}

/// [`crate::Store::use_grant`].
pub(crate) async fn use_grant<B>(
    backend: &B,
    id: &ApprovalId,
    now: OffsetDateTime,
    event: &AuditEvent,
) -> Result<bool, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        let spent = sqlx::query_scalar::<B::Db, String>(sql::USE_GRANT)
            .bind(id.as_str().to_owned())
            .bind(rows::to_ms(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        spent.map(|_| ()).ok_or(StoreError::Conflict {
            reason: GRANT_SPENT,
        })
    }
    .await;
    let event = event.clone().approval(id.as_str());
    match settle(backend, tx, outcome, std::slice::from_ref(&event)).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict { reason }) if reason == GRANT_SPENT => Ok(false),
        Err(other) => Err(other),
    }
}

/// Revokes, inside a revocation's transaction, the pending requests and live grants of
/// `target` and of every credential the revocation appended to the log after position
/// `before`.
pub(crate) async fn revoke_approvals_in<B>(
    tx: &mut WriteTx<B::Db>,
    target: &RevocationTarget,
    before: i64,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
{
    revoke_credential_approvals_in::<B>(&mut **tx, before).await?;
    let (statement, key) = match target {
        RevocationTarget::Task(id) => (sql::REVOKE_APPROVALS_OF_TASK, id.clone()),
        RevocationTarget::Agent(agent) => {
            (sql::REVOKE_APPROVALS_OF_AGENT, agent.as_str().to_owned())
        }
        RevocationTarget::Owner(owner) => {
            (sql::REVOKE_APPROVALS_OF_OWNER, owner.as_str().to_owned())
        }
        RevocationTarget::Credential(_) | RevocationTarget::Subtree(_) => return Ok(()),
    };
    sqlx::query(statement)
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Revokes, inside a revocation's transaction, the pending requests and live grants of every
/// credential it appended to the log after position `before`.
pub(crate) async fn revoke_credential_approvals_in<B>(
    conn: &mut Conn<B>,
    before: i64,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
{
    // Planned for its position each time, as the cascade's statements are.
    sqlx::query(sql::REVOKE_APPROVALS_OF_CREDENTIALS)
        .persistent(false)
        .bind(before)
        .execute(conn)
        .await
        .map(drop)
        .map_err(classify)
}
