//! The one implementation of the [`Store`] semantics, generic over the database.
//!
//! Each backend supplies only what genuinely differs through [`Backend`]: its pools, how a
//! write transaction starts and takes the audit-head lock, how a batch of audit rows is
//! inserted, how a consistent read snapshot starts, and its health check. Everything else
//! (which checks a write makes, in which order, and that its audit event commits in the same
//! transaction) is written here once, so SQLite and PostgreSQL cannot drift apart. How a
//! write transaction begins, ends and is resolved after a failed `COMMIT` is
//! [`crate::write`]'s; approvals' writes are [`crate::approvals`]'.

use aims_core::agent::Agent;
use aims_core::approval::{ApprovalRequest, ApprovalVerdict, BoundCall};
use aims_core::audit::{AuditEntry, AuditEvent, AuditRecord, ChainHead};
use aims_core::credential::CredentialHash;
use aims_core::id::{
    AgentName, ApprovalId, EngineName, ResourceServerName, RoleName, SecretName, TrustDomain,
    UserName,
};
use aims_core::lease::{Engine, RoleTemplate};
use aims_core::secret::Secret;
use aims_core::sighting::Sighting;
use aims_core::task::{Task, TaskState};
use aims_core::user::{Role, User};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use time::OffsetDateTime;

use crate::approvals;
use crate::errors::{classify, is_foreign_key_violation, on_unique};
use crate::leases;
use crate::queue;
use crate::revocation::{Reach, begin_revoking, finish_cascade, revoke_in};
use crate::rows::{
    self, AgentColumns, AgentRow, ApprovalRow, AuditRow, CredentialRow, HeadRow, JoinTokenRow,
    KeyRow, Listing, PolicySetRow, RegistryRow, ResourceServerRow, RevocationRow, SecretRow,
    SightingRow, SnapshotRow, SsfPendingRow, SsfStreamColumns, SsfStreamRow, SsfVerificationRow,
    TaskRow, UserRow,
};
use crate::secrets;
use crate::sightings;
use crate::tlog::{self, CheckpointQuery};
use crate::write::{
    Backend, Conn, WriteTx, begin_write, begin_write_alone, insert_credential, insert_task,
    require_credentials_allowed, settle, settle_at, write_pool,
};
use crate::{
    AccessTokenIssue, AgentActivity, AgentFilter, AttestationRecord, AuditKey, Initialization,
    IssuedCredential, JoinTokenRecord, JoinTokenUse, KeySet, KeyState, LeaseIssue, LeaseRecord,
    MAX_PAGE, MAX_SSF_STREAMS_PER_RECEIVER, MAX_SSF_VERIFICATIONS_PENDING, PolicySetVersion,
    PostureSnapshot, RecertificationStep, RegistryCursor, RegistryEntry, ResourceServer,
    Revocation, RevocationTarget, SsfPending, SsfReceiver, SsfStatus, SsfStream, SsfVerification,
    Store, StoreError, StoredCheckpoint, StoredKey, StoredLogKey, TaskFilter, WriteObserver, sql,
};

/// A `meta` value.
async fn meta<'c, DB, E>(conn: E, key: &str) -> Result<Option<String>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    sqlx::query_scalar::<DB, String>(sql::SELECT_META)
        .bind(key.to_owned())
        .fetch_optional(conn)
        .await
        .map_err(classify)
}

/// Whether a row answers `sql` bound to `key` (existence checks select one text column).
async fn exists<'c, DB, E>(conn: E, sql: &'static str, key: &str) -> Result<bool, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    let found = sqlx::query_scalar::<DB, String>(sql)
        .bind(key.to_owned())
        .fetch_optional(conn)
        .await
        .map_err(classify)?;
    Ok(found.is_some())
}

async fn insert_key<'c, DB, E>(conn: E, key: &StoredKey, state: KeyState) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(sql::INSERT_KEY)
        .bind(key.kid.clone())
        .bind(key.alg.clone())
        .bind(state.as_str().to_owned())
        .bind(rows::to_ms(key.created_at))
        .bind(key.public_jwk.clone())
        .bind(key.sealed_private_key.clone())
        .execute(conn)
        .await
        .map_err(on_unique("signing key id already used"))?;
    Ok(())
}

async fn insert_join_token<'c, DB, E>(conn: E, token: &JoinTokenRecord) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(sql::INSERT_JOIN_TOKEN)
        .bind(token.hash.to_hex())
        .bind(token.agent.as_str().to_owned())
        .bind(rows::to_ms(token.expires_at))
        .execute(conn)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound { what: "agent" }
            } else {
                on_unique("join token already exists")(e)
            }
        })?;
    Ok(())
}

