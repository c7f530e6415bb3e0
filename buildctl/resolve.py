"""Finding what a user named: the one resolver of every kind of id.

One rule set for all of them:
- runs (``ex_…``), agents (``ag_…``), checkpoints (``cp_…``) and task lists (``tl_…``):
  the exact id, else any unique prefix of one;
- a task list may also be named by its name, when only one list has it;
- a task is named within a run's task list: its display id (``T-001``), else its task
  id (``tk_…``), else any unique prefix of a task id of that list.
Nothing found is ``NotFound`` (exit 4), an empty or ambiguous name a ``UsageError``
(exit 2) that lists the candidates. The exact match comes first and costs one indexed
lookup: the hot path resolves an agent on every heartbeat.

Stdlib only; the user's text only ever travels as a bound parameter.
"""

from __future__ import annotations

from buildctl.errors import Conflict, NotFound, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from buildctl.storage import Database


def _by_id(db: Database, table: str, column: str, columns: str, value, noun: str, where: str = "",
           params: tuple = ()) -> dict:
    """The row of ``table`` whose ``column`` equals ``value`` or, failing that, is the only one
    starting with it. ``table``, ``column``, ``columns`` and ``where`` are our own SQL."""
    value = (value or "").strip() if isinstance(value, str) else value
    if not value:
        raise UsageError(f"empty {noun} id")
    extra = f" AND ({where})" if where else ""
    row = db.one(f"SELECT {columns} FROM {table} WHERE {column} = ?{extra}", (value, *params))
    if row is not None:
        return row
    rows = db.query(f"SELECT {columns} FROM {table} WHERE substr({column}, 1, ?) = ?{extra} "
                    f"ORDER BY {column} LIMIT 6", (len(value), value, *params))
    if not rows:
        raise NotFound(f"no {noun} matches {value!r}")
    if len(rows) > 1:
        shown = ", ".join(r[column] for r in rows[:5])
        raise UsageError(f"{noun} id {value!r} is ambiguous: it matches {shown}{', …' if len(rows) > 5 else ''}")
    return rows[0]


_RUN = "execution_id, task_list_id, run_number, status"
_AGENT = "instance_id, execution_id, status, current_task_id, wave_number, config"


def execution(db: Database, value: str) -> dict:
    """The run (execution_id, task_list_id, run_number, status) named by ``value``."""
    return _by_id(db, "task_list_execution_runs", "execution_id", _RUN, value, "execution")


def task(db: Database, run: dict, value: str) -> dict:
    """The task (id, display_id) of the run's task list named by ``value``."""
    value = (value or "").strip()
    if not value:
        raise UsageError("empty task id")
    list_id = run["task_list_id"]
    row = db.one("SELECT id, display_id FROM tasks WHERE task_list_id = ? AND (display_id = ? OR id = ?) "
                 "ORDER BY CASE WHEN display_id = ? THEN 0 ELSE 1 END LIMIT 1", (list_id, value, value, value))
    if row is not None:
        return row
    try:
        return _by_id(db, "tasks", "id", "id, display_id", value, "task", where="task_list_id = ?", params=(list_id,))
    except NotFound:
        raise NotFound(f"no task {value!r} in execution {run['execution_id']} (task list {list_id})") from None


def agent(db: Database, value: str, *, execution_id: str | None = None) -> dict:
    """The agent (instance_id, execution_id, status, current_task_id, wave_number, config);
    with ``execution_id``, one that belongs to that run (another lane's agent is a Conflict)."""
    row = _by_id(db, "build_agent_instances", "instance_id", _AGENT, value, "agent")
    if execution_id is not None and row["execution_id"] != execution_id:
        raise Conflict(f"agent {row['instance_id']} belongs to execution {row['execution_id']}, not {execution_id}")
    return row


def task_list(db: Database, value: str) -> dict:
    """The task list (id, name) named by an id, a unique id prefix, or its name when only one list has it."""
    value = (value or "").strip()
    if not value:
        raise UsageError("empty task list id")
    try:
        return _by_id(db, "task_lists_v2", "id", "id, name", value, "task list")
    except NotFound:
        pass
    named = db.query("SELECT id, name FROM task_lists_v2 WHERE name = ? ORDER BY created_at, id", (value,))
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        shown = ", ".join(r["id"] for r in named[:5])
        raise UsageError(f"task list name {value!r} is ambiguous: {len(named)} lists have it ({shown}); give an id")
    raise NotFound(f"no task list matches {value!r} (by id prefix or name)")


def checkpoint(db: Database, value: str) -> dict:
    """The checkpoint row named by ``value``."""
    return _by_id(db, "checkpoints", "id", "*", value, "checkpoint")
