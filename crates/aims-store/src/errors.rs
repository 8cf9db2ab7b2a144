//! Classification of database errors into [`StoreError`], shared by both backends.
//!
//! This is the one place that looks at driver errors. It decides by error kind and code,
//! never by matching message text, and it must never put a connection URL into a message:
//! the URL may carry a password.

use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

use crate::StoreError;

/// Classifies a driver error. Unique violations become a generic `Conflict`; call sites that
/// know what was duplicated use [`on_unique`] instead.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => classify_database(db.as_ref()),
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("database IO error: {e}")),
        sqlx::Error::Tls(e) => StoreError::Unavailable(format!("database TLS error: {e}")),
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable("timed out waiting for a database connection".to_owned())
        }
        sqlx::Error::PoolClosed => {
            StoreError::Unavailable("the database connection pool is closed".to_owned())
        }
        sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable("the database worker thread stopped".to_owned())
        }
        sqlx::Error::Protocol(m) => {
            StoreError::Unavailable(format!("database protocol error: {m}"))
        }
        // The source may quote the URL it failed to parse, so none of it is shown.
        sqlx::Error::Configuration(_) => {
            StoreError::Unavailable("invalid database configuration".to_owned())
        }
        sqlx::Error::Migrate(m) => classify_migrate(*m),
        e @ (sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. }) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(format!("database error: {e}")),
    }
}

/// Like [`classify`], but a unique violation becomes `Conflict { reason }`.
pub(crate) fn on_unique(reason: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| {
        if is_unique_violation(&err) {
            StoreError::Conflict { reason }
        } else {
            classify(err)
        }
    }
}

/// Whether `err` is a unique or primary-key violation.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// Whether `err` is a foreign-key violation.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_foreign_key_violation())
}

/// Classifies migration failures: a database that is ahead of or different from this
/// build's migrations is `Corrupt` (an operator must act); failing to run one is classified
/// like any other error.
pub(crate) fn classify_migrate(err: MigrateError) -> StoreError {
    match err {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => classify(e),
        MigrateError::VersionMissing(v) => StoreError::Corrupt(format!(
            "the database has migration {v}, which this build does not know; \
             it was written by a newer AIMS"
        )),
        MigrateError::VersionMismatch(v) => StoreError::Corrupt(format!(
            "migration {v} was changed after it was applied to this database"
        )),
        MigrateError::Dirty(v) => StoreError::Corrupt(format!(
            "migration {v} failed partway; the database needs repair"
        )),
        e => StoreError::Unavailable(format!("cannot migrate the database: {e}")),
    }
}

fn classify_database(db: &dyn DatabaseError) -> StoreError {
    match db.kind() {
        ErrorKind::UniqueViolation => {
            return StoreError::Conflict {
                reason: "duplicate record",
            };
        }
        ErrorKind::ForeignKeyViolation => {
            return StoreError::Conflict {
                reason: "referenced record does not exist",
            };
        }
        _ => {}
    }
    if is_corruption(db) {
        return StoreError::Corrupt(format!("database reports corruption: {}", db.message()));
    }
    // Busy, locked, disk full, read-only, IO errors, lost connections, shutdowns,
    // serialization failures: the operation could not be done now.
    let code = db.code().unwrap_or_default();
    StoreError::Unavailable(format!("database error {code}: {}", db.message()))
}

/// SQLite `SQLITE_CORRUPT` / `SQLITE_NOTADB`, PostgreSQL class `XX001` / `XX002`.
fn is_corruption(db: &dyn DatabaseError) -> bool {
    const SQLITE_CORRUPT: i32 = 11;
    const SQLITE_NOTADB: i32 = 26;
    if let Some(e) = db.try_downcast_ref::<SqliteError>() {
        // The code is the extended result code; its low byte is the primary code.
        let primary = e
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        return matches!(primary, Some(SQLITE_CORRUPT | SQLITE_NOTADB));
    }
    if let Some(e) = db.try_downcast_ref::<PgDatabaseError>() {
        return matches!(e.code(), "XX001" | "XX002");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            classify(sqlx::Error::Io(io)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
    }

    #[test]
    fn configuration_errors_hide_their_source() {
        let source = "postgres://user:hunter2@db/aims".to_owned();
        let err = classify(sqlx::Error::Configuration(source.into()));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn undecodable_rows_are_corrupt() {
        assert!(matches!(
            classify(sqlx::Error::ColumnNotFound("record".to_owned())),
            StoreError::Corrupt(_)
        ));
    }
}
