-- The durable queue in front of the audit log. An event that changes nothing else (a
-- decision, a refusal) is acknowledged once its batch is a committed row here, which takes no
-- lock any other write needs; the next write transaction that takes the audit head's lock
-- moves every waiting batch into the chained log first (`taken`), so an event acknowledged
-- before a write began precedes that write's events. A taken row keeps its `txn` (its events
-- are cleared) for a while, so a writer whose COMMIT failed can learn whether it committed;
-- the store's sweep forgets it later. PostgreSQL only: a SQLite store has one writer, and its
-- events join the group commit as before.
CREATE TABLE audit_queue (
    id           BIGSERIAL PRIMARY KEY,
    txn          TEXT NOT NULL UNIQUE,
    events       TEXT NOT NULL,
    queued_at_ms BIGINT NOT NULL,
    taken        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX audit_queue_waiting ON audit_queue (id) WHERE NOT taken;
