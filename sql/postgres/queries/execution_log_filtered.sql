-- PostgreSQL dialect of sql/queries/execution_log_filtered.sql: same parameters,
-- same columns. `log tail` with filters; lane-isolated, newest first; the caller
-- reverses the rows to print them oldest first. Ties on timestamp are broken by id.
--
-- :task_id      a task id, or NULL for every task
-- :types        a JSON array of event types, or NULL for every type
-- :errors_only  1 to keep only task_failed and error events (served by idx_exec_log_errors)
-- :since        an offset such as '-900.000 seconds' (an interval), or NULL
SELECT tel.*, t.title, t.display_id
FROM task_execution_log tel
LEFT JOIN tasks t ON tel.task_id = t.id
WHERE tel.execution_id = :execution_id
  AND (CAST(:task_id AS text) IS NULL OR tel.task_id = :task_id)
  AND (CAST(:types AS text) IS NULL
       OR tel.event_type IN (SELECT jsonb_array_elements_text(CAST(:types AS jsonb))))
  AND (:errors_only = 0 OR tel.event_type IN ('task_failed', 'error'))
  AND (CAST(:since AS text) IS NULL OR tel.timestamp >= now() + CAST(:since AS interval))
ORDER BY tel.timestamp DESC, tel.id DESC
LIMIT :limit;
