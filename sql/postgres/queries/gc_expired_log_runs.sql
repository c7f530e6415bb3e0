-- PostgreSQL dialect of sql/queries/gc_expired_log_runs.sql: the runs that ended before
-- the cut-off and still have a log, oldest first (gc deletes their log run by run).
SELECT r.execution_id
FROM task_list_execution_runs r
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND r.completed_at < now() + CAST(:cutoff_offset AS interval)
  AND EXISTS (SELECT 1 FROM task_execution_log tel WHERE tel.execution_id = r.execution_id)
ORDER BY r.completed_at;
