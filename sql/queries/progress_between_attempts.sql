-- Progress between attempts: did a task's error change from one failed attempt
-- to the next? (the no-progress check of `log failures`).
--
-- Each failed attempt is paired with the next one only, ordered by (timestamp,
-- id): joining every failed attempt with every later one would make n² pairs, and
-- "later" by timestamp alone would never compare two failures in the same second.
-- It is lane-isolated: both attempts belong to :execution_id. And, like
-- consecutive_failures.sql, it looks only at the consecutive failures, those
-- after the task's last task_completed.
--
-- "The error" is context.error; an event without one is compared by its message
-- (`=` on two NULLs would call every such pair "changed"), and so
-- is an event whose context is not valid JSON (a row written by an old version):
-- json_extract on it would fail the whole query.
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
  tel1.timestamp as attempt_1_time,
  tel2.timestamp as attempt_2_time,
  tel1.context as attempt_1_context,
  tel2.context as attempt_2_context,
  -- Compare error messages
  CASE
    WHEN COALESCE(CASE WHEN json_valid(tel1.context) THEN json_extract(tel1.context, '$.error') END, tel1.message)
      IS COALESCE(CASE WHEN json_valid(tel2.context) THEN json_extract(tel2.context, '$.error') END, tel2.message)
    THEN 0 ELSE 1
  END as error_changed
FROM failures tel1
JOIN failures tel2 ON tel2.attempt = tel1.attempt + 1
ORDER BY tel1.attempt;
