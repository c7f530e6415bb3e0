-- PostgreSQL dialect of sql/queries/gc_expired_checkpoints.sql: checkpoints of ended runs
-- created before the cut-off, oldest first, a batch at a time.
SELECT c.id
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < now() + CAST(:cutoff_offset AS interval)
ORDER BY c.created_at, c.id
LIMIT :batch_size;
