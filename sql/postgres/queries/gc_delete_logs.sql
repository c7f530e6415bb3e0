-- PostgreSQL dialect of sql/queries/gc_delete_logs.sql: one batch of one ended run's log,
-- through idx_exec_log_execution; the run is checked again to have ended.
DELETE FROM task_execution_log
WHERE id IN (
  SELECT tel.id FROM task_execution_log tel
  WHERE tel.execution_id = :execution_id
    AND EXISTS (SELECT 1 FROM task_list_execution_runs r
                WHERE r.execution_id = :execution_id AND r.status IN ('completed', 'failed', 'cancelled'))
  LIMIT :batch_size
);
