//! SQL text that both backends run unchanged (SQLite accepts PostgreSQL's `$N`
//! placeholders). Statements that differ, such as the PostgreSQL head lock and batch insert,
//! live in their backend. Column lists here match the row types in `rows`.

pub(crate) const PING: &str = "SELECT 1";

pub(crate) const SELECT_META: &str = "SELECT value FROM meta WHERE key = $1";
pub(crate) const INSERT_META: &str = "INSERT INTO meta (key, value) VALUES ($1, $2)";
pub(crate) const UPDATE_META: &str = "UPDATE meta SET value = $2 WHERE key = $1";

pub(crate) const SELECT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
pub(crate) const UPDATE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
/// The readiness probe's write: a counter in `meta`, committed on its own.
pub(crate) const HEARTBEAT: &str = "INSERT INTO meta (key, value) VALUES ('heartbeat', '1') \
     ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)";
/// The transaction that appended the record at a position: how a failed commit learns
/// whether it committed.
pub(crate) const AUDIT_TXN_AT: &str = "SELECT txn FROM audit_log WHERE seq = $1";
/// The head of a multi-row insert of audit records; the SQLite store appends one
/// `(seq, time_ms, action, agent, prev_hash, hash, body, txn, task_id)` tuple per record.
pub(crate) const INSERT_AUDIT_ROWS: &str = "INSERT INTO audit_log \
     (seq, time_ms, action, agent, prev_hash, hash, body, txn, task_id) ";
/// The head of a multi-row insert of records' query keys; the SQLite store appends one
/// `(kind, key, seq)` tuple per key, then [`INSERT_AUDIT_KEYS_TAIL`].
pub(crate) const INSERT_AUDIT_KEYS: &str = "INSERT INTO audit_keys (kind, key, seq) ";
/// Ends [`INSERT_AUDIT_KEYS`]: a key already present is left as it is.
pub(crate) const INSERT_AUDIT_KEYS_TAIL: &str = " ON CONFLICT DO NOTHING";
/// The records with one query key (binds: kind, key, after, limit).
pub(crate) const SELECT_KEYED_AUDIT: &str = "SELECT a.seq, a.prev_hash, a.hash, a.body \
     FROM audit_keys k JOIN audit_log a ON a.seq = k.seq \
     WHERE k.kind = $1 AND k.key = $2 AND k.seq > $3 ORDER BY k.seq LIMIT $4";
/// The records of one action (binds: action, after, limit).
pub(crate) const SELECT_ACTION_AUDIT: &str = "SELECT seq, prev_hash, hash, body FROM audit_log \
     WHERE action = $1 AND seq > $2 ORDER BY seq LIMIT $3";
pub(crate) const SELECT_AUDIT: &str = "SELECT seq, prev_hash, hash, body FROM audit_log \
     WHERE seq > $1 ORDER BY seq LIMIT $2";
/// Every column of each record, for the Merkle tree log's leaves.
pub(crate) const SELECT_AUDIT_ENTRIES: &str = "SELECT seq, time_ms, action, agent, task_id, \
     txn, prev_hash, hash, body FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";
pub(crate) const SELECT_LOG_KEY: &str =
    "SELECT name, public_key, sealed_private_key, created_at_ms FROM audit_log_key WHERE id = 1";
/// Binds: name, public key, sealed private key, created_at_ms. The first key stays.
pub(crate) const INSERT_LOG_KEY: &str = "INSERT INTO audit_log_key \
     (id, name, public_key, sealed_private_key, created_at_ms) VALUES (1, $1, $2, $3, $4) \
     ON CONFLICT (id) DO NOTHING";
/// Binds: tree_size, root_hash, note, created_at_ms. A size checkpointed before keeps its note.
pub(crate) const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints \
     (tree_size, root_hash, note, created_at_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tree_size) DO NOTHING";
pub(crate) const SELECT_LATEST_CHECKPOINT: &str = "SELECT tree_size, root_hash, note, \
     created_at_ms FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1";
pub(crate) const SELECT_CHECKPOINT: &str = "SELECT tree_size, root_hash, note, created_at_ms \
     FROM audit_checkpoints WHERE tree_size = $1";
pub(crate) const SELECT_CHECKPOINTS: &str = "SELECT tree_size, root_hash, note, created_at_ms \
     FROM audit_checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2";
pub(crate) const SELECT_AGENT_LAST_SEEN: &str = "SELECT time_ms FROM audit_log \
     WHERE agent = $1 ORDER BY seq DESC LIMIT 1";
pub(crate) const SELECT_AGENT_LAST_ACTION: &str = "SELECT seq, prev_hash, hash, body FROM audit_log \
     WHERE agent = $1 AND action = $2 ORDER BY seq DESC LIMIT 1";
pub(crate) const COUNT_LIVE_CREDENTIALS: &str = "SELECT kind, COUNT(*) FROM credentials \
     WHERE agent = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2 GROUP BY kind";
pub(crate) const COUNT_ACTIVE_TASKS: &str = "SELECT COUNT(*) FROM tasks \
     WHERE agent = $1 AND state = 'active'";
/// The first record of a window, found by the time index.
/// `+seq` keeps both planners off the primary key: `MIN(seq)` let SQLite walk the log from
/// its start until the first match (285 ms for the last hour of a million rows), where the
/// time index answers the range alone (0.2 ms; 64 ms when the range is the whole log).
pub(crate) const SELECT_FIRST_SEQ_SINCE: &str =
    "SELECT MIN(+seq) FROM audit_log WHERE time_ms >= $1";
pub(crate) const SELECT_AGENT_AUDIT: &str = "SELECT seq, prev_hash, hash, body FROM audit_log \
     WHERE agent = $1 AND seq > $2 ORDER BY seq LIMIT $3";
