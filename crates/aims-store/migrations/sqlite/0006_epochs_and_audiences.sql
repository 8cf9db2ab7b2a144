-- Revocations that also hold as "not before" epochs, and the audience of every credential and
-- log entry (so a resource server's feed shows only what concerns tokens for it). Keep in
-- step with postgres.

-- The audience a credential was issued for (`aud`); NULL for credentials issued before this
-- column existed.
ALTER TABLE credentials ADD COLUMN audience TEXT;
CREATE INDEX credentials_agent_audience ON credentials (agent, audience);

-- Log entries are of three kinds: `credential` (one revoked credential, as before), `agent`
-- (every credential of `agent` issued at or before `revoked_at_ms`) and `task` (every
-- credential of `task_id` issued at or before `revoked_at_ms`). Epoch entries carry no
-- credential. `audience` says which resource server's feed shows the entry (NULL: operators
-- only). SQLite cannot drop a NOT NULL constraint, so the table is rebuilt with its
-- positions kept.
CREATE TABLE revocations_v2 (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('credential', 'agent', 'task')),
    credential    TEXT REFERENCES credentials (id),
    agent         TEXT NOT NULL,
    task_id       TEXT,
    audience      TEXT,
    revoked_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    CHECK ((kind = 'credential') = (credential IS NOT NULL)),
    CHECK (kind <> 'task' OR task_id IS NOT NULL)
) STRICT;
INSERT INTO revocations_v2
    (seq, kind, credential, agent, task_id, audience, revoked_at_ms, expires_at_ms, reason)
    SELECT seq, 'credential', credential, agent, task_id, NULL, revoked_at_ms, expires_at_ms,
           reason
    FROM revocations ORDER BY seq;
-- Positions are never reused: the new table continues from the old one's counter.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'revocations_v2', seq FROM sqlite_sequence WHERE name = 'revocations'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'revocations_v2');
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'revocations'), 0))
    WHERE name = 'revocations_v2';
DROP TABLE revocations;
ALTER TABLE revocations_v2 RENAME TO revocations;
CREATE INDEX revocations_audience ON revocations (audience, seq);
