-- Revocations that also hold as "not before" epochs, and the audience of every credential and
-- log entry (so a resource server's feed shows only what concerns tokens for it). Keep in
-- step with sqlite.

-- The audience a credential was issued for (`aud`); NULL for credentials issued before this
-- column existed.
ALTER TABLE credentials ADD COLUMN audience TEXT;
CREATE INDEX credentials_agent_audience ON credentials (agent, audience);

-- Log entries are of three kinds: `credential` (one revoked credential, as before), `agent`
-- (every credential of `agent` issued at or before `revoked_at_ms`) and `task` (every
-- credential of `task_id` issued at or before `revoked_at_ms`). Epoch entries carry no
-- credential. `audience` says which resource server's feed shows the entry (NULL: operators
-- only).
ALTER TABLE revocations ADD COLUMN kind TEXT NOT NULL DEFAULT 'credential';
ALTER TABLE revocations ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE revocations ALTER COLUMN credential DROP NOT NULL;
ALTER TABLE revocations ADD COLUMN audience TEXT;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind
    CHECK (kind IN ('credential', 'agent', 'task'));
ALTER TABLE revocations ADD CONSTRAINT revocations_credential_kind
    CHECK ((kind = 'credential') = (credential IS NOT NULL));
ALTER TABLE revocations ADD CONSTRAINT revocations_task_kind
    CHECK (kind <> 'task' OR task_id IS NOT NULL);
CREATE INDEX revocations_audience ON revocations (audience, seq);
