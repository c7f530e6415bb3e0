-- `log tail --follow`: the lane's events written after :after_id, in id order
-- (ids are handed out under SQLite's single write lock, so id order is commit
-- order and a poll never skips a row). Same filters as execution_log_filtered.sql.
-- The unary + keeps SQLite off the (execution_id, timestamp) index, which would
-- read the whole lane on every poll: the rowid range id > :after_id holds only
-- the rows written since the last poll.
SELECT tel.*, t.title, t.display_id
FROM task_execution_log tel
LEFT JOIN tasks t ON tel.task_id = t.id
WHERE tel.id > :after_id
  AND +tel.execution_id = :execution_id
  AND (:task_id IS NULL OR tel.task_id = :task_id)
  AND (:types IS NULL OR tel.event_type IN (SELECT value FROM json_each(:types)))
  AND (:errors_only = 0 OR tel.event_type IN ('task_failed', 'error'))
  AND (:since IS NULL OR tel.timestamp >= strftime('%Y-%m-%d %H:%M:%f', 'now', :since))
ORDER BY tel.id
LIMIT 1000;
