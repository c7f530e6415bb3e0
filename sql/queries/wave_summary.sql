-- The wave status summary (`buildctl waves`): per wave its counters and active agents.
--
-- Only assignments still held (assigned or running) make an agent active in a
-- wave: joining every assignment an agent ever held would count an agent that
-- finished its wave-1 task and now runs a wave-2 task as active in both waves.
-- skipped_count: the wave's tasks skipped because a dependency failed or the run
-- was cancelled (the wave's own counters count only completed and failed).
SELECT
  pew.wave_number,
  pew.status,
  pew.task_count,
  pew.completed_count,
  pew.failed_count,
  (SELECT COUNT(*) FROM wave_task_assignments s
   WHERE s.wave_id = pew.wave_id AND s.status = 'skipped') AS skipped_count,
  COUNT(DISTINCT bai.instance_id) as active_agents
FROM parallel_execution_waves pew
LEFT JOIN wave_task_assignments wta ON pew.wave_id = wta.wave_id
  AND wta.status IN ('assigned', 'running')
LEFT JOIN build_agent_instances bai ON wta.instance_id = bai.instance_id
  AND bai.status = 'running'
WHERE pew.execution_id = :execution_id
GROUP BY pew.wave_id
ORDER BY pew.wave_number;
