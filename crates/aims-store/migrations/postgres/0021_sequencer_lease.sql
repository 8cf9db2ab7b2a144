-- The audit sequencer's lease: one replica of a deployment moves the audit queue into the log
-- on a schedule (`Store::claim_sequencer`); any replica still sequences before it reads the
-- log or changes state. One row, claimed by whoever finds it free or expired.
CREATE TABLE sequencer_lease (
    id       TEXT PRIMARY KEY NOT NULL CHECK (id = 'audit'),
    holder   TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
