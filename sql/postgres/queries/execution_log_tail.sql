-- PostgreSQL dialect of sql/queries/execution_log_tail.sql: same parameters, same
-- columns. The last :limit events of one execution: lane-isolated, newest
-- first; the caller reverses the rows to print them oldest first. Ties on timestamp
-- are broken by row id.
SELECT tel.*, t.title, t.display_id
FROM task_execution_log tel
LEFT JOIN tasks t ON tel.task_id = t.id
WHERE tel.execution_id = :execution_id
ORDER BY tel.timestamp DESC, tel.id DESC
LIMIT :limit;