pub(crate) const SELECT_TASK_AUDIT: &str = "SELECT seq, prev_hash, hash, body FROM audit_log \
     WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Binds: name, owner, environment, state, revision, created_at_ms, updated_at_ms, record,
/// change_seq.
pub(crate) const INSERT_AGENT: &str = "INSERT INTO agents \
     (name, owner, environment, state, revision, created_at_ms, updated_at_ms, record, \
     change_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(crate) const SELECT_AGENT: &str = "SELECT name, record FROM agents WHERE name = $1";
pub(crate) const AGENT_EXISTS: &str = "SELECT name FROM agents WHERE name = $1";
/// Binds: name, owner, environment, state, new revision, updated_at_ms, record, expected
/// revision, change_seq. The creation time never changes. Returns the name if a row changed.
pub(crate) const UPDATE_AGENT: &str = "UPDATE agents SET owner = $2, environment = $3, \
     state = $4, revision = $5, updated_at_ms = $6, record = $7, change_seq = $9 \
     WHERE name = $1 AND revision = $8 RETURNING name";
/// Binds: name, change_seq. For a change of what the registry view holds beside the record
/// (the posture snapshot).
pub(crate) const MARK_AGENT_CHANGED: &str = "UPDATE agents SET change_seq = $2 WHERE name = $1";
/// Binds: change_seq and name after which to read, limit. Each agent changed after that
/// position with its posture snapshot, in change order.
pub(crate) const REGISTRY_CHANGES: &str = "SELECT a.change_seq, a.name, a.record, \
     s.evidence, s.digest, s.key_thumbprint, s.accepted_at_ms \
     FROM agents a LEFT JOIN posture_snapshots s ON s.agent = a.name \
     WHERE (a.change_seq, a.name) > ($1, $2) ORDER BY a.change_seq, a.name LIMIT $3";

pub(crate) const INSERT_JOIN_TOKEN: &str = "INSERT INTO join_tokens \
     (hash, agent, expires_at_ms, used_at_ms) VALUES ($1, $2, $3, NULL)";
pub(crate) const DELETE_UNUSED_JOIN_TOKENS: &str =
    "DELETE FROM join_tokens WHERE agent = $1 AND used_at_ms IS NULL";
/// One statement, so of concurrent callers with different keys only one binds the token;
/// the key it is bound to may present it again until it expires.
pub(crate) const CONSUME_JOIN_TOKEN: &str = "UPDATE join_tokens \
     SET used_at_ms = COALESCE(used_at_ms, $2), used_by_jkt = $3 \
     WHERE hash = $1 AND expires_at_ms > $2 AND (used_at_ms IS NULL OR used_by_jkt = $3) \
     RETURNING agent";
pub(crate) const SELECT_JOIN_TOKEN: &str =
    "SELECT agent, expires_at_ms, used_at_ms FROM join_tokens WHERE hash = $1";

pub(crate) const INSERT_USER: &str = "INSERT INTO users \
     (name, role, created_at_ms, credential_rotated_at_ms, credential_hash) \
     VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SELECT_USER_BY_CREDENTIAL: &str = "SELECT name, role, created_at_ms, \
     credential_rotated_at_ms FROM users WHERE credential_hash = $1";
pub(crate) const LIST_USERS: &str =
    "SELECT name, role, created_at_ms, credential_rotated_at_ms FROM users ORDER BY name";
pub(crate) const SELECT_USER_ROLE: &str = "SELECT role FROM users WHERE name = $1";
pub(crate) const COUNT_ADMINS: &str = "SELECT COUNT(*) FROM users WHERE role = 'admin'";
pub(crate) const DELETE_USER: &str = "DELETE FROM users WHERE name = $1";
/// Returns the name if the user exists.
pub(crate) const ROTATE_USER_CREDENTIAL: &str = "UPDATE users SET credential_hash = $2, \
     credential_rotated_at_ms = $3 WHERE name = $1 RETURNING name";

pub(crate) const INSERT_KEY: &str = "INSERT INTO signing_keys \
     (kid, alg, state, created_at_ms, public_jwk, sealed_private_key) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const SELECT_KEYS: &str = "SELECT kid, alg, state, created_at_ms, public_jwk, \
     sealed_private_key FROM signing_keys ORDER BY created_at_ms, kid";
pub(crate) const KID_EXISTS: &str = "SELECT kid FROM signing_keys WHERE kid = $1";
pub(crate) const KEY_IN_STATE: &str = "SELECT kid FROM signing_keys WHERE state = $1";
pub(crate) const MOVE_KEY_STATE: &str = "UPDATE signing_keys SET state = $2 WHERE state = $1";

/// Remembers a used nonce; returns nothing when it was used before.
pub(crate) const CONSUME_NONCE: &str = "INSERT INTO attestation_nonces \
     (hash, expires_at_ms, used_at_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (hash) DO NOTHING RETURNING hash";
pub(crate) const PURGE_NONCES: &str = "DELETE FROM attestation_nonces WHERE expires_at_ms <= $1";

pub(crate) const SELECT_SNAPSHOT: &str = "SELECT agent, evidence, digest, key_thumbprint, \
     accepted_at_ms FROM posture_snapshots WHERE agent = $1";
pub(crate) const UPSERT_SNAPSHOT: &str = "INSERT INTO posture_snapshots \
     (agent, evidence, digest, key_thumbprint, accepted_at_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (agent) DO UPDATE SET evidence = excluded.evidence, digest = excluded.digest, \
     key_thumbprint = excluded.key_thumbprint, accepted_at_ms = excluded.accepted_at_ms";

