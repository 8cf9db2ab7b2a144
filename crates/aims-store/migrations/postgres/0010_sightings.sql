-- Callers an enforcement point refused before any decision (no token, one AIMS did not issue
-- for it, a bad proof): one row per reporter, source, route, user agent and reason, with
-- first and last sighting and a count, so a flood is counted, not written row by row.
-- Keep in step with sqlite.
CREATE TABLE sightings (
    reporter      TEXT COLLATE "C" NOT NULL,
    source        TEXT COLLATE "C" NOT NULL,
    route         TEXT COLLATE "C" NOT NULL,
    user_agent    TEXT COLLATE "C" NOT NULL,
    reason        TEXT COLLATE "C" NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    count         BIGINT NOT NULL CHECK (count >= 1),
    PRIMARY KEY (reporter, source, route, user_agent, reason)
);
CREATE INDEX sightings_last_seen ON sightings (last_seen_ms);
