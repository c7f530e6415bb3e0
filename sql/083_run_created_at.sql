-- Migration: 083_run_created_at.sql
-- Not in the appendix: when the run was created (planned). The appendix's run has
-- only started_at (its first claim) and completed_at, so "runs, oldest first" had to
-- lean on SQLite's rowid, which PostgreSQL has no equivalent of. Runs created before
-- this migration take their start (or end) time; `run start` sets it from now on.
ALTER TABLE task_list_execution_runs ADD COLUMN created_at TEXT;

UPDATE task_list_execution_runs
SET created_at = COALESCE(started_at, completed_at, strftime('%Y-%m-%d %H:%M:%f', 'now'))
WHERE created_at IS NULL;

CREATE INDEX IF NOT EXISTS idx_exec_runs_created
  ON task_list_execution_runs(created_at);
