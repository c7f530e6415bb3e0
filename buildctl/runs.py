"""Execution runs: start (plan + persist waves), list,
show, pause/resume/cancel, and the wave summary.

Domain functions return plain data and never print. Each write is one short
``db.write()`` transaction; a refusal raises before anything is written.
"""

from __future__ import annotations

import os
from buildctl import assignments, execlog, jsonstrict, resolve
from buildctl.errors import Conflict, InvalidInput, NotFound, UsageError
from buildctl.states import (ASSIGNMENT_HELD, RUN_ACTIVE, RUN_GOING, RUN_STATUSES, TRIGGERS, WAVE_OPEN,
                             sql_list)
from buildctl.storage import Database

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from buildctl import planning


def _looks_like_file(value: str) -> bool:
    return value.lower().endswith((".toml", ".json")) or os.sep in value or value.startswith(".")


# --------------------------------------------------------------------------- start

def start_run(db: Database, list_or_file: str, *, triggered_by: str = "user",
              threshold: float | None = None) -> dict:
    """Create a run of a task list (importing a task-list FILE first) and plan its waves
    (file conflicts above ``threshold``, planning.DEFAULT_THRESHOLD by default).

    Given a file, an unchanged re-import of the same file reuses the newest list
    imported from it, so that run numbers continue; a changed file becomes a new list.
    A second run of a list plans only its tasks that are not completed yet.
    """
    # Only starting a run plans or reads a list: the other run commands (and run exec,
    # whose start-up is part of every run) do without their imports (~15 ms).
    from buildctl import planning, tasklists

    if threshold is None:
        threshold = planning.DEFAULT_THRESHOLD
    if triggered_by not in TRIGGERS:
        raise UsageError(f"invalid --triggered-by {triggered_by!r}: expected one of {', '.join(TRIGGERS)}")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise UsageError(f"invalid conflict threshold {threshold!r}: expected a number between 0 and 1") from None
    if not (0.0 <= threshold <= 1.0):
        raise UsageError(f"invalid conflict threshold {threshold}: expected a number between 0 and 1")

    value = (list_or_file or "").strip()
    if not value:
        raise UsageError("empty task list id or file")
    spec = None
    if os.path.isfile(value):
        spec = tasklists.load_file(value)  # validated before the transaction: a bad file writes nothing
    elif os.path.exists(value):
        raise UsageError(f"not a file: {value}")

    with db.write():
        imported = False
        if spec is not None:
            list_id = tasklists.find_identical(db, spec)
            if list_id is None:
                list_id = tasklists.insert_spec(db, spec)
                imported = True
        else:
            try:
                list_id = resolve.task_list(db, value)["id"]
            except NotFound:
                if _looks_like_file(value):
                    raise UsageError(f"no such task-list file or task list: {value}") from None
                raise
        return _plan_and_insert(db, list_id, triggered_by=triggered_by, threshold=threshold, imported=imported)


