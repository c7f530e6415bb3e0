-- Migration: 076_checkpoints.sql
-- Checkpoint management (B.7), kept as written.

CREATE TABLE IF NOT EXISTS checkpoints (
  id TEXT PRIMARY KEY,
  execution_id TEXT NOT NULL REFERENCES task_list_execution_runs(execution_id),
  task_id TEXT NOT NULL REFERENCES tasks(id),
  instance_id TEXT REFERENCES build_agent_instances(instance_id),
  git_ref TEXT NOT NULL,  -- Git commit SHA or ref
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  files_snapshot TEXT,  -- JSON: list of files and their hashes
  metadata TEXT  -- JSON: additional checkpoint metadata
);

-- Index for finding checkpoints by execution
CREATE INDEX IF NOT EXISTS idx_checkpoints_execution
  ON checkpoints(execution_id, created_at DESC);

-- Index for finding checkpoints by task
CREATE INDEX IF NOT EXISTS idx_checkpoints_task
  ON checkpoints(task_id);
