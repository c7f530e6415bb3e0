-- PostgreSQL dialect of sql/queries/execution_log_after.sql: same parameters, same
-- columns. `log tail --follow`: the lane's events written after :after_id, in id
-- order, with the filters of execution_log_filtered.sql.
--
-- Unlike SQLite (one writer at a time), ids here are handed out when a row is
-- inserted, not when it commits: a row with a smaller id can become visible after a
-- larger one was read, so a follower must allow for it (re-read a window below the
-- last id it saw, keeping the ids it printed).
-- SQLite's unary + (keeping its planner off an index) is not needed here.
SELECT tel.*, t.title, t.display_id
FROM task_execution_log tel
LEFT JOIN tasks t ON tel.task_id = t.id
WHERE tel.id > :after_id
  AND tel.execution_id = :execution_id
  AND (CAST(:task_id AS text) IS NULL OR tel.task_id = :task_id)
  AND (CAST(:types AS text) IS NULL
       OR tel.event_type IN (SELECT jsonb_array_elements_text(CAST(:types AS jsonb))))
  AND (:errors_only = 0 OR tel.event_type IN ('task_failed', 'error'))
  AND (CAST(:since AS text) IS NULL OR tel.timestamp >= now() + CAST(:since AS interval))
ORDER BY tel.id
LIMIT 1000;
