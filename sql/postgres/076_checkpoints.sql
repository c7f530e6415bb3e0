-- Migration: 076_checkpoints.sql (PostgreSQL dialect; conventions in 010)
-- Checkpoint management (B.7), kept as written.

CREATE TABLE IF NOT EXISTS checkpoints (
  id text COLLATE "C" PRIMARY KEY,
  execution_id text COLLATE "C" NOT NULL REFERENCES task_list_execution_runs(execution_id),
  task_id text COLLATE "C" NOT NULL REFERENCES tasks(id),
  instance_id text COLLATE "C" REFERENCES build_agent_instances(instance_id),
  git_ref text COLLATE "C" NOT NULL,  -- Git commit SHA or ref
  created_at timestamptz NOT NULL DEFAULT now(),
  files_snapshot text COLLATE "C",  -- JSON: list of files and their hashes
  metadata text COLLATE "C"  -- JSON: additional checkpoint metadata
);

-- Index for finding checkpoints by execution
CREATE INDEX IF NOT EXISTS idx_checkpoints_execution
  ON checkpoints(execution_id, created_at DESC);

-- Index for finding checkpoints by task
CREATE INDEX IF NOT EXISTS idx_checkpoints_task
  ON checkpoints(task_id);
