-- The last :limit events of one execution (`log tail` without filters):
-- lane-isolated, newest first; the caller reverses the rows to print them oldest first.
--
-- tasks has no file column (file impacts live in task_file_impacts), so the
-- task's display id is selected beside its title. Ties on timestamp are broken by
-- row id, so the order is total.
SELECT tel.*, t.title, t.display_id
FROM task_execution_log tel
LEFT JOIN tasks t ON tel.task_id = t.id
WHERE tel.execution_id = :execution_id
ORDER BY tel.timestamp DESC, tel.id DESC
LIMIT :limit;
