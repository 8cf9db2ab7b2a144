-- Tasks, access tokens, the revocation log and resource servers. Keep in step with postgres.

-- A task: a bounded unit of work with a declared intent. Tokens issued for it name it.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY NOT NULL,
    agent         TEXT NOT NULL REFERENCES agents (name),
    intent        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    deadline_ms   INTEGER NOT NULL,
    ended_at_ms   INTEGER
) STRICT;
CREATE INDEX tasks_agent ON tasks (agent, created_at_ms);

-- Access tokens are credentials too; they belong to a task.
ALTER TABLE credentials ADD COLUMN task_id TEXT REFERENCES tasks (id);
CREATE INDEX credentials_task ON credentials (task_id);

-- Every revoked credential, in commit order: what replicas and enforcement points follow.
CREATE TABLE revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    credential    TEXT NOT NULL REFERENCES credentials (id),
    agent         TEXT NOT NULL,
    task_id       TEXT,
    revoked_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    reason        TEXT NOT NULL
) STRICT;

-- DPoP proofs used at the token endpoint (SHA-256 of key thumbprint and jti), so a proof is
-- used once across every replica.
CREATE TABLE dpop_proofs (
    hash          TEXT PRIMARY KEY NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX dpop_proofs_expiry ON dpop_proofs (expires_at_ms);

-- Resource servers tokens are issued for; they authenticate to introspect and follow
-- revocations.
CREATE TABLE resource_servers (
    name            TEXT PRIMARY KEY NOT NULL,
    audience        TEXT NOT NULL UNIQUE,
    system          TEXT NOT NULL,
    environment     TEXT NOT NULL,
    sensitivity     TEXT NOT NULL,
    credential_hash TEXT NOT NULL UNIQUE,
    created_by      TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
) STRICT;