pub(crate) const DELETE_SNAPSHOT: &str = "DELETE FROM posture_snapshots WHERE agent = $1";
pub(crate) const AGENT_STATE: &str = "SELECT state FROM agents WHERE name = $1";
/// An agent's lifecycle state and revision.
pub(crate) const AGENT_STANDING: &str = "SELECT state, revision FROM agents WHERE name = $1";
/// [`AGENT_STANDING`], holding the row against updates until the transaction ends.
pub(crate) const AGENT_STANDING_SHARED: &str =
    "SELECT state, revision FROM agents WHERE name = $1 FOR SHARE";
pub(crate) const INSERT_CREDENTIAL: &str = "INSERT INTO credentials \
     (id, kind, agent, parent, key_thumbprint, issued_at_ms, expires_at_ms, task_id, audience) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
macro_rules! select_credential {
    ($lock:literal) => {
        concat!(
            "SELECT id, kind, agent, parent, key_thumbprint, issued_at_ms, expires_at_ms, \
             revoked_at_ms, task_id, audience FROM credentials WHERE id = $1",
            $lock
        )
    };
}
pub(crate) const SELECT_CREDENTIAL: &str = select_credential!("");
/// [`SELECT_CREDENTIAL`], holding the row against updates until the transaction ends
/// (PostgreSQL; see `crate::issuance`).
pub(crate) const SELECT_CREDENTIAL_SHARED: &str = select_credential!(" FOR SHARE");

/// The revocation of a target's own credentials, not their descendants (the cascade steps take
/// those): appends every live one to the log (`$1` the target, `$2` the time, `$3` the reason,
/// `$4` the writing transaction's id).
macro_rules! revoke_members {
    ($root:literal) => {
        concat!(
            "INSERT INTO revocations \
             (kind, credential, agent, task_id, audience, revoked_at_ms, expires_at_ms, reason, \
             txn) \
             SELECT 'credential', id, agent, task_id, audience, $2, expires_at_ms, $3, $4 \
             FROM credentials WHERE revoked_at_ms IS NULL AND ",
            $root,
            " ORDER BY id"
        )
    };
}
pub(crate) const REVOKE_CREDENTIAL_ONLY: &str = revoke_members!("id = $1");
pub(crate) const REVOKE_CHILDREN: &str = revoke_members!("parent = $1");
pub(crate) const REVOKE_TASK_MEMBERS: &str = revoke_members!("task_id = $1");
pub(crate) const REVOKE_AGENT_MEMBERS: &str = revoke_members!("agent = $1");
pub(crate) const REVOKE_OWNER_MEMBERS: &str =
    revoke_members!("agent IN (SELECT name FROM agents WHERE owner = $1)");
/// One step of a revocation's cascade: up to `$5` unrevoked children of the credentials the
/// log holds after position `$1` (`$2` the time, `$3` the reason, `$4` the revocation's
/// `txn`); it reads only the live children (`credentials_live_children`), so a
/// step costs what it takes, not what earlier steps took.
pub(crate) const REVOKE_CASCADE_STEP: &str = "INSERT INTO revocations \
     (kind, credential, agent, task_id, audience, revoked_at_ms, expires_at_ms, reason, txn) \
     SELECT 'credential', c.id, c.agent, c.task_id, c.audience, $2, c.expires_at_ms, $3, $4 \
     FROM revocations r JOIN credentials c ON c.parent = r.credential \
     WHERE r.seq > $1 AND r.kind = 'credential' AND c.revoked_at_ms IS NULL LIMIT $5";
pub(crate) const INSERT_CASCADE: &str = "INSERT INTO revocation_cascades \
     (id, after_seq, revoked_at_ms, reason, touched_at_ms) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SELECT_CASCADE: &str =
    "SELECT after_seq, revoked_at_ms, reason FROM revocation_cascades WHERE id = $1";
pub(crate) const ADVANCE_CASCADE: &str =
    "UPDATE revocation_cascades SET after_seq = $2, touched_at_ms = $3 WHERE id = $1";
pub(crate) const DELETE_CASCADE: &str = "DELETE FROM revocation_cascades WHERE id = $1";
/// Cascades nobody has advanced since `$1` (their revoker stopped mid-way).
pub(crate) const IDLE_CASCADES: &str =
    "SELECT id FROM revocation_cascades WHERE touched_at_ms < $1 ORDER BY id";
/// Epoch entries for an agent, its owner's agents or a task (`$1` the target, `$2` the time,
/// `$3` the reason, `$4` when the epoch may be forgotten, `$5` the writing transaction's id): one with no audience, for the
/// replicas and operators, and one for each audience the target's credentials were issued
/// for, so each resource server concerned sees it in its feed.
macro_rules! agent_epochs {
    ($agents:literal) => {
        concat!(
            "INSERT INTO revocations \
             (kind, credential, agent, task_id, audience, revoked_at_ms, expires_at_ms, reason, \
             txn) \
             SELECT DISTINCT 'agent', NULL, s.agent, NULL, s.audience, $2, $4, $3, $5 FROM \
             (SELECT name AS agent, CAST(NULL AS TEXT) AS audience FROM agents WHERE name IN ",
            $agents,
            " UNION SELECT agent, audience FROM credentials WHERE agent IN ",
            $agents,
            " AND audience IS NOT NULL) s"
        )
    };
}
pub(crate) const AGENT_EPOCHS: &str = agent_epochs!("(SELECT $1)");
pub(crate) const OWNER_EPOCHS: &str = agent_epochs!("(SELECT name FROM agents WHERE owner = $1)");
pub(crate) const TASK_EPOCHS: &str = "INSERT INTO revocations \
     (kind, credential, agent, task_id, audience, revoked_at_ms, expires_at_ms, reason, txn) \
     SELECT DISTINCT 'task', NULL, t.agent, t.id, s.audience, $2, $4, $3, $5 FROM tasks t \
     JOIN (SELECT CAST(NULL AS TEXT) AS audience \
     UNION SELECT audience FROM credentials WHERE task_id = $1 AND audience IS NOT NULL) s \
     ON TRUE WHERE t.id = $1";
