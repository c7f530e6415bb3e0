-- Migration: 075_execution_runs.sql
-- Execution run tracking (B.6), kept as written.
--
-- Appendix defect resolved: B.3 (task_execution_log) and B.6 (execution runs)
-- both claim number 075, as two different files. Two files numbered 075 would
-- leave their order to the accident of their names, and B.9's sequence lists
-- only 075_execution_runs.sql. So this one file 075 holds both tables: the runs
-- first, then the execution log (B.3), whose references (074) already exist.

CREATE TABLE IF NOT EXISTS task_list_execution_runs (
  execution_id TEXT PRIMARY KEY,
  task_list_id TEXT NOT NULL REFERENCES task_lists_v2(id),
  run_number INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  started_at TEXT,
  completed_at TEXT,
  triggered_by TEXT,  -- 'user', 'auto', 'retry'
  total_tasks INTEGER NOT NULL DEFAULT 0,
  completed_tasks INTEGER NOT NULL DEFAULT 0,
  failed_tasks INTEGER NOT NULL DEFAULT 0,
  skipped_tasks INTEGER NOT NULL DEFAULT 0,

  CONSTRAINT valid_run_status CHECK (status IN (
    'pending', 'running', 'completed', 'failed', 'cancelled', 'paused'
  )),
  UNIQUE(task_list_id, run_number)
);

-- Index for finding runs by task list
CREATE INDEX IF NOT EXISTS idx_exec_runs_list
  ON task_list_execution_runs(task_list_id, run_number DESC);

-- Index for active runs
CREATE INDEX IF NOT EXISTS idx_exec_runs_active
  ON task_list_execution_runs(status)
  WHERE status IN ('pending', 'running', 'paused');

-- ---------------------------------------------------------------------------
-- Task execution log (B.3), kept as written.

CREATE TABLE IF NOT EXISTS task_execution_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  execution_id TEXT NOT NULL,
  task_id TEXT,
  instance_id TEXT REFERENCES build_agent_instances(instance_id),
  timestamp TEXT NOT NULL DEFAULT (datetime('now')),
  event_type TEXT NOT NULL,
  message TEXT NOT NULL,
  context TEXT,  -- JSON: additional context

  CONSTRAINT valid_event_type CHECK (event_type IN (
    'task_started', 'task_completed', 'task_failed', 'task_skipped',
    'checkpoint_created', 'checkpoint_restored',
    'discovery_recorded', 'validation_run',
    'error', 'warning', 'info'
  ))
);

-- Index for querying logs by execution (lane isolation)
CREATE INDEX IF NOT EXISTS idx_exec_log_execution
  ON task_execution_log(execution_id, timestamp DESC);

-- Index for querying logs by task
CREATE INDEX IF NOT EXISTS idx_exec_log_task
  ON task_execution_log(task_id, timestamp DESC);

-- Index for time-based queries
CREATE INDEX IF NOT EXISTS idx_exec_log_timestamp
  ON task_execution_log(timestamp);

-- Index for finding errors
CREATE INDEX IF NOT EXISTS idx_exec_log_errors
  ON task_execution_log(event_type, execution_id)
  WHERE event_type IN ('task_failed', 'error');
