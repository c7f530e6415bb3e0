-- Checkpoints of ended runs created before :cutoff, oldest first.
SELECT c.id
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < :cutoff
ORDER BY c.created_at, c.id
LIMIT :batch_size;
