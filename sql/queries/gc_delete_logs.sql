-- One batch of the execution log of one ended run (:execution_id, from
-- gc_expired_log_runs.sql). Constant cost per batch: the rows are an index range of
-- that run's log, and the run's status is checked again here, so the log of a
-- pending, running or paused run is never deleted.
DELETE FROM task_execution_log
WHERE id IN (
  SELECT tel.id FROM task_execution_log tel
  WHERE tel.execution_id = :execution_id
    AND EXISTS (SELECT 1 FROM task_list_execution_runs r
                WHERE r.execution_id = :execution_id AND r.status IN ('completed', 'failed', 'cancelled'))
  LIMIT :batch_size
);
