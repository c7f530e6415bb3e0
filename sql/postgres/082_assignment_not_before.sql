-- Migration: 082_assignment_not_before.sql (PostgreSQL dialect; conventions in 010)
-- Not in the appendix: when a failed attempt goes back to pending with retries left
-- (a script's `agent done --status failed`, a released task), the retry waits out its
-- backoff (1 s, 5 s, 15 s by default). not_before holds the earliest time the
-- assignment may be handed out again; NULL means at once. Claims skip a pending
-- assignment whose not_before is still ahead (database clock). Added as a column
-- beside the appendix's, which stay as written.
ALTER TABLE wave_task_assignments ADD COLUMN IF NOT EXISTS not_before timestamptz;
