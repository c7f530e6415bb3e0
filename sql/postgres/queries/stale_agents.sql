-- PostgreSQL dialect of sql/queries/stale_agents.sql: same parameters, same columns
-- (read that file for why the query is written so).
--
-- Agents in initializing, running or idle judged by last_heartbeat, or by
-- spawned_at when they never sent one, against the server's clock.
-- :threshold is an offset such as '-60.000 seconds' (an interval).
-- :execution_id limits the search to one run, or is NULL for all runs.
SELECT bai.*,
       CAST(floor(EXTRACT(EPOCH FROM (now() - COALESCE(bai.last_heartbeat, bai.spawned_at)))) AS bigint)
         AS seconds_since_heartbeat
FROM build_agent_instances bai
WHERE bai.status IN ('initializing', 'running', 'idle')
  AND COALESCE(bai.last_heartbeat, bai.spawned_at) < now() + CAST(:threshold AS interval)
  AND (CAST(:execution_id AS text) IS NULL OR bai.execution_id = :execution_id)
ORDER BY COALESCE(bai.last_heartbeat, bai.spawned_at), bai.instance_id;