pub(crate) const MAX_REVOCATION_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM revocations";
/// How many credentials were appended after log position `$1`: under the head lock, exactly
/// the ones the current transaction appended (PostgreSQL sequences leave gaps, so positions
/// are not counts).
pub(crate) const COUNT_REVOCATIONS_AFTER: &str =
    "SELECT COUNT(*) FROM revocations WHERE seq > $1 AND kind = 'credential'";
pub(crate) const MARK_REVOKED: &str = "UPDATE credentials SET revoked_at_ms = $1, \
     revoked_reason = $2 WHERE revoked_at_ms IS NULL \
     AND id IN (SELECT credential FROM revocations WHERE seq > $3 AND kind = 'credential')";
pub(crate) const SELECT_REVOCATIONS: &str = "SELECT seq, kind, credential, agent, task_id, \
     audience, revoked_at_ms, expires_at_ms, reason, txn FROM revocations WHERE seq > $1 \
     ORDER BY seq LIMIT $2";
/// [`SELECT_REVOCATIONS`] for one audience (`$3`).
pub(crate) const SELECT_REVOCATIONS_FOR: &str = "SELECT seq, kind, credential, agent, task_id, \
     audience, revoked_at_ms, expires_at_ms, reason, txn FROM revocations \
     WHERE seq > $1 AND audience = $3 ORDER BY seq LIMIT $2";
pub(crate) const CLOSE_AGENT_TASKS: &str =
    "UPDATE tasks SET state = $2, ended_at_ms = $3 WHERE agent = $1 AND state = 'active'";
pub(crate) const CLOSE_OWNER_TASKS: &str = "UPDATE tasks SET state = $2, ended_at_ms = $3 \
     WHERE state = 'active' AND agent IN (SELECT name FROM agents WHERE owner = $1)";
pub(crate) const CLOSE_TASK: &str = "UPDATE tasks SET state = $2, ended_at_ms = $3 \
     WHERE id = $1 AND state = 'active' RETURNING id";
pub(crate) const TASK_EXISTS: &str = "SELECT id FROM tasks WHERE id = $1";

pub(crate) const INSERT_TASK: &str = "INSERT INTO tasks \
     (id, agent, intent, subject, state, created_at_ms, deadline_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
macro_rules! select_task {
    ($lock:literal) => {
        concat!(
            "SELECT id, agent, intent, subject, state, created_at_ms, deadline_ms, ended_at_ms \
             FROM tasks WHERE id = $1",
            $lock
        )
    };
}
pub(crate) const SELECT_TASK: &str = select_task!("");
/// [`SELECT_TASK`], holding the row against updates until the transaction ends.
pub(crate) const SELECT_TASK_SHARED: &str = select_task!(" FOR SHARE");
pub(crate) const PURGE_DPOP_PROOFS: &str = "DELETE FROM dpop_proofs WHERE expires_at_ms < $1";
/// Burns a DPoP proof (`$1` its hash, `$2` when it may be forgotten, `$3` now): a row comes
/// back if it is new or its earlier use has expired (the sweep had not purged it yet), none if
/// it is in use. A racing use of the same proof waits on the key and then sees this one.
pub(crate) const BURN_DPOP_PROOF: &str = "INSERT INTO dpop_proofs (hash, expires_at_ms) \
     VALUES ($1, $2) ON CONFLICT (hash) DO UPDATE SET expires_at_ms = excluded.expires_at_ms \
     WHERE dpop_proofs.expires_at_ms < $3 RETURNING hash";

pub(crate) const INSERT_RESOURCE_SERVER: &str = "INSERT INTO resource_servers \
     (name, audience, system, environment, sensitivity, credential_hash, created_by, \
     created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(crate) const SELECT_RESOURCE_SERVER: &str = "SELECT name, audience, system, environment, \
     sensitivity, created_by, created_at_ms FROM resource_servers WHERE name = $1";
pub(crate) const SELECT_RESOURCE_SERVER_BY_AUDIENCE: &str = "SELECT name, audience, system, \
     environment, sensitivity, created_by, created_at_ms FROM resource_servers \
     WHERE audience = $1";
pub(crate) const SELECT_RESOURCE_SERVER_BY_CREDENTIAL: &str = "SELECT name, audience, system, \
     environment, sensitivity, created_by, created_at_ms FROM resource_servers \
     WHERE credential_hash = $1";
pub(crate) const LIST_RESOURCE_SERVERS: &str = "SELECT name, audience, system, environment, \
     sensitivity, created_by, created_at_ms FROM resource_servers ORDER BY name";
pub(crate) const DELETE_RESOURCE_SERVER: &str =
    "DELETE FROM resource_servers WHERE name = $1 RETURNING name";

pub(crate) const MAX_POLICY_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM policy_sets";
pub(crate) const INSERT_POLICY_SET: &str = "INSERT INTO policy_sets \
     (version, files, created_by, created_at_ms) VALUES ($1, $2, $3, $4)";
pub(crate) const SELECT_POLICY_SET: &str = "SELECT version, files, created_by, created_at_ms \
     FROM policy_sets WHERE version = $1";
pub(crate) const SELECT_POLICY_VERSIONS: &str = "SELECT version, files, created_by, \
     created_at_ms FROM policy_sets ORDER BY version DESC LIMIT $1";

