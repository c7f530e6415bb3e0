-- PostgreSQL dialect of sql/queries/gc_delete_logs.sql (mirrors the file as of the gc
-- rewrite's start: re-mirror it after that merge).
-- One batch of execution-log rows of runs that ended before :cutoff (UTC text).
-- Rows of pending, running or paused runs are never selected.
DELETE FROM task_execution_log
WHERE id IN (
  SELECT tel.id FROM task_execution_log tel
  WHERE tel.execution_id IN (
    SELECT execution_id FROM task_list_execution_runs
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND completed_at < (CAST(:cutoff AS timestamp) AT TIME ZONE 'UTC'))
  LIMIT :batch_size
);
