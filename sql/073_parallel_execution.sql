-- Migration: 073_parallel_execution.sql
-- Waves and wave task assignments (B.4, B.5), kept as written.
-- task_list_execution_runs is created by 075; SQLite checks foreign keys when rows
-- are written, not when tables are created, so the forward reference is safe.

CREATE TABLE IF NOT EXISTS parallel_execution_waves (
  wave_id TEXT PRIMARY KEY,
  execution_id TEXT NOT NULL REFERENCES task_list_execution_runs(execution_id),
  wave_number INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  started_at TEXT,
  completed_at TEXT,
  task_count INTEGER NOT NULL,
  completed_count INTEGER DEFAULT 0,
  failed_count INTEGER DEFAULT 0,

  CONSTRAINT valid_wave_status CHECK (status IN (
    'pending', 'running', 'completed', 'failed', 'cancelled'
  )),
  UNIQUE(execution_id, wave_number)
);

-- Index for finding active waves
CREATE INDEX IF NOT EXISTS idx_waves_active
  ON parallel_execution_waves(execution_id, status)
  WHERE status IN ('pending', 'running');

CREATE TABLE IF NOT EXISTS wave_task_assignments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  wave_id TEXT NOT NULL REFERENCES parallel_execution_waves(wave_id),
  task_id TEXT NOT NULL REFERENCES tasks(id),
  instance_id TEXT REFERENCES build_agent_instances(instance_id),
  status TEXT NOT NULL DEFAULT 'pending',
  assigned_at TEXT,
  completed_at TEXT,

  CONSTRAINT valid_assignment_status CHECK (status IN (
    'pending', 'assigned', 'running', 'completed', 'failed', 'skipped'
  )),
  UNIQUE(wave_id, task_id)
);

-- Index for finding tasks in a wave
CREATE INDEX IF NOT EXISTS idx_wave_tasks
  ON wave_task_assignments(wave_id, status);

-- Index for finding tasks by instance
CREATE INDEX IF NOT EXISTS idx_wave_tasks_instance
  ON wave_task_assignments(instance_id)
  WHERE instance_id IS NOT NULL;
