-- PostgreSQL dialect of sql/queries/gc_expired_checkpoints.sql (mirrors the file as
-- of the gc rewrite's start: re-mirror it after that merge).
-- Checkpoints of ended runs created before :cutoff (UTC text), oldest first.
SELECT c.id
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < (CAST(:cutoff AS timestamp) AT TIME ZONE 'UTC')
ORDER BY c.created_at, c.id
LIMIT :batch_size;