/// The columns of an `ssf_streams` row, as `rows::SsfStreamRow` reads them.
macro_rules! ssf_stream_columns {
    () => {
        "id, receiver, audience, delivery_method, endpoint_url, sealed_authorization, \
         events_requested, events_delivered, description, created_at_ms, acked_through, status, \
         status_reason"
    };
}
pub(crate) const INSERT_SSF_STREAM: &str = concat!(
    "INSERT INTO ssf_streams (",
    ssf_stream_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);
/// Replaces the receiver-chosen columns of stream `$1`. Returns the id if it exists.
pub(crate) const UPDATE_SSF_STREAM: &str = "UPDATE ssf_streams SET delivery_method = $2, \
     endpoint_url = $3, sealed_authorization = $4, events_requested = $5, \
     events_delivered = $6, description = $7 WHERE id = $1 RETURNING id";
/// Stream `$1`'s status.
pub(crate) const SSF_STATUS_OF: &str = "SELECT status FROM ssf_streams WHERE id = $1";
/// Sets stream `$1`'s status `$2` and reason `$3`.
pub(crate) const SET_SSF_STATUS: &str =
    "UPDATE ssf_streams SET status = $2, status_reason = $3 WHERE id = $1";
pub(crate) const DELETE_SSF_VERIFICATIONS: &str =
    "DELETE FROM ssf_verifications WHERE stream_id = $1";
pub(crate) const COUNT_SSF_VERIFICATIONS: &str =
    "SELECT COUNT(*) FROM ssf_verifications WHERE stream_id = $1";
pub(crate) const INSERT_SSF_VERIFICATION: &str =
    "INSERT INTO ssf_verifications (stream_id, state, requested_at_ms) VALUES ($1, $2, $3)";
pub(crate) const SELECT_SSF_VERIFICATIONS: &str = "SELECT seq, state, requested_at_ms \
     FROM ssf_verifications WHERE stream_id = $1 ORDER BY seq LIMIT $2";
pub(crate) const ACK_SSF_VERIFICATION: &str =
    "DELETE FROM ssf_verifications WHERE stream_id = $1 AND seq = $2";
pub(crate) const SELECT_SSF_STREAM: &str = concat!(
    "SELECT ",
    ssf_stream_columns!(),
    " FROM ssf_streams WHERE id = $1"
);
pub(crate) const LIST_SSF_STREAMS: &str = concat!(
    "SELECT ",
    ssf_stream_columns!(),
    " FROM ssf_streams WHERE id > $1 ORDER BY id LIMIT $2"
);
pub(crate) const LIST_SSF_STREAMS_OF: &str = concat!(
    "SELECT ",
    ssf_stream_columns!(),
    " FROM ssf_streams WHERE receiver = $1 AND id > $2 ORDER BY id LIMIT $3"
);
pub(crate) const COUNT_SSF_STREAMS_OF: &str =
    "SELECT COUNT(*) FROM ssf_streams WHERE receiver = $1";
pub(crate) const DELETE_SSF_ACKS: &str = "DELETE FROM ssf_acks WHERE stream_id = $1";
pub(crate) const DELETE_SSF_STREAM: &str = "DELETE FROM ssf_streams WHERE id = $1 RETURNING id";
pub(crate) const SSF_ACKED_THROUGH: &str = "SELECT acked_through FROM ssf_streams WHERE id = $1";
/// Whether log entry `r` is one stream `$1` publishes: a revoked credential (epochs are not
/// published as events) that its receiver may see — an operator sees every one, a resource
/// server those of credentials for its audience. Entries it may not see count as delivered.
macro_rules! ssf_visible {
    () => {
        "r.kind = 'credential' AND ( \
         (SELECT receiver FROM ssf_streams WHERE id = $1) LIKE 'user:%' \
         OR r.audience = (SELECT rs.audience FROM resource_servers rs \
         JOIN ssf_streams s ON s.receiver = 'resource_server:' || rs.name WHERE s.id = $1))"
    };
}
/// The log entries after stream `$1`'s position that it publishes and has not acknowledged,
/// with the kind of credential each revoked, oldest first, at most `$2`.
pub(crate) const SELECT_SSF_PENDING: &str = concat!(
    "SELECT r.seq, r.kind, r.credential, r.agent, r.task_id, r.audience, r.revoked_at_ms, \
     r.expires_at_ms, r.reason, r.txn, c.kind AS credential_kind FROM revocations r \
     JOIN credentials c ON c.id = r.credential \
     WHERE r.seq > (SELECT acked_through FROM ssf_streams WHERE id = $1) \
     AND NOT EXISTS (SELECT 1 FROM ssf_acks a WHERE a.stream_id = $1 AND a.seq = r.seq) AND ",
    ssf_visible!(),
    " ORDER BY r.seq LIMIT $2"
);
/// Acknowledges log position `$2` for stream `$1` if the log holds it and it lies after the
/// stream's position `$3`.
pub(crate) const INSERT_SSF_ACK: &str = "INSERT INTO ssf_acks (stream_id, seq) \
     SELECT $1, seq FROM revocations WHERE seq = $2 AND seq > $3 ON CONFLICT DO NOTHING";
/// The first log position after `$2` that stream `$1` publishes and has not acknowledged; 0
/// when there is none (positions start at 1).
pub(crate) const FIRST_SSF_UNACKED: &str = concat!(
    "SELECT COALESCE(MIN(r.seq), 0) FROM revocations r \
     WHERE r.seq > $2 \
     AND NOT EXISTS (SELECT 1 FROM ssf_acks a WHERE a.stream_id = $1 AND a.seq = r.seq) AND ",
    ssf_visible!()
);
/// The last position stream `$1` acknowledged out of order; 0 when there is none.
pub(crate) const LAST_SSF_ACK: &str =
    "SELECT COALESCE(MAX(seq), 0) FROM ssf_acks WHERE stream_id = $1";
