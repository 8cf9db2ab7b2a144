-- Versioned policy sets. Each push stores a complete set (policy files, schema, tests) as a
-- new version; exactly one version is active. Keep in step with sqlite.
CREATE TABLE policy_sets (
    version       BIGINT PRIMARY KEY NOT NULL,
    files         TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
