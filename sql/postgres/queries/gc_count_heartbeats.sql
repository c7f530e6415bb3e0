-- PostgreSQL dialect of sql/queries/gc_count_heartbeats.sql: what gc_delete_heartbeats
-- would delete, counted (for --dry-run).
SELECT COUNT(*) AS n FROM agent_heartbeats
WHERE timestamp < now() + CAST(:cutoff_offset AS interval);
