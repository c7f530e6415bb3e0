-- The SIA trigger: tasks with at least :min_failures consecutive failures.
--
-- Only *consecutive* failures count: counting every task_failed event of the
-- task would trigger on a task that failed twice, succeeded in an earlier run of
-- the lane and failed once more. So only the task_failed events after the task's
-- last task_completed in this execution count. :task_id may be NULL to check
-- every task of the execution.
SELECT
  t.id,
  t.display_id,
  t.title,
  COUNT(*) as failure_count,
  GROUP_CONCAT(tel.message, ' | ') as error_messages
FROM task_execution_log tel
JOIN tasks t ON tel.task_id = t.id
WHERE tel.execution_id = :execution_id
  AND tel.event_type = 'task_failed'
  AND (:task_id IS NULL OR tel.task_id = :task_id)
  AND tel.id > COALESCE((
        SELECT MAX(done.id) FROM task_execution_log done
        WHERE done.execution_id = tel.execution_id
          AND done.task_id = tel.task_id
          AND done.event_type = 'task_completed'), 0)
GROUP BY t.id
HAVING COUNT(*) >= :min_failures
ORDER BY t.position, t.id;
