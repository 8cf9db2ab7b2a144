//! Transactions whose end is certain, on both backends.
//!
//! sqlx's own `Transaction` keeps a per-connection depth counter that it only lowers when
//! `COMMIT` or `ROLLBACK` succeeds. After a failed `COMMIT` (a full disk: SQLite may already
//! have rolled back), the `ROLLBACK` it sends on drop fails too, the counter stays at one, and
//! the pooled connection's next `BEGIN` silently becomes a `SAVEPOINT` nested in a transaction
//! that is never committed: every later write is acknowledged and lost. [`Tx`] does not use
//! that counter. It sends `BEGIN`, `COMMIT` and `ROLLBACK` itself, and a connection whose
//! transaction did not end cleanly — `BEGIN`, `COMMIT` or `ROLLBACK` failed, or the `Tx` was
//! dropped while open (an early return, a cancelled future) — is closed instead of going back
//! to the pool. Closing it ends whatever the database still holds open (SQLite and PostgreSQL
//! both roll back a connection's open transaction when it closes), and the pool opens a fresh
//! connection for the next caller, so the store recovers by itself once the database accepts
//! writes again.
//!
//! This module owns the transaction protocol only; what a transaction does is `engine`'s.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor as _, Pool, Postgres, Sqlite};

use crate::StoreError;
use crate::errors::classify;

/// A boxed future that may move between threads.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A database whose connections run a transaction-control statement.
pub(crate) trait Control: Database {
    /// Runs `statement` (`BEGIN …`, `COMMIT`, `ROLLBACK`) on `conn`.
    fn control<'c>(
        conn: &'c mut Self::Connection,
        statement: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
}

impl Control for Sqlite {
    fn control<'c>(
        conn: &'c mut Self::Connection,
        statement: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move { conn.execute(statement).await.map(drop) })
    }
}

impl Control for Postgres {
    fn control<'c>(
        conn: &'c mut Self::Connection,
        statement: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move { conn.execute(statement).await.map(drop) })
    }
}

/// One database transaction on a pooled connection.
pub(crate) struct Tx<DB: Database> {
    conn: PoolConnection<DB>,
    /// Whether the transaction may still be open; cleared only by a successful end.
    open: bool,
}

impl<DB: Control> Tx<DB> {
    /// Takes a connection from `pool` and starts a transaction on it with `begin` (e.g.
    /// `BEGIN IMMEDIATE`). A connection whose `BEGIN` failed is closed.
    pub(crate) async fn begin(pool: &Pool<DB>, begin: &'static str) -> Result<Self, StoreError> {
        let conn = pool.acquire().await.map_err(classify)?;
        // Open from here on: if `BEGIN` fails, or this future is dropped while it runs, the
        // connection's state is unknown and `Drop` closes it.
        let mut tx = Self { conn, open: true };
        DB::control(&mut tx.conn, begin).await.map_err(classify)?;
        Ok(tx)
    }

    /// Commits. On failure the transaction's fate may be unknown to this connection, so the
    /// connection is closed; callers that must know whether it committed look for what it
    /// wrote on another connection.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.end("COMMIT").await
    }

    /// Rolls back. On failure the connection is closed, which ends the transaction.
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, statement: &'static str) -> Result<(), StoreError> {
        DB::control(&mut self.conn, statement)
            .await
            .map_err(classify)?;
        self.open = false;
        Ok(())
    }
}

impl<DB: Database> Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if self.open {
            // Never hand a connection with a transaction of unknown state to the next caller.
            self.conn.close_on_drop();
        }
    }
}
