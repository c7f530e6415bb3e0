-- PostgreSQL dialect of sql/queries/gc_delete_heartbeats.sql (mirrors the file as of
-- the gc rewrite's start: re-mirror it after that merge).
-- One bounded batch of expired heartbeats; gc repeats it, one short transaction per
-- batch, until it deletes fewer rows than :batch_size. :cutoff is UTC text from the
-- database clock, fixed for the whole gc. Heartbeats of agents whose run is still
-- pending, running or paused are kept.
DELETE FROM agent_heartbeats
WHERE id IN (
  SELECT h.id FROM agent_heartbeats h
  WHERE h.timestamp < (CAST(:cutoff AS timestamp) AT TIME ZONE 'UTC')
    AND h.instance_id NOT IN (
      SELECT a.instance_id
      FROM task_list_execution_runs r
      JOIN build_agent_instances a ON a.execution_id = r.execution_id
      WHERE r.status IN ('pending', 'running', 'paused'))
  ORDER BY h.timestamp
  LIMIT :batch_size
);