def _plan_and_insert(db: Database, list_id: str, *, triggered_by: str, threshold: float, imported: bool) -> dict:
    from buildctl import ids, planning

    lst = db.one("SELECT id, name, status, max_parallel_agents FROM task_lists_v2 WHERE id = ?", (list_id,))
    if lst["status"] == "archived":
        raise Conflict(f"task list {list_id} ({lst['name']}) is archived")
    active = db.one(
        "SELECT execution_id, run_number, status FROM task_list_execution_runs "
        f"WHERE task_list_id = ? AND status IN {sql_list(RUN_ACTIVE)} ORDER BY run_number LIMIT 1",
        (list_id,),
    )
    if active is not None:
        raise Conflict(
            f"task list {list_id} ({lst['name']}) already has an active run: {active['execution_id']} "
            f"(run #{active['run_number']}, {active['status']}); cancel it or let it finish first"
        )
    tasks = db.query(
        "SELECT id, display_id FROM tasks WHERE task_list_id = ? AND status <> 'completed' ORDER BY position, id",
        (list_id,),
    )
    if not tasks:
        raise Conflict(f"every task of task list {list_id} ({lst['name']}) is completed; there is nothing to run")
    planned = {t["id"] for t in tasks}
    display = {t["id"]: t["display_id"] for t in tasks}
    deps: dict[str, list[str]] = {t["id"]: [] for t in tasks}
    for r in db.query(
        "SELECT r.source_task_id, r.target_task_id FROM task_relationships r JOIN tasks t ON t.id = r.source_task_id "
        "WHERE t.task_list_id = ? AND r.relationship_type = 'depends_on' ORDER BY r.id", (list_id,)):
        # A dependency completed by an earlier run is satisfied; only planned ones order the waves.
        if r["source_task_id"] in planned and r["target_task_id"] in planned:
            deps[r["source_task_id"]].append(r["target_task_id"])
    impacts = [
        planning.Impact(r["task_id"], r["file_path"], r["operation"], r["confidence"])
        for r in db.query(
            "SELECT i.task_id, i.file_path, i.operation, i.confidence FROM task_file_impacts i "
            "JOIN tasks t ON t.id = i.task_id WHERE t.task_list_id = ? ORDER BY t.position, i.id", (list_id,))
        if r["task_id"] in planned
    ]
    order = [t["id"] for t in tasks]
    try:
        plan = planning.plan_waves(order, deps, impacts, threshold)
    except planning.CycleError as exc:
        raise InvalidInput(f"task list {list_id}: dependency cycle " + " -> ".join(display[t] for t in exc.cycle)) from None

    run_number = db.scalar("SELECT COALESCE(MAX(run_number), 0) + 1 FROM task_list_execution_runs WHERE task_list_id = ?",
                           (list_id,))
    execution_id = ids.new_id("execution")
    db.execute(
        "INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, triggered_by, total_tasks, "
        f"created_at) VALUES (?, ?, ?, 'pending', ?, ?, {db.sql.now})",
        (execution_id, list_id, run_number, triggered_by, len(order)),
    )
    wave_rows, assignment_rows = [], []
    for number, wave in enumerate(plan.waves, start=1):
        wave_id = ids.new_id("wave")
        wave_rows.append((wave_id, execution_id, number, len(wave)))
        assignment_rows.extend((wave_id, task_id) for task_id in wave)
    db.executemany(
        "INSERT INTO parallel_execution_waves (wave_id, execution_id, wave_number, status, task_count) "
        "VALUES (?, ?, ?, 'pending', ?)", wave_rows)
    db.executemany("INSERT INTO wave_task_assignments (wave_id, task_id, status) VALUES (?, ?, 'pending')",
                        assignment_rows)
    db.execute(
        f"UPDATE tasks SET status = 'pending', updated_at = {db.sql.now} WHERE task_list_id = ? AND status <> 'completed' "
        "AND status <> 'pending'", (list_id,))
    _cache_pairs(db, list_id, plan, display, threshold)
    assignments.list_status_for_run(db, list_id)
    execlog.append(
        db, execution_id, "info",
        f"run #{run_number} of {lst['name']} planned: {len(order)} tasks in {len(plan.waves)} waves, "
        f"{len(plan.conflicts)} file conflicts",
        context={"run_number": run_number, "task_list_id": list_id, "tasks": len(order), "waves": len(plan.waves),
                 "file_conflicts": len(plan.conflicts), "moved": [display[t] for t in plan.moved],
                 "threshold": threshold, "triggered_by": triggered_by, "imported": imported},
    )
    return {
        "execution_id": execution_id,
        "task_list_id": list_id,
        "task_list_name": lst["name"],
        "run_number": run_number,
        "triggered_by": triggered_by,
        "imported": imported,
        "total_tasks": len(order),
        "threshold": threshold,
        "waves": [[display[t] for t in w] for w in plan.waves],
        "conflicts": [
            {"first": display[c.first], "second": display[c.second], "path": c.path,
             "operations": [c.first_op, c.second_op], "confidences": [c.first_confidence, c.second_confidence]}
            for c in plan.conflicts
        ],
    }


def _cache_pairs(db: Database, list_id: str, plan: planning.Plan, display: dict[str, str], threshold: float) -> None:
    """Cache the file-conflict pairs in parallelism_analysis (task_a_id < task_b_id), replacing
    stale file-conflict rows among the planned tasks."""
    planned_sql = "SELECT id FROM tasks WHERE task_list_id = ? AND status <> 'completed'"
    db.execute(
        "DELETE FROM parallelism_analysis WHERE conflict_type = 'file_conflict' "
        f"AND task_a_id IN ({planned_sql}) AND task_b_id IN ({planned_sql})", (list_id, list_id))
    rows = []
    for c in plan.conflicts:
        a, b = (c.first, c.second) if c.first < c.second else (c.second, c.first)
        first_is_a = a == c.first
        details = {
            "path": c.path,
            "tasks": [display[a], display[b]],
            "operations": [c.first_op, c.second_op] if first_is_a else [c.second_op, c.first_op],
            "confidences": [c.first_confidence, c.second_confidence] if first_is_a
            else [c.second_confidence, c.first_confidence],
            "threshold": threshold,
            "later_in_file": display[c.second],
        }
        rows.append((a, b, jsonstrict.dumps(details, what="a file conflict")))
    db.executemany(
        "INSERT INTO parallelism_analysis (task_a_id, task_b_id, can_parallel, conflict_type, conflict_details, analyzed_at) "
        f"VALUES (?, ?, 0, 'file_conflict', ?, {db.sql.now}) "
        "ON CONFLICT(task_a_id, task_b_id) DO UPDATE SET can_parallel = 0, conflict_type = 'file_conflict', "
        "conflict_details = excluded.conflict_details, analyzed_at = excluded.analyzed_at",
        rows,
    )


