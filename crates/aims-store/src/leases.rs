//! The store's side of database leases: engines and role templates (JSON records), and
//! leases — each a credential of kind `lease` whose parent is the task token it was asked
//! with, so the one revocation closure of [`crate::Store::revoke`] covers it — with the row
//! that says whether its database role has been ended, and the claim a replica holds while it
//! creates or ends that role.
//!
//! Every change is one transaction under the write lock with its audit event, except claims
//! and failed attempts, which are bookkeeping of the work (as SSF push claims are).

use aims_core::audit::AuditEvent;
use aims_core::lease::{Engine, RoleTemplate};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use crate::errors::{classify, is_foreign_key_violation, on_unique};
use crate::rows::{self, CredentialRow, LeaseRow, TaskRow, from_record};
use crate::write::{
    Backend, Conn, begin_write, insert_credential, require_credentials_allowed, require_open_task,
    settle, write_pool,
};
use crate::{IssuedKind, LeaseIssue, LeaseRecord, MAX_PAGE, StoreError, sql};

fn record<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("{what} record: {e}")))
}

/// [`crate::Store::create_engine`].
pub(crate) async fn create_engine<B>(
    backend: &B,
    engine: &Engine,
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        sqlx::query(sql::INSERT_ENGINE)
            .bind(engine.name.as_str().to_owned())
            .bind(record(engine, "engine")?)
            .execute(&mut *tx)
            .await
            .map_err(on_unique("an engine of that name exists"))?;
        Ok(())
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// [`crate::Store::create_role_template`].
pub(crate) async fn create_role_template<B>(
    backend: &B,
    template: &RoleTemplate,
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        sqlx::query(sql::INSERT_ENGINE_ROLE)
            .bind(template.engine.as_str().to_owned())
            .bind(template.name.as_str().to_owned())
            .bind(record(template, "role template")?)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound { what: "engine" }
                } else {
                    on_unique("the engine has a role of that name")(e)
                }
            })?;
        Ok(())
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// One JSON record by a query over `keys`.
pub(crate) async fn read_record<B, T>(
    backend: &B,
    statement: &'static str,
    keys: &[&str],
    what: &str,
) -> Result<Option<T>, StoreError>
where
    B: Backend,
    T: serde::de::DeserializeOwned,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut query = sqlx::query_scalar::<B::Db, String>(statement);
    for key in keys {
        query = query.bind((*key).to_owned());
    }
    query
        .fetch_optional(backend.reads())
        .await
        .map_err(classify)?
        .map(|r| from_record(&r, what))
        .transpose()
}

/// Every JSON record a query over `keys` (then the page size) returns.
pub(crate) async fn read_records<B, T>(
    backend: &B,
    statement: &'static str,
    keys: &[&str],
    what: &str,
) -> Result<Vec<T>, StoreError>
where
    B: Backend,
    T: serde::de::DeserializeOwned,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut query = sqlx::query_scalar::<B::Db, String>(statement);
    for key in keys {
        query = query.bind((*key).to_owned());
    }
    query
        .bind(i64::from(MAX_PAGE))
        .fetch_all(backend.reads())
        .await
        .map_err(classify)?
        .iter()
        .map(|r| from_record(r, what))
        .collect()
}

