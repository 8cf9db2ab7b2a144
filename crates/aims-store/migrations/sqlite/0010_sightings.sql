-- Callers an enforcement point refused before any decision (no token, one AIMS did not issue
-- for it, a bad proof): one row per reporter, source, route, user agent and reason, with
-- first and last sighting and a count, so a flood is counted, not written row by row.
-- Keep in step with postgres.
CREATE TABLE sightings (
    reporter      TEXT NOT NULL,
    source        TEXT NOT NULL,
    route         TEXT NOT NULL,
    user_agent    TEXT NOT NULL,
    reason        TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    count         INTEGER NOT NULL CHECK (count >= 1),
    PRIMARY KEY (reporter, source, route, user_agent, reason)
) STRICT;
CREATE INDEX sightings_last_seen ON sightings (last_seen_ms);