/// Every backend is a [`Store`]. The bounds only say that the backend's connections run
/// queries and that the column types used here (text, 64-bit integers, bytes) map to its
/// types; SQLite and PostgreSQL both meet them.
#[async_trait]
impl<B> Store for B
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
    async fn ping(&self) -> Result<(), StoreError> {
        Backend::ping(self).await?;
        sqlx::query(sql::HEARTBEAT)
            .execute(write_pool(self)?)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn trust_domain(&self) -> Result<Option<TrustDomain>, StoreError> {
        meta(self.reads(), rows::META_TRUST_DOMAIN)
            .await?
            .map(|v| rows::parse_trust_domain(&v))
            .transpose()
    }

    async fn initialize(
        &self,
        init: &Initialization,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            if meta(&mut *tx, rows::META_TRUST_DOMAIN).await?.is_some() {
                return Err(StoreError::Conflict {
                    reason: "store already initialized",
                });
            }
            for (key, value) in [
                (rows::META_TRUST_DOMAIN, init.trust_domain.as_str()),
                (rows::META_KEY_SEQUENCE, "1"),
            ] {
                sqlx::query(sql::INSERT_META)
                    .bind(key.to_owned())
                    .bind(value.to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(on_unique("store already initialized"))?;
            }
            for key in &init.keys {
                insert_key(&mut *tx, key, key.state).await?;
            }
            insert_user(&mut *tx, &init.admin, &init.admin_credential).await?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn create_agent(
        &self,
        agent: &Agent,
        join_token: &JoinTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        rows::check_token_owner(agent, join_token)?;
        let cols = AgentColumns::of(agent)?;
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            sqlx::query(sql::INSERT_AGENT)
                .bind(cols.name)
                .bind(cols.owner)
                .bind(cols.environment)
                .bind(cols.state.to_owned())
                .bind(cols.revision)
                .bind(cols.created_at_ms)
                .bind(cols.updated_at_ms)
                .bind(cols.record)
                .bind(rows::change_seq(&tx.head())?)
                .execute(&mut *tx)
                .await
                .map_err(on_unique("agent name already registered"))?;
            insert_join_token(&mut *tx, join_token).await?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        sqlx::query_as::<B::Db, AgentRow>(sql::SELECT_AGENT)
            .bind(name.as_str().to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(AgentRow::into_agent)
            .transpose()
    }

    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError> {
        let listing = Listing::of(filter);
        let mut query = sqlx::query_as::<B::Db, AgentRow>(&listing.sql);
        for value in listing.binds {
            query = query.bind(value);
        }
        query
            .bind(listing.limit)
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(AgentRow::into_agent)
            .collect()
    }

    async fn update_agent(
        &self,
        agent: &Agent,
        expected_revision: u64,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let expected = rows::revision_step(agent, expected_revision)?;
        let cols = AgentColumns::of(agent)?;
        // A change to a state that may not hold credentials revokes the agent's.
        let mut tx = if agent.state.may_hold_credentials() {
            begin_write(self).await?
        } else {
            begin_revoking(self).await?
        };
        let outcome: Result<_, StoreError> = async {
            let previous = sqlx::query_scalar::<B::Db, String>(sql::AGENT_STATE)
                .bind(agent.name.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            let changed = sqlx::query_scalar::<B::Db, String>(sql::UPDATE_AGENT)
                .bind(cols.name)
                .bind(cols.owner)
                .bind(cols.environment)
                .bind(cols.state.to_owned())
                .bind(cols.revision)
                .bind(cols.updated_at_ms)
                .bind(cols.record)
                .bind(expected)
                .bind(rows::change_seq(&tx.head())?)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            if changed.is_none() {
                let found = exists(&mut *tx, sql::AGENT_EXISTS, agent.name.as_str()).await?;
                return Err(rows::stale_agent(found));
            }
            if rows::is_release(previous.as_deref(), agent.state) {
                sqlx::query(sql::DELETE_SNAPSHOT)
                    .bind(agent.name.as_str().to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            if !agent.state.may_hold_credentials() {
                // Its open tasks end with it: a resumed agent starts new ones.
                sqlx::query(sql::CLOSE_AGENT_TASKS)
                    .bind(agent.name.as_str().to_owned())
                    .bind(TaskState::Revoked.as_str().to_owned())
                    .bind(rows::to_ms(agent.updated_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                revoke_in::<B>(
                    &mut tx,
                    &RevocationTarget::Agent(agent.name.clone()),
                    &rows::revocation_reason(agent.state),
                    agent.updated_at,
                    Reach::Closure,
                )
                .await?;
            }
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn replace_join_token(
        &self,
        join_token: &JoinTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            if !exists(&mut *tx, sql::AGENT_EXISTS, join_token.agent.as_str()).await? {
                return Err(StoreError::NotFound { what: "agent" });
            }
            sqlx::query(sql::DELETE_UNUSED_JOIN_TOKENS)
                .bind(join_token.agent.as_str().to_owned())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            insert_join_token(&mut *tx, join_token).await?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn consume_join_token(
        &self,
        hash: &CredentialHash,
        key_thumbprint: &str,
        now: OffsetDateTime,
    ) -> Result<JoinTokenUse, StoreError> {
        // A single conditional UPDATE: of concurrent callers with different keys, exactly one
        // sees the row unused and binds it to its key.
        let now_ms = rows::to_ms(now);
        let consumed = sqlx::query_scalar::<B::Db, String>(sql::CONSUME_JOIN_TOKEN)
            .bind(hash.to_hex())
            .bind(now_ms)
            .bind(key_thumbprint.to_owned())
            .fetch_optional(write_pool(self)?)
            .await
            .map_err(classify)?;
        if let Some(agent) = consumed {
            return Ok(JoinTokenUse::Consumed(rows::parse_agent_name(&agent)?));
        }
        let row = sqlx::query_as::<B::Db, JoinTokenRow>(sql::SELECT_JOIN_TOKEN)
            .bind(hash.to_hex())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?;
        rows::unconsumed_join_token(row, now_ms)
    }

    async fn consume_nonce(
        &self,
        hash: &CredentialHash,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let consumed = sqlx::query_scalar::<B::Db, String>(sql::CONSUME_NONCE)
            .bind(hash.to_hex())
            .bind(rows::to_ms(expires_at))
            .bind(rows::to_ms(now))
            .fetch_optional(write_pool(self)?)
            .await
            .map_err(classify)?;
        Ok(consumed.is_some())
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        let now_ms = rows::to_ms(now);
        // Deletes free room: they run below the free-space reserve too.
        for statement in [sql::PURGE_NONCES, sql::PURGE_DPOP_PROOFS] {
            sqlx::query(statement)
                .bind(now_ms)
                .execute(self.writes())
                .await
                .map_err(classify)?;
        }
        self.forget_taken(now - queue::TAKEN_KEPT).await
    }

    async fn posture_snapshot(
        &self,
        agent: &AgentName,
    ) -> Result<Option<PostureSnapshot>, StoreError> {
        sqlx::query_as::<B::Db, SnapshotRow>(sql::SELECT_SNAPSHOT)
            .bind(agent.as_str().to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(SnapshotRow::into_snapshot)
            .transpose()
    }

    async fn registry_changes(
        &self,
        after: &RegistryCursor,
        limit: u32,
    ) -> Result<Vec<RegistryEntry>, StoreError> {
        // Nothing is numbered past i64::MAX: a cursor beyond it has nothing after it.
        let change = i64::try_from(after.change).unwrap_or(i64::MAX);
        sqlx::query_as::<B::Db, RegistryRow>(sql::REGISTRY_CHANGES)
            .bind(change)
            .bind(after.name.clone())
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(RegistryRow::into_entry)
            .collect()
    }

    async fn record_attestation(
        &self,
        record: &AttestationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let snapshot = &record.snapshot;
        let credential = &record.credential;
        let evidence = serde_json::to_string(&snapshot.evidence)
            .map_err(|e| StoreError::Corrupt(format!("evidence does not serialize: {e}")))?;
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            require_credentials_allowed::<B>(&mut tx, &snapshot.agent).await?;
            sqlx::query(sql::UPSERT_SNAPSHOT)
                .bind(snapshot.agent.as_str().to_owned())
                .bind(evidence)
                .bind(snapshot.digest.clone())
                .bind(snapshot.key_thumbprint.clone())
                .bind(rows::to_ms(snapshot.accepted_at))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            sqlx::query(sql::MARK_AGENT_CHANGED)
                .bind(snapshot.agent.as_str().to_owned())
                .bind(rows::change_seq(&tx.head())?)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            insert_credential(&mut *tx, credential).await?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn issued_credential(&self, id: &str) -> Result<Option<IssuedCredential>, StoreError> {
        sqlx::query_as::<B::Db, CredentialRow>(sql::SELECT_CREDENTIAL)
            .bind(id.to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(CredentialRow::into_credential)
            .transpose()
    }

    async fn create_user(
        &self,
        user: &User,
        credential: &CredentialHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            insert_user(&mut *tx, user, credential).await?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn user_by_credential(
        &self,
        credential: &CredentialHash,
    ) -> Result<Option<User>, StoreError> {
        sqlx::query_as::<B::Db, UserRow>(sql::SELECT_USER_BY_CREDENTIAL)
            .bind(credential.to_hex())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(UserRow::into_user)
            .transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        sqlx::query_as::<B::Db, UserRow>(sql::LIST_USERS)
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(UserRow::into_user)
            .collect()
    }

    async fn remove_user(&self, name: &UserName, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            let role = sqlx::query_scalar::<B::Db, String>(sql::SELECT_USER_ROLE)
                .bind(name.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .ok_or(StoreError::NotFound { what: "user" })?;
            if rows::parse_role(&role)? == Role::Admin {
                let admins = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_ADMINS)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                rows::check_admin_remains(admins)?;
            }
            sqlx::query(sql::DELETE_USER)
                .bind(name.as_str().to_owned())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn rotate_user_credential(
        &self,
        name: &UserName,
        credential: &CredentialHash,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            let changed = sqlx::query_scalar::<B::Db, String>(sql::ROTATE_USER_CREDENTIAL)
                .bind(name.as_str().to_owned())
                .bind(credential.to_hex())
                .bind(rows::to_ms(at))
                .fetch_optional(&mut *tx)
                .await
                .map_err(on_unique("credential already registered"))?;
            if changed.is_none() {
                return Err(StoreError::NotFound { what: "user" });
            }
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn keys(&self) -> Result<KeySet, StoreError> {
        // One snapshot, so the keys and the sequence belong to the same rotation.
        let mut tx = self.begin_snapshot().await?;
        let read: Result<_, StoreError> = async {
            let keys = sqlx::query_as::<B::Db, KeyRow>(sql::SELECT_KEYS)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?
                .into_iter()
                .map(KeyRow::into_key)
                .collect::<Result<Vec<_>, _>>()?;
            let sequence = meta(&mut *tx, rows::META_KEY_SEQUENCE).await?;
            Ok((keys, sequence))
        }
        .await;
        // A read-only snapshot: ending it cannot lose anything, and a failed end closes its
        // connection.
        let _ = tx.rollback().await;
        let (keys, sequence) = read?;
        Ok(KeySet {
            keys,
            sequence: rows::parse_sequence(sequence.as_deref())?,
        })
    }

    async fn rotate_keys(
        &self,
        new_next: &StoredKey,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            if exists(&mut *tx, sql::KID_EXISTS, &new_next.kid).await? {
                return Err(StoreError::Conflict {
                    reason: "signing key id already used",
                });
            }
            if !exists(&mut *tx, sql::KEY_IN_STATE, KeyState::Next.as_str()).await? {
                return Err(StoreError::NotFound {
                    what: "next signing key",
                });
            }
            for (from, to) in rows::KEY_ROTATION {
                sqlx::query(sql::MOVE_KEY_STATE)
                    .bind(from.as_str().to_owned())
                    .bind(to.as_str().to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            insert_key(&mut *tx, new_next, KeyState::Next).await?;
            let sequence = meta(&mut *tx, rows::META_KEY_SEQUENCE).await?;
            sqlx::query(sql::UPDATE_META)
                .bind(rows::META_KEY_SEQUENCE.to_owned())
                .bind(rows::next_sequence(sequence.as_deref())?)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn activate_policy_set(
        &self,
        set: &PolicySetVersion,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let files = serde_json::to_string(&set.files)
            .map_err(|e| StoreError::Corrupt(format!("policy files do not serialize: {e}")))?;
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            // Under the head lock, so two pushes cannot both take the next number.
            let active = sqlx::query_scalar::<B::Db, i64>(sql::MAX_POLICY_VERSION)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            if rows::to_i64(set.version)? != active.saturating_add(1) {
                return Err(StoreError::Conflict {
                    reason: "another policy version was pushed meanwhile",
                });
            }
            sqlx::query(sql::INSERT_POLICY_SET)
                .bind(rows::to_i64(set.version)?)
                .bind(files)
                .bind(set.created_by.clone())
                .bind(rows::to_ms(set.created_at))
                .execute(&mut *tx)
                .await
                .map_err(on_unique("policy version already stored"))?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn active_policy_version(&self) -> Result<u64, StoreError> {
        let version = sqlx::query_scalar::<B::Db, i64>(sql::MAX_POLICY_VERSION)
            .fetch_one(self.reads())
            .await
            .map_err(classify)?;
        u64::try_from(version).map_err(|_| StoreError::Corrupt("negative policy version".into()))
    }

    async fn policy_set(&self, version: u64) -> Result<Option<PolicySetVersion>, StoreError> {
        sqlx::query_as::<B::Db, PolicySetRow>(sql::SELECT_POLICY_SET)
            .bind(rows::to_i64(version)?)
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(PolicySetRow::into_policy_set)
            .transpose()
    }

    async fn policy_versions(&self, limit: u32) -> Result<Vec<PolicySetVersion>, StoreError> {
        sqlx::query_as::<B::Db, PolicySetRow>(sql::SELECT_POLICY_VERSIONS)
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(PolicySetRow::into_policy_set)
            .collect()
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<ChainHead, StoreError> {
        if events.is_empty() {
            return self.audit_head().await;
        }
        let tx = begin_write(self).await?;
        settle_at(self, tx, Ok(()), events)
            .await
            .map(|((), head)| head)
    }

    async fn queue_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        Backend::queue_audit(self, events).await
    }

    async fn sequence_audit(&self) -> Result<(), StoreError> {
        if !self.has_queued().await? {
            return Ok(());
        }
        // Alone: a batch opened earlier took only what was queued before it opened.
        let tx = begin_write_alone(self).await?;
        settle(self, tx, Ok(()), &[]).await
    }

    async fn audit_records(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        sqlx::query_as::<B::Db, AuditRow>(sql::SELECT_AUDIT)
            .bind(rows::audit_after(after))
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(AuditRow::into_record)
            .collect()
    }

    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        tlog::entries(self, after, limit).await
    }

    async fn log_key(&self) -> Result<Option<StoredLogKey>, StoreError> {
        tlog::log_key(self).await
    }

    async fn create_log_key(&self, key: &StoredLogKey) -> Result<StoredLogKey, StoreError> {
        tlog::create_log_key(self, key).await
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        tlog::add_checkpoint(self, checkpoint).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(tlog::checkpoints(self, CheckpointQuery::Latest)
            .await?
            .into_iter()
            .next())
    }

    async fn checkpoint(&self, tree_size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(tlog::checkpoints(self, CheckpointQuery::Size(tree_size))
            .await?
            .into_iter()
            .next())
    }

    async fn checkpoints(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        tlog::checkpoints(self, CheckpointQuery::After { after, limit }).await
    }

    async fn agent_activity(
        &self,
        name: &AgentName,
        spiffe_id: &str,
        now: OffsetDateTime,
    ) -> Result<AgentActivity, StoreError> {
        let last_seen: Option<i64> = sqlx::query_scalar::<B::Db, i64>(sql::SELECT_AGENT_LAST_SEEN)
            .bind(spiffe_id.to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?;
        let last_decision = sqlx::query_as::<B::Db, AuditRow>(sql::SELECT_AGENT_LAST_ACTION)
            .bind(spiffe_id.to_owned())
            .bind(aims_core::audit::action::DECISION.to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(AuditRow::into_record)
            .transpose()?;
        let counted: Vec<(String, i64)> =
            sqlx::query_as::<B::Db, (String, i64)>(sql::COUNT_LIVE_CREDENTIALS)
                .bind(name.as_str().to_owned())
                .bind(rows::to_ms(now))
                .fetch_all(self.reads())
                .await
                .map_err(classify)?;
        let open_tasks: i64 = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_ACTIVE_TASKS)
            .bind(name.as_str().to_owned())
            .fetch_one(self.reads())
            .await
            .map_err(classify)?;
        Ok(AgentActivity {
            last_seen: last_seen
                .map(|ms| rows::from_ms(ms, "audit_log.time_ms"))
                .transpose()?,
            live_credentials: counted
                .into_iter()
                .map(|(kind, n)| (kind, u64::try_from(n).unwrap_or(0)))
                .collect(),
            open_tasks: u64::try_from(open_tasks).unwrap_or(0),
            last_decision,
        })
    }

    async fn audit_records_of(
        &self,
        key: AuditKey<'_>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let (query, kind, value) = match key {
            AuditKey::Agent(spiffe_id) => (sql::SELECT_AGENT_AUDIT, None, spiffe_id),
            AuditKey::Task(task_id) => (sql::SELECT_TASK_AUDIT, None, task_id),
            AuditKey::Action(name) => (sql::SELECT_ACTION_AUDIT, None, name),
            AuditKey::Owner(owner) => (sql::SELECT_KEYED_AUDIT, Some("owner"), owner),
            AuditKey::Decision(decision) => (sql::SELECT_KEYED_AUDIT, Some("decision"), decision),
            AuditKey::Policy(policy) => (sql::SELECT_KEYED_AUDIT, Some("policy"), policy),
        };
        let mut statement = sqlx::query_as::<B::Db, AuditRow>(query);
        if let Some(kind) = kind {
            statement = statement.bind(kind.to_owned());
        }
        statement
            .bind(value.to_owned())
            .bind(rows::audit_after(after))
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(AuditRow::into_record)
            .collect()
    }

    fn observe_writes(&self, observer: WriteObserver) {
        self.writer().observe(observer);
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        sqlx::query_as::<B::Db, HeadRow>(sql::SELECT_HEAD)
            .fetch_one(self.reads())
            .await
            .map_err(classify)?
            .into_head()
    }

    async fn audit_position_at(&self, time: OffsetDateTime) -> Result<u64, StoreError> {
        let first: Option<i64> =
            sqlx::query_scalar::<B::Db, Option<i64>>(sql::SELECT_FIRST_SEQ_SINCE)
                .bind(rows::to_ms(time))
                .fetch_one(self.reads())
                .await
                .map_err(classify)?;
        match first {
            Some(seq) => Ok(rows::to_u64(seq, "audit sequence")?.saturating_sub(1)),
            None => Ok(self.audit_head().await?.seq),
        }
    }

    async fn issue_access_token(
        &self,
        issue: &AccessTokenIssue,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.register_access_token(issue, event).await
    }

    async fn create_task(&self, task: &Task, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            require_credentials_allowed::<B>(&mut tx, &task.agent).await?;
            insert_task(&mut *tx, task).await?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        sqlx::query_as::<B::Db, TaskRow>(sql::SELECT_TASK)
            .bind(id.to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(TaskRow::into_task)
            .transpose()
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let listing = rows::task_listing(filter);
        let mut query = sqlx::query_as::<B::Db, TaskRow>(&listing.sql);
        for value in listing.binds {
            query = query.bind(value);
        }
        query
            .bind(listing.limit)
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(TaskRow::into_task)
            .collect()
    }

    async fn end_task(
        &self,
        id: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = begin_revoking(self).await?;
        let outcome: Result<_, StoreError> = async {
            let closed = sqlx::query_scalar::<B::Db, String>(sql::CLOSE_TASK)
                .bind(id.to_owned())
                .bind(TaskState::Ended.as_str().to_owned())
                .bind(rows::to_ms(now))
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            if closed.is_none() {
                return Err(if exists(&mut *tx, sql::TASK_EXISTS, id).await? {
                    StoreError::Conflict {
                        reason: "the task is not active",
                    }
                } else {
                    StoreError::NotFound { what: "task" }
                });
            }
            let target = RevocationTarget::Task(id.to_owned());
            let (_, count) =
                revoke_in::<B>(&mut tx, &target, "task ended", now, Reach::Closure).await?;
            Ok(count)
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn revoke(
        &self,
        target: &RevocationTarget,
        reason: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = begin_revoking(self).await?;
        let outcome: Result<_, StoreError> = async {
            let close = match target {
                RevocationTarget::Task(id) => Some((sql::CLOSE_TASK, id.clone())),
                RevocationTarget::Agent(agent) => {
                    Some((sql::CLOSE_AGENT_TASKS, agent.as_str().to_owned()))
                }
                RevocationTarget::Owner(owner) => {
                    Some((sql::CLOSE_OWNER_TASKS, owner.as_str().to_owned()))
                }
                RevocationTarget::Credential(_) | RevocationTarget::Subtree(_) => None,
            };
            if let Some((statement, key)) = close {
                sqlx::query(statement)
                    .bind(key)
                    .bind(TaskState::Revoked.as_str().to_owned())
                    .bind(rows::to_ms(now))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            let (before, count) =
                revoke_in::<B>(&mut tx, target, reason, now, Reach::Members).await?;
            let cascade = tx.write_id().to_owned();
            sqlx::query(sql::INSERT_CASCADE)
                .bind(cascade.clone())
                .bind(before)
                .bind(rows::to_ms(now))
                .bind(reason.to_owned())
                .bind(rows::to_ms(OffsetDateTime::now_utc()))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            Ok((cascade, count))
        }
        .await;
        let (cascade, count) = settle(self, tx, outcome, std::slice::from_ref(event)).await?;
        // In a task of its own, so that a caller cancelled meanwhile still has it finished.
        let backend = self.clone();
        let finishing = tokio::spawn(async move { finish_cascade(&backend, &cascade).await });
        let descendants = finishing.await.map_err(|_| {
            StoreError::OutcomeUnknown("the revocation's cascade task failed".to_owned())
        })??;
        Ok(count + descendants)
    }

    async fn finish_revocations(&self, idle_since: OffsetDateTime) -> Result<u64, StoreError> {
        let idle = sqlx::query_scalar::<B::Db, String>(sql::IDLE_CASCADES)
            .bind(rows::to_ms(idle_since))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?;
        let mut revoked = 0;
        for cascade in idle {
            revoked += finish_cascade(self, &cascade).await?;
        }
        Ok(revoked)
    }

    async fn revocations_since(
        &self,
        after: u64,
        limit: u32,
        audience: Option<&str>,
    ) -> Result<Vec<Revocation>, StoreError> {
        let statement = match audience {
            None => sql::SELECT_REVOCATIONS,
            Some(_) => sql::SELECT_REVOCATIONS_FOR,
        };
        let mut query = sqlx::query_as::<B::Db, RevocationRow>(statement)
            .bind(rows::audit_after(after))
            .bind(i64::from(rows::page_limit(limit)));
        if let Some(audience) = audience {
            query = query.bind(audience.to_owned());
        }
        query
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(RevocationRow::into_revocation)
            .collect()
    }

    async fn create_resource_server(
        &self,
        server: &ResourceServer,
        credential: &CredentialHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            sqlx::query(sql::INSERT_RESOURCE_SERVER)
                .bind(server.name.as_str().to_owned())
                .bind(server.audience.clone())
                .bind(server.system.clone())
                .bind(server.environment.as_str().to_owned())
                .bind(server.sensitivity.clone())
                .bind(credential.to_hex())
                .bind(server.created_by.clone())
                .bind(rows::to_ms(server.created_at))
                .execute(&mut *tx)
                .await
                .map_err(on_unique(
                    "resource server name or audience already registered",
                ))?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn resource_server(
        &self,
        name: &ResourceServerName,
    ) -> Result<Option<ResourceServer>, StoreError> {
        resource_server_where::<B>(self.reads(), sql::SELECT_RESOURCE_SERVER, name.as_str()).await
    }

    async fn resource_server_by_audience(
        &self,
        audience: &str,
    ) -> Result<Option<ResourceServer>, StoreError> {
        resource_server_where::<B>(
            self.reads(),
            sql::SELECT_RESOURCE_SERVER_BY_AUDIENCE,
            audience,
        )
        .await
    }

    async fn resource_server_by_credential(
        &self,
        credential: &CredentialHash,
    ) -> Result<Option<ResourceServer>, StoreError> {
        resource_server_where::<B>(
            self.reads(),
            sql::SELECT_RESOURCE_SERVER_BY_CREDENTIAL,
            &credential.to_hex(),
        )
        .await
    }

    async fn list_resource_servers(&self) -> Result<Vec<ResourceServer>, StoreError> {
        sqlx::query_as::<B::Db, ResourceServerRow>(sql::LIST_RESOURCE_SERVERS)
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(ResourceServerRow::into_resource_server)
            .collect()
    }

    async fn remove_resource_server(
        &self,
        name: &ResourceServerName,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            let removed = sqlx::query_scalar::<B::Db, String>(sql::DELETE_RESOURCE_SERVER)
                .bind(name.as_str().to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            if removed.is_none() {
                return Err(StoreError::NotFound {
                    what: "resource server",
                });
            }
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn create_ssf_stream(
        &self,
        stream: &SsfStream,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError> {
        let mut cols = SsfStreamColumns::of(stream)?;
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            let held = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_SSF_STREAMS_OF)
                .bind(cols.receiver.clone())
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            if held >= i64::from(MAX_SSF_STREAMS_PER_RECEIVER) {
                return Err(StoreError::Conflict {
                    reason: "the receiver holds the most streams allowed",
                });
            }
            // Under the head lock no revocation commits meanwhile, so the stream starts exactly
            // at the log's head.
            cols.acked_through = sqlx::query_scalar::<B::Db, i64>(sql::MAX_REVOCATION_SEQ)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            let acked_through = rows::to_u64(cols.acked_through, "revocation log head")?;
            sqlx::query(sql::INSERT_SSF_STREAM)
                .bind(cols.id)
                .bind(cols.receiver)
                .bind(cols.audience)
                .bind(cols.delivery_method.to_owned())
                .bind(cols.endpoint_url)
                .bind(cols.sealed_authorization)
                .bind(cols.events_requested)
                .bind(cols.events_delivered)
                .bind(cols.description)
                .bind(cols.created_at_ms)
                .bind(cols.acked_through)
                .bind(cols.status.to_owned())
                .bind(cols.status_reason)
                .execute(&mut *tx)
                .await
                .map_err(on_unique("stream id already exists"))?;
            Ok(SsfStream {
                acked_through,
                ..stream.clone()
            })
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn ssf_stream(&self, id: &str) -> Result<Option<SsfStream>, StoreError> {
        sqlx::query_as::<B::Db, SsfStreamRow>(sql::SELECT_SSF_STREAM)
            .bind(id.to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(SsfStreamRow::into_stream)
            .transpose()
    }

    async fn list_ssf_streams(
        &self,
        receiver: Option<&SsfReceiver>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SsfStream>, StoreError> {
        let limit = i64::from(rows::page_limit(limit));
        let query = match receiver {
            Some(receiver) => sqlx::query_as::<B::Db, SsfStreamRow>(sql::LIST_SSF_STREAMS_OF)
                .bind(rows::receiver_key(receiver)),
            None => sqlx::query_as::<B::Db, SsfStreamRow>(sql::LIST_SSF_STREAMS),
        };
        query
            .bind(after.to_owned())
            .bind(limit)
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(SsfStreamRow::into_stream)
            .collect()
    }

    async fn update_ssf_stream(
        &self,
        stream: &SsfStream,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError> {
        let cols = SsfStreamColumns::of(stream)?;
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            let updated = sqlx::query_scalar::<B::Db, String>(sql::UPDATE_SSF_STREAM)
                .bind(cols.id)
                .bind(cols.delivery_method.to_owned())
                .bind(cols.endpoint_url)
                .bind(cols.sealed_authorization)
                .bind(cols.events_requested)
                .bind(cols.events_delivered)
                .bind(cols.description)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            if updated.is_none() {
                return Err(StoreError::NotFound { what: "SSF stream" });
            }
            stream_in::<B>(&mut tx, &stream.id).await
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn set_ssf_status(
        &self,
        id: &str,
        status: SsfStatus,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            let was = sqlx::query_scalar::<B::Db, String>(sql::SSF_STATUS_OF)
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .ok_or(StoreError::NotFound { what: "SSF stream" })?;
            let was = SsfStatus::parse(&was)
                .ok_or_else(|| StoreError::Corrupt(format!("SSF status of {id}")))?;
            if was == SsfStatus::Disabled || status == SsfStatus::Disabled {
                // A disabled stream holds nothing (SSF 1.0 §8.1.2): what was pending when
                // it was disabled, and what was revoked while it was, is never delivered.
                // Under the head lock no revocation commits meanwhile, so the head is exact.
                let head_seq = sqlx::query_scalar::<B::Db, i64>(sql::MAX_REVOCATION_SEQ)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                for statement in [sql::DELETE_SSF_ACKS, sql::DELETE_SSF_VERIFICATIONS] {
                    sqlx::query(statement)
                        .bind(id.to_owned())
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                }
                // Positions only grow: a stream ahead of the head (after a prune) stays put.
                sqlx::query(sql::ADVANCE_SSF_STREAM_TO)
                    .bind(id.to_owned())
                    .bind(head_seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            sqlx::query(sql::SET_SSF_STATUS)
                .bind(id.to_owned())
                .bind(status.as_str().to_owned())
                .bind(reason.map(str::to_owned))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            stream_in::<B>(&mut tx, id).await
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn queue_ssf_verification(
        &self,
        id: &str,
        state: Option<&str>,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            // Existence first, so an unknown stream is `NotFound` rather than a foreign-key
            // failure.
            stream_in::<B>(&mut tx, id).await?;
            let waiting = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_SSF_VERIFICATIONS)
                .bind(id.to_owned())
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            if waiting >= i64::from(MAX_SSF_VERIFICATIONS_PENDING) {
                return Err(StoreError::Conflict {
                    reason: "the stream has the most verification events waiting allowed",
                });
            }
            sqlx::query(sql::INSERT_SSF_VERIFICATION)
                .bind(id.to_owned())
                .bind(state.map(str::to_owned))
                .bind(rows::to_ms(now))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn ssf_verifications(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<SsfVerification>, StoreError> {
        sqlx::query_as::<B::Db, SsfVerificationRow>(sql::SELECT_SSF_VERIFICATIONS)
            .bind(id.to_owned())
            .bind(i64::from(rows::page_limit(limit)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(SsfVerificationRow::into_verification)
            .collect()
    }

    async fn acknowledge_ssf_verifications(
        &self,
        id: &str,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        // Delivery bookkeeping, not a state change of the deployment: no audit event and no
        // head lock. Each delete names the stream, so no other stream's event is touched, and
        // stands alone: should one fail, the events not yet deleted are delivered again.
        let pool = write_pool(self)?;
        for &seq in seqs {
            let Ok(seq) = i64::try_from(seq) else {
                continue;
            };
            sqlx::query(sql::ACK_SSF_VERIFICATION)
                .bind(id.to_owned())
                .bind(seq)
                .execute(pool)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn delete_ssf_stream(&self, id: &str, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = begin_write(self).await?;
        let outcome: Result<_, StoreError> = async {
            for statement in [sql::DELETE_SSF_ACKS, sql::DELETE_SSF_VERIFICATIONS] {
                sqlx::query(statement)
                    .bind(id.to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            let deleted = sqlx::query_scalar::<B::Db, String>(sql::DELETE_SSF_STREAM)
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            if deleted.is_none() {
                return Err(StoreError::NotFound { what: "SSF stream" });
            }
            Ok(())
        }
        .await;
        settle(self, tx, outcome, std::slice::from_ref(event)).await
    }

    async fn ssf_pending(&self, id: &str, limit: u32) -> Result<Vec<SsfPending>, StoreError> {
        sqlx::query_as::<B::Db, SsfPendingRow>(sql::SELECT_SSF_PENDING)
            .bind(id.to_owned())
            .bind(i64::from(rows::page_limit(limit)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(SsfPendingRow::into_pending)
            .collect()
    }

    async fn acknowledge_ssf(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError> {
        // The head lock keeps revocations from committing meanwhile and serializes
        // acknowledgements of the same stream, so the position moves consistently.
        let mut tx = begin_write(self).await?;
        let outcome: Result<(), StoreError> = async {
            let current = sqlx::query_scalar::<B::Db, i64>(sql::SSF_ACKED_THROUGH)
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .ok_or(StoreError::NotFound { what: "SSF stream" })?;
            for &seq in seqs {
                // A position beyond `i64::MAX` names no entry.
                let Ok(seq) = i64::try_from(seq) else {
                    continue;
                };
                sqlx::query(sql::INSERT_SSF_ACK)
                    .bind(id.to_owned())
                    .bind(seq)
                    .bind(current)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            let first_unacked = sqlx::query_scalar::<B::Db, i64>(sql::FIRST_SSF_UNACKED)
                .bind(id.to_owned())
                .bind(current)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            let last_ack = sqlx::query_scalar::<B::Db, i64>(sql::LAST_SSF_ACK)
                .bind(id.to_owned())
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            let next = rows::next_acked_through(current, first_unacked, last_ack);
            if next != current {
                sqlx::query(sql::ADVANCE_SSF_STREAM)
                    .bind(id.to_owned())
                    .bind(next)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                sqlx::query(sql::PRUNE_SSF_ACKS)
                    .bind(id.to_owned())
                    .bind(next)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            Ok(())
        }
        .await;
        // Delivery bookkeeping, not a state change of the deployment: no audit event.
        settle(self, tx, outcome, &[]).await
    }

    async fn claim_ssf_stream(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        claim::<B>(self, sql::CLAIM_SSF_STREAM, id, holder, (now, until)).await
    }

    async fn claim_sequencer(
        &self,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        claim::<B>(self, sql::CLAIM_SEQUENCER, "audit", holder, (now, until)).await
    }

    async fn open_approval(
        &self,
        request: &ApprovalRequest,
        decision: &AuditEvent,
        opened: &AuditEvent,
    ) -> Result<ApprovalRequest, StoreError> {
        approvals::open(self, request, decision, opened).await
    }

    async fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRequest>, StoreError> {
        sqlx::query_as::<B::Db, ApprovalRow>(sql::SELECT_APPROVAL)
            .bind(id.as_str().to_owned())
            .fetch_optional(self.reads())
            .await
            .map_err(classify)?
            .map(ApprovalRow::into_request)
            .transpose()
    }

    async fn list_approvals(
        &self,
        pending_at: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let limit = i64::from(rows::page_limit(limit));
        let query = match pending_at {
            Some(now) => sqlx::query_as::<B::Db, ApprovalRow>(sql::LIST_PENDING_APPROVALS)
                .bind(rows::to_ms(now))
                .bind(limit),
            None => sqlx::query_as::<B::Db, ApprovalRow>(sql::LIST_APPROVALS).bind(limit),
        };
        query
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(ApprovalRow::into_request)
            .collect()
    }

    async fn decide_approval(
        &self,
        id: &ApprovalId,
        verdict: &ApprovalVerdict,
        event: &AuditEvent,
    ) -> Result<ApprovalRequest, StoreError> {
        approvals::decide(self, id, verdict, event).await
    }

    async fn grant_for(
        &self,
        call: &BoundCall,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalId>, StoreError> {
        approvals::grant_for(self, call, now).await
    }

    async fn use_grant(
        &self,
        id: &ApprovalId,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        approvals::use_grant(self, id, now, event).await
    }

    async fn approvals_version(&self) -> Result<u64, StoreError> {
        let version = sqlx::query_scalar::<B::Db, i64>(sql::APPROVALS_VERSION)
            .fetch_one(self.reads())
            .await
            .map_err(classify)?;
        rows::to_u64(version, "approvals version")
    }

    async fn create_secret(
        &self,
        secret: &Secret,
        sealed_value: &[u8],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        secrets::create(self, secret, sealed_value, event).await
    }

    async fn rotate_secret(
        &self,
        secret: &Secret,
        sealed_value: &[u8],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        secrets::rotate(self, secret, sealed_value, event).await
    }

    async fn delete_secret(&self, name: &SecretName, event: &AuditEvent) -> Result<(), StoreError> {
        secrets::delete(self, name.as_str(), event).await
    }

    async fn secret(&self, name: &SecretName) -> Result<Option<Secret>, StoreError> {
        Ok(secrets::read(self, name.as_str(), false)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn secret_value(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, Vec<u8>)>, StoreError> {
        Ok(secrets::read(self, name.as_str(), true)
            .await?
            .and_then(|(secret, value)| value.map(|v| (secret, v))))
    }

    async fn list_secrets(&self, limit: u32) -> Result<Vec<Secret>, StoreError> {
        sqlx::query_as::<B::Db, SecretRow>(sql::LIST_SECRETS)
            .bind(i64::from(rows::page_limit(limit)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(SecretRow::into_secret)
            .collect()
    }

    async fn create_engine(&self, engine: &Engine, event: &AuditEvent) -> Result<(), StoreError> {
        leases::create_engine(self, engine, event).await
    }

    async fn engine(&self, name: &EngineName) -> Result<Option<Engine>, StoreError> {
        leases::read_record(self, sql::SELECT_ENGINE, &[name.as_str()], "engine").await
    }

    async fn list_engines(&self) -> Result<Vec<Engine>, StoreError> {
        leases::read_records(self, sql::LIST_ENGINES, &[], "engine").await
    }

    async fn create_role_template(
        &self,
        template: &RoleTemplate,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        leases::create_role_template(self, template, event).await
    }

    async fn role_template(
        &self,
        engine: &EngineName,
        name: &RoleName,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        leases::read_record(
            self,
            sql::SELECT_ENGINE_ROLE,
            &[engine.as_str(), name.as_str()],
            "role template",
        )
        .await
    }

    async fn list_role_templates(
        &self,
        engine: &EngineName,
    ) -> Result<Vec<RoleTemplate>, StoreError> {
        leases::read_records(
            self,
            sql::LIST_ENGINE_ROLES,
            &[engine.as_str()],
            "role template",
        )
        .await
    }

    async fn issue_lease(&self, issue: &LeaseIssue, event: &AuditEvent) -> Result<(), StoreError> {
        leases::issue(self, issue, event).await
    }

    async fn renew_lease(
        &self,
        id: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        leases::renew(self, id, expires_at, now, event).await
    }

    async fn lease(&self, id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        Ok(leases::read_leases(self, sql::SELECT_LEASE, &[id], &[])
            .await?
            .into_iter()
            .next())
    }

    async fn list_leases(
        &self,
        agent: Option<&AgentName>,
        limit: u32,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let limit = i64::from(limit.min(MAX_PAGE));
        match agent {
            Some(agent) => {
                leases::read_leases(self, sql::LIST_AGENT_LEASES, &[agent.as_str()], &[limit]).await
            }
            None => leases::read_leases(self, sql::LIST_LEASES, &[], &[limit]).await,
        }
    }

    async fn leases_to_end(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let limit = i64::from(limit.min(MAX_PAGE));
        leases::read_leases(self, sql::LEASES_TO_END, &[], &[rows::to_ms(now), limit]).await
    }

    async fn leases_overdue(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let count = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_LEASES_OVERDUE)
            .bind(rows::to_ms(now))
            .fetch_one(self.reads())
            .await
            .map_err(classify)?;
        rows::to_u64(count, "overdue leases")
    }

    async fn claim_lease(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        leases::claim_step(
            self,
            sql::CLAIM_LEASE,
            &[id, holder],
            &[rows::to_ms(now), rows::to_ms(until)],
            None,
        )
        .await
    }

    async fn grant_lease(&self, id: &str, holder: &str) -> Result<bool, StoreError> {
        leases::claim_step(self, sql::GRANT_LEASE, &[id, holder], &[], None).await
    }

    async fn release_lease(&self, id: &str, holder: &str) -> Result<bool, StoreError> {
        leases::claim_step(self, sql::RELEASE_LEASE, &[id, holder], &[], None).await
    }

    async fn end_lease(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        leases::end(self, id, holder, now, event).await
    }

    async fn lease_failed(
        &self,
        id: &str,
        holder: &str,
        retry_at: OffsetDateTime,
        error: &str,
    ) -> Result<bool, StoreError> {
        leases::claim_step(
            self,
            sql::FAIL_LEASE,
            &[id, holder],
            &[rows::to_ms(retry_at)],
            Some(error),
        )
        .await
    }

    async fn claim_recertification(
        &self,
        agent: &AgentName,
        due: OffsetDateTime,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<RecertificationStep>, StoreError> {
        leases::claim_returning(
            self,
            sql::CLAIM_RECERTIFICATION,
            &[agent.as_str(), holder],
            &[rows::to_ms(due), rows::to_ms(now), rows::to_ms(until)],
            None,
        )
        .await?
        .map(|step| RecertificationStep::parse(&step))
        .transpose()
    }

    async fn finish_recertification(
        &self,
        agent: &AgentName,
        due: OffsetDateTime,
        holder: &str,
        done: Option<RecertificationStep>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let step = match done {
            None | Some(RecertificationStep::New) => "released",
            Some(RecertificationStep::Warned) => "warned",
            Some(RecertificationStep::Suspended) => "suspended",
        };
        leases::claim_step(
            self,
            sql::FINISH_RECERTIFICATION,
            &[agent.as_str(), holder, step],
            &[rows::to_ms(now), rows::to_ms(due)],
            None,
        )
        .await
    }

    async fn report_sightings(
        &self,
        reporter: &ResourceServerName,
        sightings: &[Sighting],
        event: &AuditEvent,
    ) -> Result<u64, StoreError> {
        sightings::report(self, reporter, sightings, event).await
    }

    async fn sightings(
        &self,
        limit: u32,
    ) -> Result<Vec<(ResourceServerName, Sighting)>, StoreError> {
        sqlx::query_as::<B::Db, SightingRow>(sql::LIST_SIGHTINGS)
            .bind(i64::from(rows::page_limit(limit)))
            .fetch_all(self.reads())
            .await
            .map_err(classify)?
            .into_iter()
            .map(SightingRow::into_sighting)
            .collect()
    }
}

/// Stream `id` as `tx` sees it. `NotFound`.
async fn stream_in<B>(tx: &mut WriteTx<B::Db>, id: &str) -> Result<SsfStream, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> SsfStreamRow: sqlx::FromRow<'r, <B::Db as Database>::Row>,
{
    sqlx::query_as::<B::Db, SsfStreamRow>(sql::SELECT_SSF_STREAM)
        .bind(id.to_owned())
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound { what: "SSF stream" })?
        .into_stream()
}

/// Runs a claim `statement` (`$1` what is claimed, `$2` the holder, `$3` now, `$4` until
/// when; a row back when it is the holder's): whether `holder` holds `key` until `until`.
async fn claim<B>(
    backend: &B,
    statement: &'static str,
    key: &str,
    holder: &str,
    (now, until): (OffsetDateTime, OffsetDateTime),
) -> Result<bool, StoreError>
where
    B: Backend,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'c> &'c Pool<B::Db>: Executor<'c, Database = B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let claimed = sqlx::query_scalar::<B::Db, String>(statement)
        .bind(key.to_owned())
        .bind(holder.to_owned())
        .bind(rows::to_ms(now))
        .bind(rows::to_ms(until))
        .fetch_optional(write_pool(backend)?)
        .await
        .map_err(classify)?;
    Ok(claimed.is_some())
}

/// The one resource server a single-key query finds.
async fn resource_server_where<B>(
    reads: &Pool<B::Db>,
    statement: &'static str,
    key: &str,
) -> Result<Option<ResourceServer>, StoreError>
where
    B: Backend,
    for<'c> &'c Pool<B::Db>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    ResourceServerRow: for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
{
    sqlx::query_as::<B::Db, ResourceServerRow>(statement)
        .bind(key.to_owned())
        .fetch_optional(reads)
        .await
        .map_err(classify)?
        .map(ResourceServerRow::into_resource_server)
        .transpose()
}

/// Inserts a user; the name and the credential hash are both unique.
async fn insert_user<'c, DB, E>(
    conn: E,
    user: &User,
    credential: &CredentialHash,
) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(sql::INSERT_USER)
        .bind(user.name.as_str().to_owned())
        .bind(user.role.as_str().to_owned())
        .bind(rows::to_ms(user.created_at))
        .bind(rows::to_ms(user.credential_rotated_at))
        .bind(credential.to_hex())
        .execute(conn)
        .await
        .map_err(on_unique("user name or credential already registered"))?;
    Ok(())
}
