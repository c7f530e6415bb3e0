"""The execution log: one lane per execution, and the self-improvement agent's trigger.

Stdlib only, and cheap to import: ``log add`` runs once per task from scripts,
so even ``jsonstrict`` (and ``json``) is imported only by the functions that need it.

Every query names its execution (lane isolation). Reads order by (timestamp, id).
"""

from __future__ import annotations

from buildctl import resolve, states
from buildctl.errors import Conflict, InvalidInput, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only; typing costs ~6 ms at import
    from typing import Any, Iterator

    from buildctl.storage import Database

EVENT_TYPES = states.EVENT_TYPES

DEFAULT_TAIL = 500


def check_type(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        raise InvalidInput(f"unknown event type {event_type!r}; expected one of: {', '.join(EVENT_TYPES)}")


def append(db: Database, execution_id: str, event_type: str, message: str, *, task_id: str | None = None,
           instance_id: str | None = None, context: dict[str, Any] | None = None) -> int:
    """Insert one event inside the caller's write transaction; returns its row id.

    Domain code that changes state (assignments, checkpoints, agents) calls this in
    the same transaction as the change, so the log never disagrees with the tables.
    """
    check_type(event_type)
    context_text = None
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidInput("log context must be a JSON object")
        from buildctl import jsonstrict

        context_text = jsonstrict.dumps(context, what="the log context")
    return db.scalar(
        "INSERT INTO task_execution_log (execution_id, task_id, instance_id, timestamp, event_type, message, context) "
        f"VALUES (?, ?, ?, {db.sql.now}, ?, ?, ?) RETURNING id",
        (execution_id, task_id, instance_id, event_type, message, context_text),
    )


def parse_context(text: str | dict | None) -> dict | None:
    """``--context``: a JSON object, or refused with one line."""
    if text is None:
        return None
    from buildctl import jsonstrict

    if isinstance(text, dict):
        jsonstrict.check_value(text, what="--context")
        return text
    value = jsonstrict.loads(text, what="--context")
    if not isinstance(value, dict):
        raise InvalidInput(f"--context must be a JSON object, not {type(value).__name__ if value is not None else 'null'}")
    return value


# --------------------------------------------------------------------------- log add

def add(db: Database, execution_id: str, type: str, message: str, task: str | None = None,
        agent: str | None = None, context_json: str | dict | None = None) -> int:
    """``log add``: append one event to a lane after validating everything; returns the event id.

    An event written as an agent (``agent``) of a cancelled run is refused (Conflict):
    like its heartbeat, that is how a script driving an agent learns to stop (cancel
    reaches every agent). Without ``agent`` the lane stays open to notes by
    people and tools, a cancelled run's post-mortem included.
    """
    check_type(type)
    if message is None or not str(message).strip():
        raise InvalidInput("the message is empty")
    context = parse_context(context_json)
    with db.write():
        run = resolve.execution(db, execution_id)
        task_id = resolve.task(db, run, task)["id"] if task is not None else None
        instance_id = (resolve.agent(db, agent, execution_id=run["execution_id"])["instance_id"]
                       if agent is not None else None)
        if instance_id is not None and run["status"] == "cancelled":
            raise Conflict(f"run {run['execution_id']} was cancelled: agent {instance_id} must stop (event refused)")
        return append(db, run["execution_id"], type, message, task_id=task_id, instance_id=instance_id, context=context)


# --------------------------------------------------------------------------- tail / follow

def _filters(db: Database, run: dict, task: str | None, types, errors_only: bool, since_s: float | None) -> dict:
    """Validate the tail filters and turn them into the parameters of execution_log_filtered.sql."""
    types = list(types or ())
    for t in types:
        check_type(t)
    if since_s is not None and since_s < 0:
        raise UsageError("--since must not be negative")
    from buildctl import jsonstrict
    from buildctl.durations import offset

    return {
        "execution_id": run["execution_id"],
        "task_id": resolve.task(db, run, task)["id"] if task is not None else None,
        "types": jsonstrict.dumps(types) if types else None,
        "errors_only": 1 if errors_only else 0,
        "since": offset(since_s) if since_s is not None else None,
    }


def _has_filters(params: dict) -> bool:
    return bool(params["task_id"] or params["types"] or params["errors_only"] or params["since"])


def tail(db: Database, execution_id: str, limit: int = DEFAULT_TAIL, task: str | None = None, types=None,
         errors_only: bool = False, since_s: float | None = None) -> list[dict]:
    """The last ``limit`` events of one lane, oldest first (ties by id)."""
    return _tail(db, execution_id, limit, task, types, errors_only, since_s)[0]


def _tail(db, execution_id, limit, task, types, errors_only, since_s) -> tuple[list[dict], int, dict]:
    if limit is None or int(limit) < 1:
        raise UsageError(f"-n must be at least 1, not {limit}")
    with db.read():
        run = resolve.execution(db, execution_id)
        params = _filters(db, run, task, types, errors_only, since_s)
        if _has_filters(params):
            rows = db.named("execution_log_filtered", {**params, "limit": int(limit)})
        else:
            rows = db.named("execution_log_tail", {"execution_id": run["execution_id"], "limit": int(limit)})
        # The newest id anywhere when the snapshot was taken: follow continues after it.
        high = db.scalar("SELECT COALESCE(MAX(id), 0) FROM task_execution_log")
    rows.reverse()
    return [_event(r) for r in rows], high, params


def _event(row: dict) -> dict:
    """Stable keys for tables and JSON."""
    return {
        "id": row["id"],
        "timestamp": row["timestamp"],
        "execution_id": row["execution_id"],
        "event_type": row["event_type"],
        "task_id": row["task_id"],
        "task": row.get("display_id"),
        "instance_id": row["instance_id"],
        "message": row["message"],
        "context": row["context"],
    }


def follow(db: Database, execution_id: str, limit: int = DEFAULT_TAIL, task: str | None = None, types=None,
           errors_only: bool = False, since_s: float | None = None, poll_s: float = 0.2,
           max_poll_s: float = 1.0, on_ready=None) -> Iterator[dict]:
    """Yield the tail, then every new event of the lane in id order, until the run has ended.

    Polling is cheap: ``db.data_version()`` tells whether any other connection
    committed since the last look, and only then is the log queried (by rowid
    range). The run's status is read *before* each drain, so the events written
    before the run ended are all printed before the generator stops.
    ``on_ready`` is called once the starting point is fixed (after the tail).
    """
    import time

    rows, last_id, params = _tail(db, execution_id, limit, task, types, errors_only, since_s)
    yield from rows
    if on_ready is not None:
        on_ready()
    params = {**params, "after_id": last_id}
    seen_version = None
    delay = poll_s
    while True:
        version = db.data_version()
        if version != seen_version:
            seen_version = version
            with db.read():
                status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?",
                                   (params["execution_id"],))
                new = db.named("execution_log_after", params)
            for r in new:
                params["after_id"] = r["id"]
                yield _event(r)
            if status in states.RUN_ENDED or status is None:
                return
            delay = poll_s if new else min(max_poll_s, delay * 1.5)
        else:
            delay = min(max_poll_s, delay * 1.5)
        time.sleep(delay)


