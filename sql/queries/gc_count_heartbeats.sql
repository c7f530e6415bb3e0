-- What gc_delete_heartbeats.sql would delete, counted (for --dry-run).
SELECT COUNT(*) AS n FROM agent_heartbeats
WHERE timestamp < strftime('%Y-%m-%d %H:%M:%f', 'now', :cutoff_offset);
