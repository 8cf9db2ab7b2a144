-- The revocation log's lock: every transaction that appends to `revocations` holds this row
-- (`SELECT … FOR UPDATE`) from before it reads the log's end until it commits, so entries
-- commit in position order and readers that follow the log by position miss none. Revoking
-- writes take it after the audit head's lock; a step of a revocation's cascade takes it
-- alone, without the head's lock (crates/aims-store/src/revocation.rs).
CREATE TABLE revocation_log_lock (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1)
);
INSERT INTO revocation_log_lock (id) VALUES (1);
