//! The store's side of sightings: a report is one transaction with one audit event, however
//! many refused callers it counts; each reporter keeps at most
//! [`aims_core::sighting::MAX_PER_REPORTER`] distinct sightings.

use aims_core::audit::AuditEvent;
use aims_core::id::ResourceServerName;
use aims_core::sighting::{MAX_PER_REPORTER, Sighting};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::errors::classify;
use crate::rows::{self, to_i64};
use crate::write::{Backend, Conn, begin_write, settle};
use crate::{StoreError, sql};

/// [`crate::Store::report_sightings`].
pub(crate) async fn report<B>(
    backend: &B,
    reporter: &ResourceServerName,
    sightings: &[Sighting],
    event: &AuditEvent,
) -> Result<u64, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome: Result<u64, StoreError> = async {
        let mut held = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_SIGHTINGS_OF)
            .bind(reporter.as_str().to_owned())
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        let mut accepted = 0;
        for s in sightings {
            let known = sqlx::query_scalar::<B::Db, String>(sql::SIGHTING_EXISTS)
                .bind(reporter.as_str().to_owned())
                .bind(s.source.clone())
                .bind(s.route.clone())
                .bind(s.user_agent.clone())
                .bind(s.reason.clone())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .is_some();
            if !known {
                if held >= to_i64(MAX_PER_REPORTER)? {
                    continue;
                }
                held += 1;
            }
            sqlx::query(sql::UPSERT_SIGHTING)
                .bind(reporter.as_str().to_owned())
                .bind(s.source.clone())
                .bind(s.route.clone())
                .bind(s.user_agent.clone())
                .bind(s.reason.clone())
                .bind(rows::to_ms(s.first_seen))
                .bind(rows::to_ms(s.last_seen))
                .bind(to_i64(s.count)?)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            accepted += 1;
        }
        Ok(accepted)
    }
    .await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}
