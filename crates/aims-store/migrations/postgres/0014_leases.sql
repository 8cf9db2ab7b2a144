-- Dynamic database credentials. Engines and role templates are JSON records (`record`), the
-- source of truth; the key columns copy fields of them. Keep in step with sqlite.
CREATE TABLE engines (
    name   TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    record TEXT NOT NULL
);

CREATE TABLE engine_roles (
    engine TEXT COLLATE "C" NOT NULL REFERENCES engines (name),
    name   TEXT COLLATE "C" NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (engine, name)
);

-- A lease is a credential (`credentials.kind = 'lease'`, parent the task token it was asked
-- with), so revoking the token, its task, its agent or its owner revokes the lease in the
-- same closure. This row says which database role it is and whether that role has been
-- ended (sessions terminated, role dropped): `ended_at_ms` NULL until then. A replica ends a
-- lease only while it holds the claim (`claimed_by` until `claimed_until_ms`); a failed end
-- is retried from `retry_at_ms`.
CREATE TABLE leases (
    id               TEXT PRIMARY KEY NOT NULL REFERENCES credentials (id),
    engine           TEXT COLLATE "C" NOT NULL REFERENCES engines (name),
    role             TEXT COLLATE "C" NOT NULL,
    db_role          TEXT NOT NULL UNIQUE,
    expires_at_ms    BIGINT NOT NULL,
    ended_at_ms      BIGINT,
    claimed_by       TEXT,
    claimed_until_ms BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    retry_at_ms      BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT
);
CREATE INDEX leases_open ON leases (expires_at_ms) WHERE ended_at_ms IS NULL;
