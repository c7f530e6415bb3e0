-- What gc_delete_logs.sql would delete, counted (for --dry-run).
-- :cutoff_offset is the retention as a negative offset ('-2592000.000 seconds').
SELECT COUNT(*) AS n FROM task_execution_log tel
WHERE tel.execution_id IN (
  SELECT execution_id FROM task_list_execution_runs
  WHERE status IN ('completed', 'failed', 'cancelled')
    AND completed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', :cutoff_offset));