pub(crate) const ADVANCE_SSF_STREAM: &str =
    "UPDATE ssf_streams SET acked_through = $2 WHERE id = $1";
/// Moves stream `$1`'s position to `$2` unless it is already there or beyond.
pub(crate) const ADVANCE_SSF_STREAM_TO: &str =
    "UPDATE ssf_streams SET acked_through = $2 WHERE id = $1 AND acked_through < $2";
pub(crate) const PRUNE_SSF_ACKS: &str = "DELETE FROM ssf_acks WHERE stream_id = $1 AND seq <= $2";
/// One statement, so of concurrent claimants exactly one takes an unclaimed or lapsed push
/// stream (`$2` the holder, `$3` now, `$4` the claim's end), and only while it is enabled: a
/// paused or disabled stream is claimed by no one, so a delivery under way stops at its next
/// renewal. Returns the id if claimed.
pub(crate) const CLAIM_SSF_STREAM: &str = "UPDATE ssf_streams \
     SET claimed_by = $2, claimed_until_ms = $4 \
     WHERE id = $1 AND delivery_method = 'push' AND status = 'enabled' \
     AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_until_ms <= $3) RETURNING id";

/// Claims or renews the sequencer's lease (`$1` `'audit'`, `$2` the holder, `$3` now, `$4`
/// until when), with [`CLAIM_SSF_STREAM`]'s parameters: a row comes back if the lease was free,
/// already `$2`'s, or ran out by `$3`.
pub(crate) const CLAIM_SEQUENCER: &str = "INSERT INTO sequencer_lease (id, holder, until_ms) \
     VALUES ($1, $2, $4) ON CONFLICT (id) DO UPDATE \
     SET holder = excluded.holder, until_ms = excluded.until_ms \
     WHERE sequencer_lease.holder = excluded.holder OR sequencer_lease.until_ms <= $3 \
     RETURNING id";

/// Columns of [`crate::rows::ApprovalRow`].
macro_rules! approval_columns {
    () => {
        "id, state, uses_left, asked, verdict"
    };
}
pub(crate) const INSERT_APPROVAL: &str = "INSERT INTO approvals (id, task_id, agent, owner, \
     credential, action, resource, arguments_digest, state, created_at_ms, expires_at_ms, \
     uses_left, version, asked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, 0, \
     (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals), $11)";
pub(crate) const SELECT_APPROVAL: &str = concat!(
    "SELECT ",
    approval_columns!(),
    " FROM approvals WHERE id = $1"
);
/// The pending, unexpired request for a call (binds: task, agent, action, resource,
/// arguments digest, now).
pub(crate) const PENDING_APPROVAL_FOR_CALL: &str = concat!(
    "SELECT ",
    approval_columns!(),
    " FROM approvals WHERE task_id = $1 AND agent = $2 AND action = $3 AND resource = $4 \
     AND arguments_digest = $5 AND state = 'pending' AND expires_at_ms > $6 \
     ORDER BY created_at_ms, id LIMIT 1"
);
/// The live grant for a call (same binds), oldest first.
pub(crate) const GRANT_FOR_CALL: &str = "SELECT id FROM approvals WHERE task_id = $1 \
     AND agent = $2 AND action = $3 AND resource = $4 AND arguments_digest = $5 \
     AND state = 'approved' AND uses_left > 0 AND grant_expires_at_ms > $6 \
     ORDER BY created_at_ms, id LIMIT 1";
/// Spends one use of a grant; `used` when it was the last. Returns the id if it was live.
pub(crate) const USE_GRANT: &str = "UPDATE approvals SET uses_left = uses_left - 1, \
     state = CASE WHEN uses_left = 1 THEN 'used' ELSE 'approved' END, \
     version = (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals) \
     WHERE id = $1 AND state = 'approved' AND uses_left > 0 AND grant_expires_at_ms > $2 \
     RETURNING id";
/// Records a human's answer to a pending request (binds: id, state, uses left, grant end,
/// verdict JSON, now). Returns the id if it was pending and unexpired.
pub(crate) const DECIDE_APPROVAL: &str = "UPDATE approvals SET state = $2, uses_left = $3, \
     grant_expires_at_ms = $4, verdict = $5, \
     version = (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals) \
     WHERE id = $1 AND state = 'pending' AND expires_at_ms > $6 RETURNING id";
/// How many requests of an agent are pending and unexpired (binds: agent, now).
pub(crate) const COUNT_PENDING_APPROVALS: &str = "SELECT COUNT(*) FROM approvals \
     WHERE agent = $1 AND state = 'pending' AND expires_at_ms > $2";
pub(crate) const APPROVALS_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM approvals";
/// Revokes the pending requests and live grants of credentials revoked after log position
/// `$1` (binds: position).
pub(crate) const REVOKE_APPROVALS_OF_CREDENTIALS: &str = "UPDATE approvals \
     SET state = 'revoked', version = (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals) \
     WHERE state IN ('pending', 'approved') \
     AND credential IN (SELECT credential FROM revocations WHERE seq > $1)";
pub(crate) const REVOKE_APPROVALS_OF_TASK: &str = "UPDATE approvals \
     SET state = 'revoked', version = (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals) \
     WHERE state IN ('pending', 'approved') AND task_id = $1";
