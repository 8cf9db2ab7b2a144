-- Human approval of one exact tool call. Keep in step with postgres.

-- One approval request per row. The call it is about (task, agent, action, resource,
-- arguments digest) is in columns so identical pending requests are found and shared;
-- `asked` is the immutable rest (JSON), `verdict` the human's answer (JSON). A pending request
-- past `expires_at_ms` has expired; an approved one is a grant with `uses_left` calls until
-- `grant_expires_at_ms`. `version` is the approvals' change counter: every change sets it
-- above every earlier one, so replicas wake their waiters when its maximum moves.
CREATE TABLE approvals (
    id                  TEXT PRIMARY KEY NOT NULL,
    task_id             TEXT NOT NULL,
    agent               TEXT NOT NULL,
    owner               TEXT NOT NULL,
    credential          TEXT NOT NULL,
    action              TEXT NOT NULL,
    resource            TEXT NOT NULL,
    arguments_digest    TEXT NOT NULL,
    state               TEXT NOT NULL
                        CHECK (state IN ('pending', 'approved', 'used', 'denied', 'revoked')),
    created_at_ms       INTEGER NOT NULL,
    expires_at_ms       INTEGER NOT NULL,
    grant_expires_at_ms INTEGER,
    uses_left           INTEGER NOT NULL CHECK (uses_left >= 0),
    version             INTEGER NOT NULL,
    asked               TEXT NOT NULL,
    verdict             TEXT
) STRICT;
CREATE INDEX approvals_call ON approvals (task_id, agent, action, resource, arguments_digest);
CREATE INDEX approvals_listing ON approvals (created_at_ms, id);
CREATE INDEX approvals_agent ON approvals (agent);
CREATE INDEX approvals_owner ON approvals (owner);
CREATE INDEX approvals_credential ON approvals (credential);
CREATE INDEX approvals_version ON approvals (version);
