-- `log tail` with filters: execution_log_tail.sql plus optional filters.
-- Lane-isolated, newest first; the caller reverses the rows to print them oldest
-- first. Ties on timestamp are broken by row id.
--
-- :task_id      a task id, or NULL for every task
-- :types        a JSON array of event types, or NULL for every type
-- :errors_only  1 to keep only task_failed and error events (served by idx_exec_log_errors)
-- :since        an SQLite datetime modifier such as '-900.000 seconds', or NULL
SELECT tel.*, t.title, t.display_id
FROM task_execution_log tel
LEFT JOIN tasks t ON tel.task_id = t.id
WHERE tel.execution_id = :execution_id
  AND (:task_id IS NULL OR tel.task_id = :task_id)
  AND (:types IS NULL OR tel.event_type IN (SELECT value FROM json_each(:types)))
  AND (:errors_only = 0 OR tel.event_type IN ('task_failed', 'error'))
  AND (:since IS NULL OR tel.timestamp >= strftime('%Y-%m-%d %H:%M:%f', 'now', :since))
ORDER BY tel.timestamp DESC, tel.id DESC
LIMIT :limit;
