-- What gc would delete from checkpoints, counted (for --dry-run).
-- :cutoff_offset is the retention as a negative offset ('-604800.000 seconds').
SELECT COUNT(*) AS n
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < strftime('%Y-%m-%d %H:%M:%f', 'now', :cutoff_offset);
