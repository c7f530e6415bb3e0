"""Every status list and event-type list, defined once.

The schema's CHECK constraints (sql/) hold the same lists; tests/test_migrations.py
compares them. Everything else imports from here: a list written out a second time
is a list that drifts. Stdlib only and free to import (the hot path uses it).
"""

# ----------------------------------------------------------------- runs (task_list_execution_runs)
RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "paused")
#: A run in one of these can still hand out work (gc and the log never touch it).
RUN_ACTIVE = ("pending", "running", "paused")
#: A run in one of these hands out work now (pause stops that).
RUN_GOING = ("pending", "running")
#: A run in one of these has ended: no new agents, no new claims.
RUN_ENDED = ("completed", "failed", "cancelled")
TRIGGERS = ("user", "auto", "retry")

# ---------------------------------------------------------------- waves (parallel_execution_waves)
WAVE_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
WAVE_OPEN = ("pending", "running")

# ------------------------------------------------------------- assignments (wave_task_assignments)
ASSIGNMENT_STATUSES = ("pending", "assigned", "running", "completed", "failed", "skipped")
#: Still to do: the wave barrier waits for these.
ASSIGNMENT_ACTIVE = ("pending", "assigned", "running")
#: Held by an agent right now (counts against max_parallel_agents).
ASSIGNMENT_HELD = ("assigned", "running")
ASSIGNMENT_ENDED = ("completed", "failed", "skipped")

# ------------------------------------------------------------------ agents (build_agent_instances)
AGENT_STATUSES = ("initializing", "running", "idle", "completed", "failed", "stuck")
#: Judged by their heartbeats: these can go stale.
AGENT_LIVE = ("initializing", "running", "idle")
#: Finished for good: heartbeats, claims and finish are refused.
AGENT_FINISHED = ("completed", "failed")
#: Out of work: an ended agent (completed, failed, stuck) never holds an assignment. A stuck agent that heartbeats again is running again.
AGENT_ENDED = ("completed", "failed", "stuck")
#: What a heartbeat may set; completed/failed go through `agent finish`, stuck is gc's.
HEARTBEAT_STATUSES = ("running", "idle")
FINISH_STATUSES = ("completed", "failed")

# --------------------------------------------------------------------------- task lists and tasks
LIST_STATUSES = ("draft", "ready", "in_progress", "paused", "completed", "archived")
TASK_STATUSES = ("pending", "in_progress", "completed", "failed", "blocked", "skipped")

# ---------------------------------------------------------- the execution log (task_execution_log)
EVENT_TYPES = (
    "task_started", "task_completed", "task_failed", "task_skipped",
    "checkpoint_created", "checkpoint_restored",
    "discovery_recorded", "validation_run",
    "error", "warning", "info",
)
ERROR_EVENT_TYPES = ("task_failed", "error")
#: The events that mark an attempt's start and end (and a task skipped): what a timeline is drawn from.
TASK_EVENT_TYPES = ("task_started", "task_completed", "task_failed", "task_skipped")


def sql_list(values: tuple) -> str:
    """``('a', 'b')`` for an SQL ``IN``: the lists above are trusted literals, never user text."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"
