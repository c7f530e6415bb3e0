-- Migration: 081_live_agents_index.sql
-- Not in the appendix: the stale-agent query (sql/queries/stale_agents.sql) judges
-- live agents by COALESCE(last_heartbeat, spawned_at). The appendix's
-- idx_build_agents_heartbeat covers only status = 'running' agents by
-- last_heartbeat, so once ANALYZE has statistics (gc's PRAGMA optimize may run it)
-- SQLite preferred a full scan of build_agent_instances. This partial index holds
-- just the live agents, keyed the way the query compares them.
CREATE INDEX IF NOT EXISTS idx_build_agents_live_silence
  ON build_agent_instances(COALESCE(last_heartbeat, spawned_at))
  WHERE status IN ('initializing', 'running', 'idle');
