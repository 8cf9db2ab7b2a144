-- AIMS schema for SQLite. Times are unix milliseconds; hashes are lowercase hex.
-- Keep in step with migrations/postgres/0001_init.sql: both backends hold the same data.

-- Deployment-wide settings: `trust_domain` and `key_bundle_sequence`.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- Registered agents. `record` (the full agent as JSON) is the source of truth; the other
-- columns copy fields of it for filtering and ordering.
CREATE TABLE agents (
    name          TEXT PRIMARY KEY NOT NULL,
    owner         TEXT NOT NULL,
    environment   TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('active', 'suspended', 'quarantined', 'decommissioned')),
    revision      INTEGER NOT NULL CHECK (revision >= 0),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    record        TEXT NOT NULL
) STRICT;
CREATE INDEX agents_owner ON agents (owner, name);
CREATE INDEX agents_state ON agents (state, name);
CREATE INDEX agents_environment ON agents (environment, name);

-- One-time join tokens, by SHA-256 hash.
CREATE TABLE join_tokens (
    hash          TEXT PRIMARY KEY NOT NULL,
    agent         TEXT NOT NULL REFERENCES agents (name),
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
) STRICT;
CREATE INDEX join_tokens_agent ON join_tokens (agent);

-- Human principals; only the SHA-256 hash of each credential is kept.
CREATE TABLE users (
    name                     TEXT PRIMARY KEY NOT NULL,
    role                     TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'auditor')),
    created_at_ms            INTEGER NOT NULL,
    credential_rotated_at_ms INTEGER NOT NULL,
    credential_hash          TEXT NOT NULL UNIQUE
) STRICT;

-- Trust-domain signing keys; private keys sealed under the master key. Retired keys stay so
-- their kid is never reused.
CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY NOT NULL,
    alg                TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('next', 'current', 'previous', 'retired')),
    created_at_ms      INTEGER NOT NULL,
    public_jwk         TEXT NOT NULL,
    sealed_private_key BLOB NOT NULL
) STRICT;
-- At most one next, one current and one previous key.
CREATE UNIQUE INDEX signing_keys_one_per_state ON signing_keys (state) WHERE state <> 'retired';

-- The hash-chained audit log. `body` is exactly what was hashed; the other columns copy
-- fields of it for queries.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    time_ms   INTEGER NOT NULL,
    action    TEXT NOT NULL,
    agent     TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    body      TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_agent ON audit_log (agent, seq) WHERE agent IS NOT NULL;

-- The chain's head: the last record's seq and hash (0 and zeros while the log is empty).
-- Every transaction that appends reads and moves it.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  INTEGER NOT NULL CHECK (seq >= 0),
    hash TEXT NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
