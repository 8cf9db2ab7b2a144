//! The store's side of brokered secrets: each change one transaction under the write lock with
//! its audit event. Values arrive sealed and leave sealed; the store never sees one in clear.

use aims_core::audit::AuditEvent;
use aims_core::secret::Secret;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::errors::{classify, on_unique};
use crate::rows::SecretRow;
use crate::write::{Backend, Conn, WriteTx, begin_write, settle};
use crate::{StoreError, sql};

/// The record of `secret`, as stored.
fn record(secret: &Secret) -> Result<String, StoreError> {
    serde_json::to_string(secret).map_err(|e| StoreError::Corrupt(format!("secret record: {e}")))
}

/// Stores `sealed_value` as `secret`'s version `secret.version`, inside `tx`.
async fn insert_version<B>(
    tx: &mut WriteTx<B::Db>,
    secret: &Secret,
    sealed_value: &[u8],
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db>,
{
    sqlx::query(sql::INSERT_SECRET_VERSION)
        .bind(secret.name.as_str().to_owned())
        .bind(i64::from(secret.version))
        .bind(sealed_value.to_vec())
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}

/// [`crate::Store::create_secret`].
pub(crate) async fn create<B>(
    backend: &B,
    secret: &Secret,
    sealed_value: &[u8],
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        sqlx::query(sql::INSERT_SECRET)
            .bind(secret.name.as_str().to_owned())
            .bind(i64::from(secret.version))
            .bind(record(secret)?)
            .execute(&mut *tx)
            .await
            .map_err(on_unique("a secret of that name exists"))?;
        insert_version::<B>(&mut tx, secret, sealed_value).await
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// [`crate::Store::rotate_secret`].
pub(crate) async fn rotate<B>(
    backend: &B,
    secret: &Secret,
    sealed_value: &[u8],
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let previous = i64::from(secret.version) - 1;
    let mut tx = begin_write(backend).await?;
    let outcome: Result<(), StoreError> = async {
        let moved = sqlx::query_scalar::<B::Db, String>(sql::UPDATE_SECRET)
            .bind(secret.name.as_str().to_owned())
            .bind(i64::from(secret.version))
            .bind(record(secret)?)
            .bind(previous)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        if moved.is_none() {
            let exists = sqlx::query_scalar::<B::Db, String>(sql::SELECT_SECRET)
                .bind(secret.name.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            return Err(match exists {
                None => StoreError::NotFound { what: "secret" },
                Some(_) => StoreError::Conflict {
                    reason: "the secret was rotated meanwhile",
                },
            });
        }
        insert_version::<B>(&mut tx, secret, sealed_value).await
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// [`crate::Store::delete_secret`].
pub(crate) async fn delete<B>(backend: &B, name: &str, event: &AuditEvent) -> Result<(), StoreError>
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
        sqlx::query(sql::DELETE_SECRET_VERSIONS)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query_scalar::<B::Db, String>(sql::DELETE_SECRET)
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .map(|_| ())
            .ok_or(StoreError::NotFound { what: "secret" })
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// [`crate::Store::secret`] and [`crate::Store::secret_value`]: the secret and, with
/// `with_value`, its current version's sealed value.
pub(crate) async fn read<B>(
    backend: &B,
    name: &str,
    with_value: bool,
) -> Result<Option<(Secret, Option<Vec<u8>>)>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Vec<u8>: Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    // One snapshot, so the value read is the version the record names.
    let mut tx = backend.begin_snapshot().await?;
    let found: Result<_, StoreError> = async {
        let Some(row) = sqlx::query_as::<B::Db, SecretRow>(sql::SELECT_SECRET)
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        let secret = row.into_secret()?;
        let value = if with_value {
            let sealed = sqlx::query_scalar::<B::Db, Vec<u8>>(sql::SELECT_SECRET_VALUE)
                .bind(name.to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("secret {name} has no current value"))
                })?;
            Some(sealed)
        } else {
            None
        };
        Ok(Some((secret, value)))
    }
    .await;
    let _ = tx.rollback().await;
    found
}
