-- Migration: 071_parallelism_analysis.sql
-- Task pair parallelism analysis cache (B.9; contents from SPEC §3). Each pair is
-- stored once, ordered, so (a, b) and (b, a) cannot both appear.

CREATE TABLE IF NOT EXISTS parallelism_analysis (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_a_id TEXT NOT NULL REFERENCES tasks(id),
  task_b_id TEXT NOT NULL REFERENCES tasks(id),
  can_parallel INTEGER NOT NULL CHECK (can_parallel IN (0, 1)),
  conflict_type TEXT,
  conflict_details TEXT,  -- JSON: { path, operations, confidences, threshold }
  analyzed_at TEXT NOT NULL DEFAULT (datetime('now')),

  CONSTRAINT ordered_pair CHECK (task_a_id < task_b_id),
  CONSTRAINT valid_conflict_type CHECK (conflict_type IS NULL OR conflict_type IN (
    'dependency', 'file_conflict', 'resource_conflict'
  )),
  UNIQUE(task_a_id, task_b_id)
);

CREATE INDEX IF NOT EXISTS idx_parallelism_b
  ON parallelism_analysis(task_b_id);
