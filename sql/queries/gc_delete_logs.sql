-- One batch of execution-log rows of runs that ended before :cutoff.
-- Rows of pending, running or paused runs are never selected.
DELETE FROM task_execution_log
WHERE id IN (
  SELECT tel.id FROM task_execution_log tel
  WHERE tel.execution_id IN (
    SELECT execution_id FROM task_list_execution_runs
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND completed_at < :cutoff)
  LIMIT :batch_size
);
