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

-- Query keys of the audit log beside it: one row per record per owner, decision and policy it
-- names (`kind` 'owner', 'decision' or 'policy'), so `aims audit query` by any of them reads
-- only matching records. Derived data, outside the chain and the Merkle leaf: a query checks
-- every record it reads against its (verified) body, so a row altered here can hide a record
-- from a query but never change what one says. Filled in for the records written before it.
CREATE TABLE audit_keys (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (kind, key, seq)
) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO audit_keys (kind, key, seq)
    SELECT 'owner', json_extract(body, '$.owner'), seq FROM audit_log
    WHERE json_extract(body, '$.owner') IS NOT NULL;
INSERT OR IGNORE INTO audit_keys (kind, key, seq)
    SELECT 'decision', json_extract(body, '$.decision'), seq FROM audit_log
    WHERE json_extract(body, '$.decision') IS NOT NULL;
INSERT OR IGNORE INTO audit_keys (kind, key, seq)
    SELECT 'policy', p.value, a.seq FROM audit_log a, json_each(a.body, '$.policy_ids') p;
-- Records of one action in log order.
CREATE INDEX audit_log_action ON audit_log (action, seq);
