-- Moved here from B.2's migration (an appendix defect: a DELETE inside a
-- migration runs once, at migrate time). gc runs it repeatedly, one bounded batch
-- per short transaction, until it deletes fewer rows than the batch size.
--
-- :cutoff is an absolute timestamp, computed once per gc from the database clock,
-- so the batches converge while agents keep writing new heartbeats.
-- Heartbeats of agents whose run is still pending, running or paused are kept
-- until the run ends: gc never touches an active run.
DELETE FROM agent_heartbeats
WHERE id IN (
  SELECT h.id FROM agent_heartbeats h
  WHERE h.timestamp < :cutoff
    AND h.instance_id NOT IN (
      SELECT a.instance_id
      FROM task_list_execution_runs r
      JOIN build_agent_instances a ON a.execution_id = r.execution_id
      WHERE r.status IN ('pending', 'running', 'paused'))
  ORDER BY h.timestamp
  LIMIT :batch_size
);
