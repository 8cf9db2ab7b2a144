-- Recertification work: one row per agent per recertification date (`due_at_ms`, the agent's
-- `recertify_by` when the work began), saying whether its owner was warned and whether the
-- agent was suspended for it, so each happens once per date. A replica does the work only
-- while it holds the claim (`claimed_by` until `claimed_until_ms`). Keep in step with sqlite.
CREATE TABLE recertifications (
    agent            TEXT COLLATE "C" NOT NULL,
    due_at_ms        BIGINT NOT NULL,
    warned_at_ms     BIGINT,
    suspended_at_ms  BIGINT,
    claimed_by       TEXT,
    claimed_until_ms BIGINT,
    PRIMARY KEY (agent, due_at_ms)
);

-- Query keys of the audit log beside it: one row per record per owner, decision and policy it
-- names (`kind` 'owner', 'decision' or 'policy'), so `aims audit query` by any of them reads
-- only matching records. Derived data, outside the chain and the Merkle leaf: a query checks
-- every record it reads against its (verified) body, so a row altered here can hide a record
-- from a query but never change what one says. Filled in for the records written before it.
CREATE TABLE audit_keys (
    kind TEXT COLLATE "C" NOT NULL,
    key  TEXT COLLATE "C" NOT NULL,
    seq  BIGINT NOT NULL,
    PRIMARY KEY (kind, key, seq)
);
INSERT INTO audit_keys (kind, key, seq)
    SELECT 'owner', body::jsonb ->> 'owner', seq FROM audit_log
    WHERE body::jsonb ->> 'owner' IS NOT NULL ON CONFLICT DO NOTHING;
INSERT INTO audit_keys (kind, key, seq)
    SELECT 'decision', body::jsonb ->> 'decision', seq FROM audit_log
    WHERE body::jsonb ->> 'decision' IS NOT NULL ON CONFLICT DO NOTHING;
INSERT INTO audit_keys (kind, key, seq)
    SELECT 'policy', p.value, a.seq FROM audit_log a,
    jsonb_array_elements_text(COALESCE(a.body::jsonb -> 'policy_ids', '[]'::jsonb)) p
    ON CONFLICT DO NOTHING;
-- Records of one action in log order.
CREATE INDEX audit_log_action ON audit_log (action, seq);
