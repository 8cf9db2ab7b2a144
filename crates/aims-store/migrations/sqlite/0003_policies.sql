-- Versioned policy sets. Each push stores a complete set (policy files, schema, tests) as a
-- new version; exactly one version is active. Keep in step with postgres.
CREATE TABLE policy_sets (
    version       INTEGER PRIMARY KEY NOT NULL,
    files         TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
