-- Runs that ended before the cut-off and still have execution-log rows; gc deletes
-- their logs run by run (gc_delete_logs.sql). Read outside any write transaction.
-- :cutoff_offset is the retention as a negative offset ('-2592000.000 seconds').
SELECT r.execution_id
FROM task_list_execution_runs r
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND r.completed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', :cutoff_offset)
  AND EXISTS (SELECT 1 FROM task_execution_log tel WHERE tel.execution_id = r.execution_id)
ORDER BY r.completed_at;
