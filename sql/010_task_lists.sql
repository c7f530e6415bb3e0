-- Base tables the appendix references but never defines (SPEC §3):
-- task_lists_v2, tasks and task_relationships. Numbered below 070 so that the
-- appendix's migrations (070-076) find them.

CREATE TABLE IF NOT EXISTS task_lists_v2 (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  description TEXT,
  status TEXT NOT NULL DEFAULT 'draft',
  max_parallel_agents INTEGER NOT NULL DEFAULT 3 CHECK (max_parallel_agents >= 1),
  source_file TEXT,  -- the file it was imported from, for people reading `tasks list`
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now')),

  CONSTRAINT valid_task_list_status CHECK (status IN (
    'draft', 'ready', 'in_progress', 'paused', 'completed', 'archived'
  ))
);

CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY,
  display_id TEXT NOT NULL,
  task_list_id TEXT NOT NULL REFERENCES task_lists_v2(id),
  title TEXT NOT NULL,
  description TEXT,
  command TEXT NOT NULL,
  validate_command TEXT,
  timeout_s REAL CHECK (timeout_s IS NULL OR timeout_s > 0),
  position INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now')),

  CONSTRAINT valid_task_status CHECK (status IN (
    'pending', 'in_progress', 'completed', 'failed', 'blocked', 'skipped'
  )),
  UNIQUE(task_list_id, display_id)
);

CREATE INDEX IF NOT EXISTS idx_tasks_list
  ON tasks(task_list_id, position);

-- depends_on: source_task_id waits for target_task_id.
CREATE TABLE IF NOT EXISTS task_relationships (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  source_task_id TEXT NOT NULL REFERENCES tasks(id),
  target_task_id TEXT NOT NULL REFERENCES tasks(id),
  relationship_type TEXT NOT NULL DEFAULT 'depends_on',
  created_at TEXT NOT NULL DEFAULT (datetime('now')),

  CONSTRAINT valid_relationship_type CHECK (relationship_type IN ('depends_on')),
  CONSTRAINT no_self_relationship CHECK (source_task_id <> target_task_id),
  UNIQUE(source_task_id, target_task_id, relationship_type)
);

CREATE INDEX IF NOT EXISTS idx_task_relationships_target
  ON task_relationships(target_task_id, relationship_type);
