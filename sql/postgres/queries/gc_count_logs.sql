-- PostgreSQL dialect of sql/queries/gc_count_logs.sql: what gc would delete from the log, counted.
SELECT COUNT(*) AS n FROM task_execution_log tel
WHERE tel.execution_id IN (
  SELECT execution_id FROM task_list_execution_runs
  WHERE status IN ('completed', 'failed', 'cancelled')
    AND completed_at < now() + CAST(:cutoff_offset AS interval));
