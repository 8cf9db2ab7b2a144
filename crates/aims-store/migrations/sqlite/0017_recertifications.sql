-- Recertification work: one row per agent per recertification date (`due_at_ms`, the agent's
-- `recertify_by` when the work began), saying whether its owner was warned and whether the
-- agent was suspended for it, so each happens once per date. A replica does the work only
-- while it holds the claim (`claimed_by` until `claimed_until_ms`). Keep in step with postgres.
CREATE TABLE recertifications (
    agent            TEXT NOT NULL,
    due_at_ms        INTEGER NOT NULL,
    warned_at_ms     INTEGER,
    suspended_at_ms  INTEGER,
    claimed_by       TEXT,
    claimed_until_ms INTEGER,
    PRIMARY KEY (agent, due_at_ms)
) STRICT;
