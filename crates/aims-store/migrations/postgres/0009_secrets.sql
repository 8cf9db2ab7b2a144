-- Brokered secrets: what is known about each (JSON `record`: version, readers, rotation
-- period, who and when) and every version's value, sealed under the master key by the
-- server (the store never sees a value in clear). Only the current version is read; older
-- ones are kept until the secret is deleted. Keep in step with sqlite.
CREATE TABLE secrets (
    name    TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    record  TEXT NOT NULL
);

CREATE TABLE secret_versions (
    name         TEXT COLLATE "C" NOT NULL REFERENCES secrets (name),
    version      BIGINT NOT NULL CHECK (version >= 1),
    sealed_value BYTEA NOT NULL,
    PRIMARY KEY (name, version)
);
