-- A revocation whose closure is still being revoked. Revoking a target commits the target's
-- own credentials (and its epochs) first; its descendants are then revoked in bounded
-- transactions, each taking the unrevoked children of the credentials the log holds after
-- `after_seq`, so no one transaction holds the write lock for the whole closure. The row goes
-- in the same transaction as the first log entries and is deleted by the transaction that
-- finds nothing left to revoke; a row left behind (the server stopped mid-way) is finished by
-- any replica once `touched_at_ms` is old. Keep in step with sqlite.
CREATE TABLE revocation_cascades (
    id            TEXT PRIMARY KEY NOT NULL,
    after_seq     BIGINT NOT NULL,
    revoked_at_ms BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    touched_at_ms BIGINT NOT NULL
);

-- The live children of each credential: what a cascade step (and a subtree's revocation)
-- looks for, found without reading the children earlier steps revoked. It replaces the index
-- of all children, which nothing else reads (credentials are never deleted).
DROP INDEX credentials_parent;
CREATE INDEX credentials_live_children ON credentials (parent) WHERE revoked_at_ms IS NULL;
