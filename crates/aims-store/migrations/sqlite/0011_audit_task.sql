-- The task each audit record belongs to, copied beside the record (as `action` and `agent`
-- are) so that one task's records are found without reading the whole log; filled in for the
-- records written before this column. Keep in step with the other database.
ALTER TABLE audit_log ADD COLUMN task_id TEXT;
UPDATE audit_log SET task_id = json_extract(body, '$.task_id');
CREATE INDEX audit_log_task ON audit_log (task_id, seq) WHERE task_id IS NOT NULL;
-- An agent's latest record of one kind (its last decision, for the inventory).
CREATE INDEX audit_log_agent_action ON audit_log (agent, action, seq) WHERE agent IS NOT NULL;
