-- PostgreSQL dialect of sql/queries/consecutive_failures.sql: same parameters, same
-- columns (read that file for why the query is written so).
--
-- The SIA trigger, counting consecutive failures only: the task_failed events after
-- the task's last task_completed in this execution. :task_id may be NULL to check
-- every task of the execution (typed by CAST: a bare NULL parameter has no type).
SELECT
  t.id,
  t.display_id,
  t.title,
  COUNT(*) AS failure_count,
  string_agg(tel.message, ' | ' ORDER BY tel.id) AS error_messages
FROM task_execution_log tel
JOIN tasks t ON tel.task_id = t.id
WHERE tel.execution_id = :execution_id
  AND tel.event_type = 'task_failed'
  AND (CAST(:task_id AS text) IS NULL OR tel.task_id = :task_id)
  AND tel.id > COALESCE((
        SELECT MAX(done.id) FROM task_execution_log done
        WHERE done.execution_id = tel.execution_id
          AND done.task_id = tel.task_id
          AND done.event_type = 'task_completed'), 0)
GROUP BY t.id
HAVING COUNT(*) >= :min_failures
ORDER BY t.position, t.id;
