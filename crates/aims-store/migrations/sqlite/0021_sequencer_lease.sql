-- The audit sequencer's lease (`Store::claim_sequencer`). A SQLite store has one process and
-- no audit queue, so its one replica holds the lease; the table keeps both stores alike.
CREATE TABLE sequencer_lease (
    id       TEXT PRIMARY KEY NOT NULL CHECK (id = 'audit'),
    holder   TEXT NOT NULL,
    until_ms INTEGER NOT NULL
) STRICT;
