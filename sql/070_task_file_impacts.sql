-- Migration: 070_task_file_impacts.sql
-- File impact tracking for conflict detection (B.9). The appendix names this file
-- but gives no contents; SPEC §3 defines them.

CREATE TABLE IF NOT EXISTS task_file_impacts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL REFERENCES tasks(id),
  file_path TEXT NOT NULL,
  operation TEXT NOT NULL,
  confidence REAL NOT NULL DEFAULT 0.5,
  source TEXT NOT NULL DEFAULT 'user_declared',
  created_at TEXT NOT NULL DEFAULT (datetime('now')),

  CONSTRAINT valid_operation CHECK (operation IN ('CREATE', 'UPDATE', 'DELETE', 'READ')),
  CONSTRAINT valid_confidence CHECK (confidence >= 0 AND confidence <= 1),
  CONSTRAINT valid_impact_source CHECK (source IN (
    'user_declared', 'ai_estimate', 'pattern_match', 'validated'
  )),
  UNIQUE(task_id, file_path, operation)
);

-- Conflict detection groups impacts by path.
CREATE INDEX IF NOT EXISTS idx_file_impacts_path
  ON task_file_impacts(file_path);