# --------------------------------------------------------------------------- SIA

def failures(db: Database, execution_id: str, task: str | None = None, min_failures: int = 3) -> list[dict]:
    """Tasks of the lane that hit the SIA trigger (≥ ``min_failures`` consecutive ``task_failed``).

    For each: whether the error changed between attempts
    (sql/queries/progress_between_attempts.sql, on ``context.error``). ``no_progress``
    looks at the trigger window, the last ``min_failures`` attempts: the same error each
    time means the task is stuck, however it failed before that.
    """
    if min_failures is None or int(min_failures) < 1:
        raise UsageError(f"--min must be at least 1, not {min_failures}")
    min_failures = int(min_failures)
    out = []
    with db.read():
        run = resolve.execution(db, execution_id)
        task_id = resolve.task(db, run, task)["id"] if task is not None else None
        hits = db.named("consecutive_failures", {"execution_id": run["execution_id"], "task_id": task_id,
                                                 "min_failures": min_failures})
        for hit in hits:
            pairs = db.named("progress_between_attempts", {"execution_id": run["execution_id"], "task_id": hit["id"]})
            window = pairs[-(min_failures - 1):] if min_failures > 1 else []
            changed = [p for p in pairs if p["error_changed"]]
            last = db.one("SELECT message, context FROM task_execution_log WHERE execution_id = ? AND task_id = ? "
                          "AND event_type = 'task_failed' ORDER BY timestamp DESC, id DESC LIMIT 1",
                          (run["execution_id"], hit["id"]))
            out.append({
                "task_id": hit["id"],
                "task": hit["display_id"],
                "title": hit["title"],
                "failure_count": hit["failure_count"],
                "sia_triggered": True,
                "no_progress": not any(p["error_changed"] for p in window),
                "error_changes": len(changed),
                "last_error": _error_of(last["context"]) or last["message"],
                "error_messages": hit["error_messages"],
                "attempts": [{k: p[k] for k in ("attempt_1_time", "attempt_2_time", "attempt_1_context",
                                                "attempt_2_context", "error_changed")} for p in pairs],
            })
    return out


def _error_of(context_text: str | None):
    from buildctl import jsonstrict

    value = jsonstrict.stored(context_text)
    return value.get("error") if isinstance(value, dict) else None

