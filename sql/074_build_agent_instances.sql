-- Migration: 074_build_agent_instances.sql
-- Build agent instances and heartbeats (B.1, B.2), kept as written.

CREATE TABLE IF NOT EXISTS build_agent_instances (
  instance_id TEXT PRIMARY KEY,
  execution_id TEXT NOT NULL REFERENCES task_list_execution_runs(execution_id),
  agent_type TEXT NOT NULL DEFAULT 'build-agent',
  current_task_id TEXT REFERENCES tasks(id),
  wave_number INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'initializing',
  spawned_at TEXT NOT NULL DEFAULT (datetime('now')),
  completed_at TEXT,
  last_heartbeat TEXT,
  config TEXT,  -- JSON: { maxRetries, heartbeatIntervalMs, taskTimeoutMs, validationTimeoutMs }
  error_context TEXT,  -- JSON: { code, message, taskId, stackTrace, timestamp }

  CONSTRAINT valid_status CHECK (status IN (
    'initializing', 'running', 'idle', 'completed', 'failed', 'stuck'
  ))
);

-- Index for finding agents by execution
CREATE INDEX IF NOT EXISTS idx_build_agents_execution
  ON build_agent_instances(execution_id);

-- Index for finding agents by status
CREATE INDEX IF NOT EXISTS idx_build_agents_status
  ON build_agent_instances(status);

-- Index for finding agents with stale heartbeats
CREATE INDEX IF NOT EXISTS idx_build_agents_heartbeat
  ON build_agent_instances(last_heartbeat)
  WHERE status = 'running';

CREATE TABLE IF NOT EXISTS agent_heartbeats (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  instance_id TEXT NOT NULL REFERENCES build_agent_instances(instance_id),
  timestamp TEXT NOT NULL DEFAULT (datetime('now')),
  status TEXT NOT NULL,
  current_task_id TEXT,
  progress_percent INTEGER,
  memory_usage_mb INTEGER,
  cpu_percent REAL
);

-- Index for recent heartbeats per agent
CREATE INDEX IF NOT EXISTS idx_heartbeats_instance
  ON agent_heartbeats(instance_id, timestamp DESC);

-- Index for time-based cleanup
CREATE INDEX IF NOT EXISTS idx_heartbeats_timestamp
  ON agent_heartbeats(timestamp);

-- Appendix defect resolved: B.2 ends this file with
--   DELETE FROM agent_heartbeats WHERE timestamp < datetime('now', '-24 hours');
-- Inside a migration that would run once, at migrate time, and never again. The
-- 24-hour retention belongs to `buildctl gc` (--keep-heartbeats, default 24h),
-- which runs sql/queries/gc_delete_heartbeats.sql in bounded batches.
