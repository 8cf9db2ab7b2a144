-- The audit log as a Merkle tree log (RFC 9162): the key that signs its checkpoints and the
-- checkpoints it has signed. The log key is Ed25519, PKCS#8 sealed under the master key like
-- the signing keys; one row, created by the first server that starts without one. A
-- checkpoint is a C2SP signed note over `origin\n<tree_size>\n<base64 root>\n`; two servers
-- that checkpoint the same size write the same note (Ed25519 signatures are deterministic),
-- so the first insert wins and the second changes nothing. Keep in step with the other
-- database.
CREATE TABLE audit_log_key (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    name               TEXT NOT NULL,
    public_key         BYTEA NOT NULL,
    sealed_private_key BYTEA NOT NULL,
    created_at_ms      BIGINT NOT NULL
);
CREATE TABLE audit_checkpoints (
    tree_size     BIGINT PRIMARY KEY CHECK (tree_size >= 0),
    root_hash     TEXT NOT NULL,
    note          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
