-- PostgreSQL dialect of sql/queries/gc_count_checkpoints.sql: what gc would delete from
-- checkpoints, counted.
SELECT COUNT(*) AS n
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < now() + CAST(:cutoff_offset AS interval);