/// [`crate::Store::issue_lease`].
pub(crate) async fn issue<B>(
    backend: &B,
    issue: &LeaseIssue,
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
    CredentialRow: for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
    TaskRow: for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
{
    let credential = &issue.credential;
    let now = credential.issued_at;
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        if credential.kind != IssuedKind::Lease {
            return Err(StoreError::Conflict {
                reason: "a lease is a credential of kind lease",
            });
        }
        require_credentials_allowed::<B>(&mut tx, &credential.agent).await?;
        let parent_id = credential.parent.clone().ok_or(StoreError::Conflict {
            reason: "a lease needs the task token it was asked with",
        })?;
        // `FOR SHARE` where a cascade step takes no head lock (PostgreSQL): a step marking the
        // token then waits for this write, or this write reads the token revoked.
        let parent = sqlx::query_as::<B::Db, CredentialRow>(B::PARENT_READS.credential())
            .bind(parent_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .map(CredentialRow::into_credential)
            .transpose()?;
        let live = parent.filter(|p| {
            p.revoked_at.is_none()
                && p.expires_at > now
                && p.kind == IssuedKind::AccessToken
                && p.agent == credential.agent
                && p.task_id.is_some()
                && p.task_id == credential.task_id
        });
        let Some(parent) = live else {
            return Err(StoreError::Conflict {
                reason: "the task token is revoked, expired, unknown or another's",
            });
        };
        if credential.expires_at > parent.expires_at {
            return Err(StoreError::Conflict {
                reason: "a lease may not outlive its task token",
            });
        }
        let task_id = parent.task_id.as_deref().unwrap_or_default();
        require_open_task::<B>(&mut tx, task_id, now, sql::SELECT_TASK).await?;
        insert_credential(&mut *tx, credential).await?;
        sqlx::query(sql::INSERT_LEASE)
            .bind(credential.id.clone())
            .bind(issue.engine.as_str().to_owned())
            .bind(issue.role.as_str().to_owned())
            .bind(issue.db_role.clone())
            .bind(rows::to_ms(credential.expires_at))
            .bind(issue.holder.clone())
            .bind(rows::to_ms(issue.claimed_until))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound { what: "engine" }
                } else {
                    on_unique("lease role already used")(e)
                }
            })?;
        Ok(())
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// [`crate::Store::renew_lease`].
pub(crate) async fn renew<B>(
    backend: &B,
    id: &str,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
    CredentialRow: for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
{
    let gone = || StoreError::Conflict {
        reason: "the lease is revoked, expired or ended",
    };
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        let lease = sqlx::query_as::<B::Db, CredentialRow>(sql::SELECT_CREDENTIAL)
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .map(CredentialRow::into_credential)
            .transpose()?
            .ok_or(StoreError::NotFound { what: "lease" })?;
        let parent = match lease.parent {
            Some(parent) => sqlx::query_as::<B::Db, CredentialRow>(sql::SELECT_CREDENTIAL)
                .bind(parent)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .map(CredentialRow::into_credential)
                .transpose()?,
            None => None,
        };
        if !parent.is_some_and(|p| p.revoked_at.is_none() && p.expires_at >= expires_at) {
            return Err(StoreError::Conflict {
                reason: "the task token is revoked or expires before the renewed lease would",
            });
        }
        sqlx::query_scalar::<B::Db, String>(sql::RENEW_LEASE_CREDENTIAL)
            .bind(id.to_owned())
            .bind(rows::to_ms(expires_at))
            .bind(rows::to_ms(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .ok_or_else(gone)?;
        sqlx::query_scalar::<B::Db, String>(sql::RENEW_LEASE)
            .bind(id.to_owned())
            .bind(rows::to_ms(expires_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .ok_or_else(gone)?;
        Ok(())
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// Leases a query returns, bound to `binds` (text) then `numbers`.
pub(crate) async fn read_leases<B>(
    backend: &B,
    statement: &'static str,
    binds: &[&str],
    numbers: &[i64],
) -> Result<Vec<LeaseRecord>, StoreError>
where
    B: Backend,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    LeaseRow: for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
{
    let mut query = sqlx::query_as::<B::Db, LeaseRow>(statement);
    for value in binds {
        query = query.bind((*value).to_owned());
    }
    for value in numbers {
        query = query.bind(*value);
    }
    query
        .fetch_all(backend.reads())
        .await
        .map_err(classify)?
        .into_iter()
        .map(LeaseRow::into_lease)
        .collect()
}

/// [`crate::Store::end_lease`].
pub(crate) async fn end<B>(
    backend: &B,
    id: &str,
    holder: &str,
    now: OffsetDateTime,
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        sqlx::query_scalar::<B::Db, String>(sql::END_LEASE)
            .bind(id.to_owned())
            .bind(holder.to_owned())
            .bind(rows::to_ms(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .map(|_| ())
            .ok_or(StoreError::Conflict {
                reason: "the lease is ended or claimed by another replica",
            })
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// A claim statement (claim, release, fail) bound to `text` then `numbers` then `tail`;
/// whether it changed the row.
pub(crate) async fn claim_step<B>(
    backend: &B,
    statement: &'static str,
    text: &[&str],
    numbers: &[i64],
    tail: Option<&str>,
) -> Result<bool, StoreError>
where
    B: Backend,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let changed = claim_returning(backend, statement, text, numbers, tail).await?;
    Ok(changed.is_some())
}

/// [`claim_step`], with the text the statement returns when it changed the row (claims of
/// leases and of recertification work).
pub(crate) async fn claim_returning<B>(
    backend: &B,
    statement: &'static str,
    text: &[&str],
    numbers: &[i64],
    tail: Option<&str>,
) -> Result<Option<String>, StoreError>
where
    B: Backend,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut query = sqlx::query_scalar::<B::Db, String>(statement);
    for value in text {
        query = query.bind((*value).to_owned());
    }
    for value in numbers {
        query = query.bind(*value);
    }
    if let Some(value) = tail {
        query = query.bind(value.to_owned());
    }
    query
        .fetch_optional(write_pool(backend)?)
        .await
        .map_err(classify)
}