# --------------------------------------------------------------------------- list / show

_RUN_COLUMNS = (
    "r.execution_id, r.task_list_id, l.name AS task_list_name, r.run_number, r.status, r.triggered_by, "
    "r.total_tasks, r.completed_tasks, r.failed_tasks, r.skipped_tasks, r.created_at, r.started_at, r.completed_at"
)


def list_runs(db: Database, *, list_ref: str | None = None, status: str | None = None) -> list[dict]:
    """Runs in the order they were created, optionally of one list and/or in one status."""
    where, params = [], []
    if status is not None:
        if status not in RUN_STATUSES:
            raise UsageError(f"invalid --status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
        where.append("r.status = ?")
        params.append(status)
    if list_ref is not None:
        where.append("r.task_list_id = ?")
        params.append(resolve.task_list(db, list_ref)["id"])
    sql = (f"SELECT {_RUN_COLUMNS} FROM task_list_execution_runs r JOIN task_lists_v2 l ON l.id = r.task_list_id "
           + ("WHERE " + " AND ".join(where) + " " if where else "") + "ORDER BY r.created_at, r.run_number, r.execution_id")
    return db.query(sql, params)


def _run_row(db: Database, execution_id: str) -> dict:
    row = db.one(f"SELECT {_RUN_COLUMNS}, l.max_parallel_agents FROM task_list_execution_runs r "
                 "JOIN task_lists_v2 l ON l.id = r.task_list_id WHERE r.execution_id = ?", (execution_id,))
    if row is None:
        raise NotFound(f"no execution {execution_id!r}")
    return row


def show_run(db: Database, value: str) -> dict:
    """One run with its counters and a line per wave (tasks and their assignment states)."""
    execution_id = resolve.execution(db, value)["execution_id"]
    with db.read():
        run = _run_row(db, execution_id)
        summary = {r["wave_number"]: r for r in db.named("wave_summary", {"execution_id": execution_id})}
        waves = db.query(
            "SELECT wave_id, wave_number, status, task_count, completed_count, failed_count, started_at, completed_at "
            "FROM parallel_execution_waves WHERE execution_id = ? ORDER BY wave_number", (execution_id,))
        tasks = db.query(
            "SELECT a.wave_id, a.id AS assignment_id, t.display_id, t.title, a.status, a.instance_id, "
            "a.assigned_at, a.completed_at FROM wave_task_assignments a "
            "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id JOIN tasks t ON t.id = a.task_id "
            "WHERE w.execution_id = ? ORDER BY w.wave_number, t.position, a.id", (execution_id,))
    by_wave: dict[str, list[dict]] = {}
    for t in tasks:
        by_wave.setdefault(t.pop("wave_id"), []).append(t)
    for w in waves:
        w["tasks"] = by_wave.get(w["wave_id"], [])
        w["skipped_count"] = sum(1 for t in w["tasks"] if t["status"] == "skipped")
        w["active_agents"] = summary.get(w["wave_number"], {}).get("active_agents", 0)
    run["waves"] = waves
    run["active_tasks"] = sum(1 for t in tasks if t["status"] in ASSIGNMENT_HELD)
    run["pending_tasks"] = sum(1 for t in tasks if t["status"] == "pending")
    return run


def wave_summary(db: Database, value: str) -> dict:
    """The wave summary (sql/queries/wave_summary.sql) plus the run's status."""
    execution_id = resolve.execution(db, value)["execution_id"]
    with db.read():
        run = _run_row(db, execution_id)
        rows = db.named("wave_summary", {"execution_id": execution_id})
    return {
        "execution_id": execution_id,
        "task_list_name": run["task_list_name"],
        "run_number": run["run_number"],
        "status": run["status"],
        "total_tasks": run["total_tasks"],
        "completed_tasks": run["completed_tasks"],
        "failed_tasks": run["failed_tasks"],
        "skipped_tasks": run["skipped_tasks"],
        "waves": rows,
    }


# --------------------------------------------------------------------------- lifecycle

def pause(db: Database, value: str) -> dict:
    """pending/running -> paused: no new task is handed out; running tasks finish."""
    execution_id = resolve.execution(db, value)["execution_id"]
    with db.write():
        assignments.lock_run(db, execution_id)  # read the status it checks under the lock claims take
        run = _run_row(db, execution_id)
        if run["status"] not in RUN_GOING:
            raise Conflict(f"cannot pause run {execution_id}: it is {run['status']}; only a pending or running run can be paused")
        db.execute("UPDATE task_list_execution_runs SET status = 'paused' WHERE execution_id = ?", (execution_id,))
        assignments.list_status_for_run(db, run["task_list_id"])
        execlog.append(db, execution_id, "info", f"run #{run['run_number']} paused", context={"previous_status": run["status"]})
    return _run_row(db, execution_id)


def resume(db: Database, value: str) -> dict:
    """paused -> running (or pending when no task was handed out yet)."""
    execution_id = resolve.execution(db, value)["execution_id"]
    with db.write():
        assignments.lock_run(db, execution_id)  # read the status it checks under the lock claims take
        run = _run_row(db, execution_id)
        if run["status"] != "paused":
            raise Conflict(f"cannot resume run {execution_id}: it is {run['status']}; only a paused run can be resumed")
        new = "running" if run["started_at"] else "pending"
        db.execute("UPDATE task_list_execution_runs SET status = ? WHERE execution_id = ?", (new, execution_id))
        assignments.settle(db, execution_id)
        assignments.list_status_for_run(db, run["task_list_id"])
        execlog.append(db, execution_id, "info", f"run #{run['run_number']} resumed", context={"status": new})
    return _run_row(db, execution_id)


def cancel(db: Database, value: str) -> dict:
    """pending/running/paused -> cancelled: pending assignments become skipped (counted,
    logged), unfinished waves cancelled; agents still running a task see the run
    cancelled and stop (their report is still recorded)."""
    execution_id = resolve.execution(db, value)["execution_id"]
    with db.write():
        assignments.lock_run(db, execution_id)  # read the status it checks under the lock claims take
        run = _run_row(db, execution_id)
        if run["status"] not in RUN_ACTIVE:
            raise Conflict(
                f"cannot cancel run {execution_id}: it is already {run['status']}"
                if run["status"] == "cancelled" else
                f"cannot cancel run {execution_id}: it has ended ({run['status']})"
            )
        pending = db.query(
            "SELECT a.id AS assignment_id, a.task_id, w.wave_number, t.display_id FROM wave_task_assignments a "
            "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id JOIN tasks t ON t.id = a.task_id "
            "WHERE w.execution_id = ? AND a.status = 'pending' ORDER BY w.wave_number, t.position, a.id",
            (execution_id,))
        held = db.query(
            "SELECT a.id AS assignment_id, t.display_id, a.instance_id FROM wave_task_assignments a "
            "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id JOIN tasks t ON t.id = a.task_id "
            f"WHERE w.execution_id = ? AND a.status IN {sql_list(ASSIGNMENT_HELD)} ORDER BY a.id", (execution_id,))
        db.execute(f"UPDATE task_list_execution_runs SET status = 'cancelled', completed_at = {db.sql.now} WHERE execution_id = ?",
                   (execution_id,))
        skipped = assignments.skip_pending(db, execution_id, pending, reason="run_cancelled",
                                           message="{task} skipped: the run was cancelled")
        db.execute(
            f"UPDATE parallel_execution_waves SET status = 'cancelled', completed_at = {db.sql.now} "
            f"WHERE execution_id = ? AND status IN {sql_list(WAVE_OPEN)}", (execution_id,))
        assignments.list_status_for_run(db, run["task_list_id"])
        execlog.append(
            db, execution_id, "warning",
            f"run #{run['run_number']} cancelled: {skipped} pending tasks skipped, {len(held)} running tasks told to stop",
            context={"previous_status": run["status"], "skipped": skipped,
                     "running": [h["display_id"] for h in held],
                     "agents": sorted({h["instance_id"] for h in held if h["instance_id"]})},
        )
    out = _run_row(db, execution_id)
    out["skipped_now"] = skipped
    out["still_running"] = [h["display_id"] for h in held]
    return out


__all__ = ["start_run", "list_runs", "show_run", "wave_summary", "pause", "resume", "cancel"]
