-- Migration: 081_live_agents_index.sql (PostgreSQL dialect; conventions in 010)
-- Not in the appendix: the stale-agent query (queries/stale_agents.sql) judges live
-- agents by COALESCE(last_heartbeat, spawned_at). The appendix's
-- idx_build_agents_heartbeat covers only status = 'running' agents by
-- last_heartbeat; this partial index holds just the live agents, keyed the way the
-- query compares them (an expression index: the expression in its own parentheses).
CREATE INDEX IF NOT EXISTS idx_build_agents_live_silence
  ON build_agent_instances((COALESCE(last_heartbeat, spawned_at)))
  WHERE status IN ('initializing', 'running', 'idle');
