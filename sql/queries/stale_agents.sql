-- Agents with stale heartbeats: live agents silent for longer than :threshold.
--
-- Looking only at status = 'running' agents with a last_heartbeat would miss an
-- agent that was spawned and died before its first heartbeat (last_heartbeat IS
-- NULL), and an idle one. So an agent in initializing, running or idle is judged
-- by last_heartbeat, or by spawned_at when it never sent one.
--
-- :threshold is an SQLite datetime modifier such as '-60 seconds'. The cut-off keeps
-- its milliseconds (strftime … %f): datetime('now', …) truncates to the second, which
-- made "silent for 2 s" mean anything from 2 to 3 s.
-- :execution_id limits the search to one run, or is NULL for all runs.
SELECT bai.*,
       CAST((julianday('now') - julianday(COALESCE(bai.last_heartbeat, bai.spawned_at))) * 24 * 60 * 60 AS INTEGER)
         AS seconds_since_heartbeat
FROM build_agent_instances bai
WHERE bai.status IN ('initializing', 'running', 'idle')
  AND COALESCE(bai.last_heartbeat, bai.spawned_at) < strftime('%Y-%m-%d %H:%M:%f', 'now', :threshold)
  AND (:execution_id IS NULL OR bai.execution_id = :execution_id)
ORDER BY COALESCE(bai.last_heartbeat, bai.spawned_at), bai.instance_id;
