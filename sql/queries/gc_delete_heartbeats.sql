-- Moved here from B.2's migration (an appendix defect: a DELETE inside a
-- migration runs once, at migrate time). gc runs it repeatedly, one bounded batch
-- per short transaction, until it deletes nothing.
-- :cutoff is an SQLite datetime modifier such as '-24 hours'.
DELETE FROM agent_heartbeats
WHERE id IN (
  SELECT id FROM agent_heartbeats
  WHERE timestamp < datetime('now', :cutoff)
  ORDER BY timestamp
  LIMIT :batch_size
);
