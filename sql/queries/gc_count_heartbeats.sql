-- What gc_delete_heartbeats.sql would delete, counted (for --dry-run and reports).
SELECT COUNT(*) AS n FROM agent_heartbeats h
WHERE h.timestamp < :cutoff
  AND h.instance_id NOT IN (
    SELECT a.instance_id
    FROM task_list_execution_runs r
    JOIN build_agent_instances a ON a.execution_id = r.execution_id
    WHERE r.status IN ('pending', 'running', 'paused'));
