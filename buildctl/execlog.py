"""The execution log: one lane per execution (B.3, SPEC §4). Stdlib only (hot path)."""

from __future__ import annotations

import json
from typing import Any

from buildctl.errors import InvalidInput
from buildctl.storage import NOW, Database

#: The B.3 CHECK list.
EVENT_TYPES = (
    "task_started", "task_completed", "task_failed", "task_skipped",
    "checkpoint_created", "checkpoint_restored",
    "discovery_recorded", "validation_run",
    "error", "warning", "info",
)
ERROR_TYPES = ("task_failed", "error")


def append(db: Database, execution_id: str, event_type: str, message: str, *, task_id: str | None = None,
           instance_id: str | None = None, context: dict[str, Any] | None = None) -> int:
    """Insert one event inside the caller's write transaction; returns its row id.

    Domain code that changes state (assignments, checkpoints, agents) calls this in
    the same transaction as the change, so the log never disagrees with the tables.
    """
    if event_type not in EVENT_TYPES:
        raise InvalidInput(f"unknown event type {event_type!r}; expected one of: {', '.join(EVENT_TYPES)}")
    if context is not None and not isinstance(context, dict):
        raise InvalidInput("log context must be a JSON object")
    cur = db.execute(
        "INSERT INTO task_execution_log (execution_id, task_id, instance_id, timestamp, event_type, message, context) "
        f"VALUES (?, ?, ?, {NOW}, ?, ?, ?)",
        (execution_id, task_id, instance_id, event_type, message,
         None if context is None else json.dumps(context, ensure_ascii=False, sort_keys=True)),
    )
    return cur.lastrowid
