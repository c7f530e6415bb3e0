-- One batch of heartbeats older than the cut-off, oldest first, whatever their run's
-- status (an agent's last_heartbeat keeps what staleness needs). It lives here, not
-- in a migration: a DELETE inside a migration would run once, at migrate time.
-- gc runs it repeatedly, one batch per short transaction, until it deletes fewer
-- rows than :batch_size.
--
-- Constant cost per batch: the rows are the first :batch_size entries of
-- idx_heartbeats_timestamp (all of them expired, since earlier batches took the older
-- ones); no row that is kept is read.
-- :cutoff_offset is the retention as a negative offset ('-86400.000 seconds').
DELETE FROM agent_heartbeats
WHERE id IN (
  SELECT id FROM agent_heartbeats
  WHERE timestamp < strftime('%Y-%m-%d %H:%M:%f', 'now', :cutoff_offset)
  ORDER BY timestamp
  LIMIT :batch_size
);
