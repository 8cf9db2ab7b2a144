-- Identity and posture: attestation nonces, posture snapshots, and the register of every
-- credential AIMS issues (the one place revocation looks). Keep in step with sqlite.

-- A join token is bound to the key that first used it, so a retry with the same key works
-- (no lockout when an answer is lost) and any other key is refused.
ALTER TABLE join_tokens ADD COLUMN used_by_jkt TEXT;

-- Single-use attestation nonces, by SHA-256 hash.
CREATE TABLE attestation_nonces (
    hash          TEXT PRIMARY KEY NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);
CREATE INDEX attestation_nonces_expiry ON attestation_nonces (expires_at_ms);

-- The last accepted posture of each agent.
CREATE TABLE posture_snapshots (
    agent          TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES agents (name),
    evidence       TEXT NOT NULL,
    digest         TEXT NOT NULL,
    key_thumbprint TEXT NOT NULL,
    accepted_at_ms BIGINT NOT NULL
);

-- Every credential issued: kind (svid now; tokens, grants and leases later), owner agent,
-- parent credential (delegation, derivation), key binding, lifetime and revocation.
CREATE TABLE credentials (
    id             TEXT PRIMARY KEY NOT NULL,
    kind           TEXT NOT NULL,
    agent          TEXT COLLATE "C" NOT NULL REFERENCES agents (name),
    parent         TEXT REFERENCES credentials (id),
    key_thumbprint TEXT,
    issued_at_ms   BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT,
    revoked_reason TEXT
);
CREATE INDEX credentials_agent ON credentials (agent, revoked_at_ms);
CREATE INDEX credentials_parent ON credentials (parent);