pub(crate) const REVOKE_APPROVALS_OF_AGENT: &str = "UPDATE approvals \
     SET state = 'revoked', version = (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals) \
     WHERE state IN ('pending', 'approved') AND agent = $1";
pub(crate) const REVOKE_APPROVALS_OF_OWNER: &str = "UPDATE approvals \
     SET state = 'revoked', version = (SELECT COALESCE(MAX(version), 0) + 1 FROM approvals) \
     WHERE state IN ('pending', 'approved') AND owner = $1";
pub(crate) const LIST_APPROVALS: &str = concat!(
    "SELECT ",
    approval_columns!(),
    " FROM approvals ORDER BY created_at_ms DESC, id LIMIT $1"
);
/// Binds: now, limit.
pub(crate) const LIST_PENDING_APPROVALS: &str = concat!(
    "SELECT ",
    approval_columns!(),
    " FROM approvals WHERE state = 'pending' AND expires_at_ms > $1 \
     ORDER BY created_at_ms DESC, id LIMIT $2"
);

pub(crate) const INSERT_SECRET: &str =
    "INSERT INTO secrets (name, version, record) VALUES ($1, $2, $3)";
pub(crate) const INSERT_SECRET_VERSION: &str =
    "INSERT INTO secret_versions (name, version, sealed_value) VALUES ($1, $2, $3)";
/// Binds: name, new version, new record, expected version. Returns the name if it moved.
pub(crate) const UPDATE_SECRET: &str = "UPDATE secrets SET version = $2, record = $3 \
     WHERE name = $1 AND version = $4 RETURNING name";
pub(crate) const SELECT_SECRET: &str = "SELECT name, version, record FROM secrets WHERE name = $1";
pub(crate) const LIST_SECRETS: &str =
    "SELECT name, version, record FROM secrets ORDER BY name LIMIT $1";
/// The current version's sealed value.
pub(crate) const SELECT_SECRET_VALUE: &str = "SELECT v.sealed_value FROM secrets s \
     JOIN secret_versions v ON v.name = s.name AND v.version = s.version WHERE s.name = $1";
pub(crate) const DELETE_SECRET_VERSIONS: &str = "DELETE FROM secret_versions WHERE name = $1";
pub(crate) const DELETE_SECRET: &str = "DELETE FROM secrets WHERE name = $1 RETURNING name";

/// How many sightings a reporter has (binds: reporter).
pub(crate) const COUNT_SIGHTINGS_OF: &str = "SELECT COUNT(*) FROM sightings WHERE reporter = $1";
/// Whether a sighting exists (binds: reporter, source, route, user agent, reason).
pub(crate) const SIGHTING_EXISTS: &str = "SELECT reporter FROM sightings WHERE reporter = $1 \
     AND source = $2 AND route = $3 AND user_agent = $4 AND reason = $5";
/// Adds a report to its sighting (binds: reporter, source, route, user agent, reason, first,
/// last, count): the earliest first, the latest last, the counts summed.
pub(crate) const UPSERT_SIGHTING: &str = "INSERT INTO sightings \
     (reporter, source, route, user_agent, reason, first_seen_ms, last_seen_ms, count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (reporter, source, route, user_agent, reason) DO UPDATE SET \
     first_seen_ms = CASE WHEN excluded.first_seen_ms < sightings.first_seen_ms \
     THEN excluded.first_seen_ms ELSE sightings.first_seen_ms END, \
     last_seen_ms = CASE WHEN excluded.last_seen_ms > sightings.last_seen_ms \
     THEN excluded.last_seen_ms ELSE sightings.last_seen_ms END, \
     count = sightings.count + excluded.count";
pub(crate) const LIST_SIGHTINGS: &str = "SELECT reporter, source, route, user_agent, reason, \
     first_seen_ms, last_seen_ms, count FROM sightings ORDER BY last_seen_ms DESC, reporter, \
     source LIMIT $1";

pub(crate) const INSERT_ENGINE: &str = "INSERT INTO engines (name, record) VALUES ($1, $2)";
pub(crate) const SELECT_ENGINE: &str = "SELECT record FROM engines WHERE name = $1";
pub(crate) const LIST_ENGINES: &str = "SELECT record FROM engines ORDER BY name LIMIT $1";
pub(crate) const INSERT_ENGINE_ROLE: &str =
    "INSERT INTO engine_roles (engine, name, record) VALUES ($1, $2, $3)";
pub(crate) const SELECT_ENGINE_ROLE: &str =
    "SELECT record FROM engine_roles WHERE engine = $1 AND name = $2";
pub(crate) const LIST_ENGINE_ROLES: &str =
    "SELECT record FROM engine_roles WHERE engine = $1 ORDER BY name LIMIT $2";
/// Binds: id, engine, role, db_role, expires_at_ms, claimed_by, claimed_until_ms.
pub(crate) const INSERT_LEASE: &str = "INSERT INTO leases \
     (id, engine, role, db_role, expires_at_ms, claimed_by, claimed_until_ms, pending) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 1)";
/// Moves a live lease's credential end (binds: id, expires_at_ms, now_ms).
pub(crate) const RENEW_LEASE_CREDENTIAL: &str = "UPDATE credentials SET expires_at_ms = $2 \
     WHERE id = $1 AND kind = 'lease' AND revoked_at_ms IS NULL AND expires_at_ms > $3 \
     RETURNING id";
/// Moves a lease row's end, when its role is not ended (binds: id, expires_at_ms).
pub(crate) const RENEW_LEASE: &str = "UPDATE leases SET expires_at_ms = $2 \
     WHERE id = $1 AND ended_at_ms IS NULL RETURNING id";
