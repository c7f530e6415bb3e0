-- PostgreSQL dialect of sql/queries/gc_count_checkpoints.sql (mirrors the file as of
-- the gc rewrite's start: re-mirror it after that merge).
-- What gc would delete from checkpoints, counted. :cutoff is UTC text from the
-- database clock; read as UTC, never in the session's TimeZone.
SELECT COUNT(*) AS n
FROM checkpoints c
JOIN task_list_execution_runs r ON r.execution_id = c.execution_id
WHERE r.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at < (CAST(:cutoff AS timestamp) AT TIME ZONE 'UTC');
