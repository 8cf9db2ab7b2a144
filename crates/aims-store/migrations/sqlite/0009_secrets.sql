-- Brokered secrets: what is known about each (JSON `record`: version, readers, rotation
-- period, who and when) and every version's value, sealed under the master key by the
-- server (the store never sees a value in clear). Only the current version is read; older
-- ones are kept until the secret is deleted. Keep in step with postgres.
CREATE TABLE secrets (
    name    TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    record  TEXT NOT NULL
) STRICT;

CREATE TABLE secret_versions (
    name         TEXT NOT NULL REFERENCES secrets (name),
    version      INTEGER NOT NULL CHECK (version >= 1),
    sealed_value BLOB NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;