/// Columns of [`crate::rows::LeaseRow`], from `leases l JOIN credentials c`.
macro_rules! lease_columns {
    () => {
        "SELECT l.id, l.engine, l.role, l.db_role, c.agent, c.task_id, c.parent, \
         c.issued_at_ms, l.expires_at_ms, c.revoked_at_ms, l.ended_at_ms, l.attempts, \
         l.last_error, l.pending FROM leases l JOIN credentials c ON c.id = l.id "
    };
}
pub(crate) const SELECT_LEASE: &str = concat!(lease_columns!(), "WHERE l.id = $1");
/// Leases of one agent, newest first (binds: agent, limit).
pub(crate) const LIST_AGENT_LEASES: &str = concat!(
    lease_columns!(),
    "WHERE c.agent = $1 ORDER BY c.issued_at_ms DESC, l.id LIMIT $2"
);
/// The newest leases (binds: limit).
pub(crate) const LIST_LEASES: &str = concat!(
    lease_columns!(),
    "ORDER BY c.issued_at_ms DESC, l.id LIMIT $1"
);
/// Leases to end at `$1`: not ended, revoked, expired or pending (never handed out: its
/// creator's claim ran out), due for a (re)try and not claimed by a live claim; the oldest
/// first (binds: now, limit).
pub(crate) const LEASES_TO_END: &str = concat!(
    lease_columns!(),
    "WHERE l.ended_at_ms IS NULL \
     AND (c.revoked_at_ms IS NOT NULL OR l.expires_at_ms <= $1 OR l.pending = 1) \
     AND l.retry_at_ms <= $1 AND (l.claimed_by IS NULL OR l.claimed_until_ms <= $1) \
     ORDER BY l.expires_at_ms, l.id LIMIT $2"
);
/// How many leases are due to end and not ended: revoked, expired, or pending with no live
/// claim of their creator (binds: now).
pub(crate) const COUNT_LEASES_OVERDUE: &str = "SELECT COUNT(*) FROM leases l \
     JOIN credentials c ON c.id = l.id WHERE l.ended_at_ms IS NULL \
     AND (c.revoked_at_ms IS NOT NULL OR l.expires_at_ms <= $1 \
     OR (l.pending = 1 AND (l.claimed_by IS NULL OR l.claimed_until_ms <= $1)))";
/// Claims a lease not ended (binds: id, holder, now, until); returns the id when claimed.
pub(crate) const CLAIM_LEASE: &str = "UPDATE leases \
     SET claimed_by = $2, claimed_until_ms = $4 \
     WHERE id = $1 AND ended_at_ms IS NULL \
     AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_until_ms <= $3) RETURNING id";
/// Marks a pending lease granted by its creator, still holding the claim, and gives the
/// claim up (binds: id, holder).
pub(crate) const GRANT_LEASE: &str = "UPDATE leases SET pending = 0, claimed_by = NULL, \
     claimed_until_ms = NULL WHERE id = $1 AND claimed_by = $2 AND pending = 1 \
     AND ended_at_ms IS NULL RETURNING id";
/// Gives up a claim (binds: id, holder).
pub(crate) const RELEASE_LEASE: &str = "UPDATE leases SET claimed_by = NULL, \
     claimed_until_ms = NULL WHERE id = $1 AND claimed_by = $2 RETURNING id";
/// Marks a lease ended by its claim holder (binds: id, holder, now).
pub(crate) const END_LEASE: &str = "UPDATE leases SET ended_at_ms = $3, claimed_by = NULL, \
     claimed_until_ms = NULL, last_error = NULL \
     WHERE id = $1 AND claimed_by = $2 AND ended_at_ms IS NULL RETURNING id";
/// Records a failed end by the claim holder (binds: id, holder, retry_at_ms, error).
pub(crate) const FAIL_LEASE: &str = "UPDATE leases SET attempts = attempts + 1, \
     retry_at_ms = $3, last_error = $4, claimed_by = NULL, claimed_until_ms = NULL \
     WHERE id = $1 AND claimed_by = $2 AND ended_at_ms IS NULL RETURNING id";

/// Claims the recertification work of an agent's due date, creating its row the first time
/// (binds: agent, holder, due, now, until); returns how far the work went (`new`, `warned`,
/// `suspended`) when claimed.
pub(crate) const CLAIM_RECERTIFICATION: &str = "INSERT INTO recertifications \
     (agent, due_at_ms, claimed_by, claimed_until_ms) VALUES ($1, $3, $2, $5) \
     ON CONFLICT (agent, due_at_ms) DO UPDATE \
     SET claimed_by = excluded.claimed_by, claimed_until_ms = excluded.claimed_until_ms \
     WHERE recertifications.claimed_by IS NULL OR recertifications.claimed_by = $2 \
     OR recertifications.claimed_until_ms <= $4 \
     RETURNING CASE WHEN suspended_at_ms IS NOT NULL THEN 'suspended' \
     WHEN warned_at_ms IS NOT NULL THEN 'warned' ELSE 'new' END";
/// Records how far the claim holder took the work and gives up the claim (binds: agent,
/// holder, step (`warned`, `suspended` or `released`), now, due); returns the agent when the
/// holder held the claim.
pub(crate) const FINISH_RECERTIFICATION: &str = "UPDATE recertifications SET \
     warned_at_ms = CASE WHEN $3 = 'released' THEN warned_at_ms \
     ELSE COALESCE(warned_at_ms, $4) END, \
     suspended_at_ms = CASE WHEN $3 = 'suspended' THEN COALESCE(suspended_at_ms, $4) \
     ELSE suspended_at_ms END, \
     claimed_by = NULL, claimed_until_ms = NULL \
     WHERE agent = $1 AND due_at_ms = $5 AND claimed_by = $2 RETURNING agent";
