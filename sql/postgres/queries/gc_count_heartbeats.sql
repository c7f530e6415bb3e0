-- PostgreSQL dialect of sql/queries/gc_count_heartbeats.sql (mirrors the file as of
-- the gc rewrite's start: re-mirror it after that merge).
-- What gc_delete_heartbeats.sql would delete, counted (for --dry-run and reports).
SELECT COUNT(*) AS n FROM agent_heartbeats h
WHERE h.timestamp < (CAST(:cutoff AS timestamp) AT TIME ZONE 'UTC')
  AND h.instance_id NOT IN (
    SELECT a.instance_id
    FROM task_list_execution_runs r
    JOIN build_agent_instances a ON a.execution_id = r.execution_id
    WHERE r.status IN ('pending', 'running', 'paused'));
