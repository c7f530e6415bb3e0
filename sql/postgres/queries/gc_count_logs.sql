-- PostgreSQL dialect of sql/queries/gc_count_logs.sql (mirrors the file as of the gc
-- rewrite's start: re-mirror it after that merge).
-- What gc_delete_logs.sql would delete, counted.
SELECT COUNT(*) AS n FROM task_execution_log tel
WHERE tel.execution_id IN (
  SELECT execution_id FROM task_list_execution_runs
  WHERE status IN ('completed', 'failed', 'cancelled')
    AND completed_at < (CAST(:cutoff AS timestamp) AT TIME ZONE 'UTC'));
