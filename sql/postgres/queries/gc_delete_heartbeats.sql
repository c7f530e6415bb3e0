-- PostgreSQL dialect of sql/queries/gc_delete_heartbeats.sql (read that file for why):
-- one bounded batch of heartbeats older than the cut-off, whatever their run's status,
-- reached through idx_heartbeats_timestamp. :cutoff_offset is an interval such
-- as '-86400.000 seconds', taken from the server's clock.
DELETE FROM agent_heartbeats
WHERE id IN (
  SELECT id FROM agent_heartbeats
  WHERE timestamp < now() + CAST(:cutoff_offset AS interval)
  ORDER BY timestamp
  LIMIT :batch_size
);
