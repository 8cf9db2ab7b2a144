-- A lease is pending from its registration until its creator has made its database role and
-- is about to hand out its password: `pending` 1. A pending lease whose creator's claim ran
-- out (the server crashed mid-way) was never handed out, and the reaper ends it: drops the
-- role should it exist. Leases registered before this column are granted. Keep in step with
-- postgres.
ALTER TABLE leases ADD COLUMN pending INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1));
