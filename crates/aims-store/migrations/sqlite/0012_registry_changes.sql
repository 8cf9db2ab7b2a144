-- The registry's ordered change log, which each replica's in-memory view of the agents
-- follows: `change_seq` is the audit sequence number of the transaction that last changed the
-- agent's record or its posture snapshot. Writes hold the audit-head lock, so a larger
-- `change_seq` always commits later, and "every agent changed after (seq, name)" is a range
-- read of this index. Rows written before this column start at 0 and are read at start-up.
-- Keep in step with the other database.
ALTER TABLE agents ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX agents_change ON agents (change_seq, name);
