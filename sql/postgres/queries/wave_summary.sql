-- PostgreSQL dialect of sql/queries/wave_summary.sql: same parameters, same columns
-- (read that file for why the query is written so).
--
-- The wave status summary: only assignments still held (assigned or running)
-- make an agent active in a wave; skipped_count beside the wave's counters.
SELECT
  pew.wave_number,
  pew.status,
  pew.task_count,
  pew.completed_count,
  pew.failed_count,
  (SELECT COUNT(*) FROM wave_task_assignments s
   WHERE s.wave_id = pew.wave_id AND s.status = 'skipped') AS skipped_count,
  COUNT(DISTINCT bai.instance_id) AS active_agents
FROM parallel_execution_waves pew
LEFT JOIN wave_task_assignments wta ON pew.wave_id = wta.wave_id
  AND wta.status IN ('assigned', 'running')
LEFT JOIN build_agent_instances bai ON wta.instance_id = bai.instance_id
  AND bai.status = 'running'
WHERE pew.execution_id = :execution_id
GROUP BY pew.wave_id
ORDER BY pew.wave_number;
