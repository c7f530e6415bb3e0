-- PostgreSQL dialect of sql/queries/progress_between_attempts.sql: same parameters,
-- same columns (read that file for why the query is written so).
--
-- Each failed attempt after the task's last task_completed in this lane, paired
-- with the next one, ordered by (timestamp, id). "The error" is context.error; an
-- event without one (or whose context is not valid JSON) is compared by its
-- message. IS NOT DISTINCT FROM is SQLite's IS: two NULLs are equal.
WITH failures AS (
  SELECT tel.id, tel.timestamp, tel.context, tel.message,
         ROW_NUMBER() OVER (ORDER BY tel.timestamp, tel.id) AS attempt
  FROM task_execution_log tel
  WHERE tel.execution_id = :execution_id
    AND tel.task_id = :task_id
    AND tel.event_type = 'task_failed'
    AND tel.id > COALESCE((
          SELECT MAX(done.id) FROM task_execution_log done
          WHERE done.execution_id = :execution_id
            AND done.task_id = :task_id
            AND done.event_type = 'task_completed'), 0)
)
SELECT
  tel1.timestamp AS attempt_1_time,
  tel2.timestamp AS attempt_2_time,
  tel1.context AS attempt_1_context,
  tel2.context AS attempt_2_context,
  -- Compare error messages
  CASE
    WHEN COALESCE(CASE WHEN buildctl_json_valid(tel1.context) THEN tel1.context::jsonb ->> 'error' END, tel1.message)
      IS NOT DISTINCT FROM
         COALESCE(CASE WHEN buildctl_json_valid(tel2.context) THEN tel2.context::jsonb ->> 'error' END, tel2.message)
    THEN 0 ELSE 1
  END AS error_changed
FROM failures tel1
JOIN failures tel2 ON tel2.attempt = tel1.attempt + 1
ORDER BY tel1.attempt;
