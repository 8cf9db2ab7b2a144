//! The store's side of the audit Merkle tree log: every column of the audit rows (the tree's
//! entries), the checkpoint key and the signed checkpoints. Nothing here hashes or signs; the
//! server builds the tree and signs, `aims-core::tlog` defines the hashing.
//!
//! Checkpoints and the key are written outside the audit-head lock: they describe the log
//! and change no state a request depends on, and a duplicate write is a no-op (the first key
//! and the first note of a size stay).

use aims_core::audit::AuditEntry;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::errors::classify;
use crate::rows::{self, AuditEntryRow, CheckpointRow, LogKeyRow};
use crate::write::{Backend, write_pool};
use crate::{MAX_PAGE, StoreError, StoredCheckpoint, StoredLogKey, sql};

/// [`crate::Store::audit_entries`].
pub(crate) async fn entries<B>(
    backend: &B,
    after: u64,
    limit: u32,
) -> Result<Vec<AuditEntry>, StoreError>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
{
    sqlx::query_as::<B::Db, AuditEntryRow>(sql::SELECT_AUDIT_ENTRIES)
        .bind(rows::audit_after(after))
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(backend.reads())
        .await
        .map_err(classify)?
        .into_iter()
        .map(AuditEntryRow::into_entry)
        .collect()
}

/// [`crate::Store::log_key`].
pub(crate) async fn log_key<B>(backend: &B) -> Result<Option<StoredLogKey>, StoreError>
where
    B: Backend,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Vec<u8>: Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
{
    sqlx::query_as::<B::Db, LogKeyRow>(sql::SELECT_LOG_KEY)
        .fetch_optional(backend.reads())
        .await
        .map_err(classify)?
        .map(LogKeyRow::into_key)
        .transpose()
}

/// [`crate::Store::create_log_key`].
pub(crate) async fn create_log_key<B>(
    backend: &B,
    key: &StoredLogKey,
) -> Result<StoredLogKey, StoreError>
where
    B: Backend,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
{
    sqlx::query(sql::INSERT_LOG_KEY)
        .bind(key.name.clone())
        .bind(key.public_key.clone())
        .bind(key.sealed_private_key.clone())
        .bind(rows::to_ms(key.created_at))
        .execute(write_pool(backend)?)
        .await
        .map_err(classify)?;
    // Read on the write pool: the key just written (ours or a racing server's) is there.
    sqlx::query_as::<B::Db, LogKeyRow>(sql::SELECT_LOG_KEY)
        .fetch_optional(backend.writes())
        .await
        .map_err(classify)?
        .map(LogKeyRow::into_key)
        .transpose()?
        .ok_or_else(|| StoreError::Corrupt("the log key vanished once written".to_owned()))
}

/// [`crate::Store::add_checkpoint`].
pub(crate) async fn add_checkpoint<B>(
    backend: &B,
    checkpoint: &StoredCheckpoint,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
{
    sqlx::query(sql::INSERT_CHECKPOINT)
        .bind(rows::to_i64(checkpoint.tree_size)?)
        .bind(hex_of(&checkpoint.root))
        .bind(checkpoint.note.clone())
        .bind(rows::to_ms(checkpoint.created_at))
        .execute(write_pool(backend)?)
        .await
        .map_err(classify)?;
    Ok(())
}

fn hex_of(hash: &aims_core::tlog::Hash) -> String {
    aims_core::audit::ChainHash(*hash).to_hex()
}

/// [`crate::Store::latest_checkpoint`], [`crate::Store::checkpoint`] and
/// [`crate::Store::checkpoints`]: `size` picks one tree, else `after`/`limit` a page, else
/// the largest.
pub(crate) async fn checkpoints<B>(
    backend: &B,
    query: CheckpointQuery,
) -> Result<Vec<StoredCheckpoint>, StoreError>
where
    B: Backend,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    for<'c> &'c sqlx::Pool<B::Db>: Executor<'c, Database = B::Db>,
{
    let statement = match query {
        CheckpointQuery::Latest => {
            sqlx::query_as::<B::Db, CheckpointRow>(sql::SELECT_LATEST_CHECKPOINT)
        }
        CheckpointQuery::Size(size) => {
            sqlx::query_as::<B::Db, CheckpointRow>(sql::SELECT_CHECKPOINT).bind(rows::to_i64(size)?)
        }
        CheckpointQuery::After { after, limit } => {
            sqlx::query_as::<B::Db, CheckpointRow>(sql::SELECT_CHECKPOINTS)
                .bind(rows::audit_after(after))
                .bind(i64::from(limit.min(MAX_PAGE)))
        }
    };
    statement
        .fetch_all(backend.reads())
        .await
        .map_err(classify)?
        .into_iter()
        .map(CheckpointRow::into_checkpoint)
        .collect()
}

/// Which checkpoints [`checkpoints`] reads.
pub(crate) enum CheckpointQuery {
    /// The largest tree's.
    Latest,
    /// The tree of this size's.
    Size(u64),
    /// A page of trees larger than `after`.
    After {
        /// Exclusive lower bound of the size.
        after: u64,
        /// At most this many (capped at [`MAX_PAGE`]).
        limit: u32,
    },
}
