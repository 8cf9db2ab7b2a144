-- Shared Signals (SSF) event streams: the revocation log published to third-party receivers
-- as CAEP security event tokens. Keep in step with sqlite.

-- One stream per row. `receiver` is who owns it (`resource_server:<name>` or `user:<name>`);
-- every log entry at or before `acked_through` is delivered. Push streams name the
-- receiver's endpoint and, sealed under the master key, the Authorization header to send
-- (empty when there is none);
-- the replica delivering a push stream holds it through `claimed_by` until `claimed_until_ms`.
CREATE TABLE ssf_streams (
    id                   TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    receiver             TEXT COLLATE "C" NOT NULL,
    audience             TEXT NOT NULL,
    delivery_method      TEXT NOT NULL CHECK (delivery_method IN ('poll', 'push')),
    endpoint_url         TEXT,
    sealed_authorization BYTEA NOT NULL,
    events_requested     TEXT NOT NULL,
    events_delivered     TEXT NOT NULL,
    description          TEXT,
    created_at_ms        BIGINT NOT NULL,
    acked_through        BIGINT NOT NULL CHECK (acked_through >= 0),
    claimed_by           TEXT,
    claimed_until_ms     BIGINT,
    CHECK ((delivery_method = 'push') = (endpoint_url IS NOT NULL))
);
CREATE INDEX ssf_streams_receiver ON ssf_streams (receiver, id);

-- Log entries after a stream's `acked_through` that its receiver acknowledged out of order.
CREATE TABLE ssf_acks (
    stream_id TEXT COLLATE "C" NOT NULL REFERENCES ssf_streams (id),
    seq       BIGINT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
