-- Checkpoints of ended runs created before the cut-off, oldest first: one batch of
-- ids for checkpoints.delete_checkpoints (refs first, then rows).
-- :cutoff_offset is the retention as a negative offset ('-604800.000 seconds').
SELECT c.id
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < strftime('%Y-%m-%d %H:%M:%f', 'now', :cutoff_offset)
ORDER BY c.created_at, c.id
LIMIT :batch_size;
