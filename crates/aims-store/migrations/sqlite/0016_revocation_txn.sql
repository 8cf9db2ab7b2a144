-- The write transaction that appended each revocation-log entry: the same random id the
-- audit log records for that transaction (audit_log.txn), so every SSF event of one
-- revocation carries one `txn` (RFC 8417 §2.2) and it names the audit event that caused
-- them. NULL for entries written before this column. Keep in step with postgres.
ALTER TABLE revocations ADD COLUMN txn TEXT;
