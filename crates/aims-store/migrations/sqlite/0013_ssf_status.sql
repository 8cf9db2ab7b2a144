-- SSF stream status (SSF 1.0 §8.1.2) and the verification events receivers ask for (§8.1.4).
-- Keep in step with postgres.

-- A stream is `enabled` (delivered), `paused` (nothing delivered; what it would carry waits
-- in the revocation log and its verification queue) or `disabled` (nothing delivered and
-- nothing kept: leaving or entering that state moves `acked_through` to the log's head and
-- empties the queue). `status_reason` is the receiver's reason for the last change.
ALTER TABLE ssf_streams ADD COLUMN status TEXT NOT NULL DEFAULT 'enabled'
    CHECK (status IN ('enabled', 'paused', 'disabled'));
ALTER TABLE ssf_streams ADD COLUMN status_reason TEXT;

-- Verification events a stream still has to deliver, oldest first; a row is deleted once the
-- receiver has the event. `state` is the receiver's opaque value, echoed in the event.
CREATE TABLE ssf_verifications (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT NOT NULL REFERENCES ssf_streams (id),
    state           TEXT,
    requested_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX ssf_verifications_stream ON ssf_verifications (stream_id, seq);
