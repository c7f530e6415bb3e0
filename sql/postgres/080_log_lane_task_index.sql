-- Migration: 080_log_lane_task_index.sql (PostgreSQL dialect; conventions in 010)
-- Not in the appendix: an index for the questions asked per task *within one lane*
-- (attempts so far, consecutive failures, progress between attempts). The appendix's
-- idx_exec_log_task (task_id, timestamp) spans every run of the list, so those
-- queries slowed down as a task list was run again and again; this one keeps them
-- proportional to the task's own events in the execution. The id column lets
-- "the last task_completed" be read from the index alone.
CREATE INDEX IF NOT EXISTS idx_exec_log_lane_task
  ON task_execution_log(execution_id, task_id, event_type, id);
