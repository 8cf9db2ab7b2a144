-- The write transaction that appended each audit record: a random id, so that after a failed
-- COMMIT the store can tell its own record from an identical one another transaction
-- appended at the same position meanwhile. NULL for records written before this column.
-- Keep in step with the other database.
ALTER TABLE audit_log ADD COLUMN txn TEXT;
