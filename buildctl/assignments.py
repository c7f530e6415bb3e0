"""The assignment state machine: how a task of a run is claimed, run, retried and ended.

    pending --claim_next--> assigned --start--> running --complete--> completed
                              |                    |
                              +------ fail / release ------> pending   (a retry remains)
                                                        \\--> failed   (for good; dependents -> skipped)
                                                        \\--> skipped  (handed back after a cancel)
    pending --(a dependency failed for good, or the run was cancelled)--> skipped

A failed attempt that makes no progress (the third in a row with the same error)
also marks the agent holding the task stuck, in the same transaction.

Every public function is ONE ``db.write()`` transaction (BEGIN IMMEDIATE), except the
``*_in``/``release_held``/``settle``/``skip_pending`` helpers that run inside the
caller's (so that agents.py can end an agent and release its work atomically). Each
status change moves the counters it affects in the same transaction — run
``total/completed/failed/skipped_tasks``, wave ``task_count/completed_count/
failed_count`` — and writes its log event there too, so the counters always equal a
recount (``recount()``) and the log never disagrees with the tables. An assignment
that is not assigned/running is refused (``Conflict``) by complete/fail/release, so a
double report cannot count twice.

Stdlib only (the worker imports it).
"""

from __future__ import annotations

from buildctl import execlog, states
from buildctl.errors import Conflict, NotFound, NothingLeft, NothingYet, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: `agent finish` (the hot path) imports this module
    from typing import Any

    from buildctl.storage import Database

ACTIVE = states.ASSIGNMENT_ACTIVE
HELD = states.ASSIGNMENT_HELD
ENDED = states.ASSIGNMENT_ENDED
RUN_ENDED = states.RUN_ENDED
#: Agents in these states are not handed new work.
AGENT_OUT = states.AGENT_ENDED
#: This many consecutive failed attempts of a task with the same error mark the
#: agent holding it stuck (the SIA trigger's "no progress").
NO_PROGRESS_ATTEMPTS = 3
#: What a released assignment became, by _fail's outcome.
_RELEASED_AS = {"retry": "pending", "failed": "failed", "skipped": "skipped"}

#: A task's failed attempts in its run (its task_failed events in the lane), as a column
#: of a query whose rows have ``a.task_id`` and the run's ``execution_id`` as ``EXEC``.
_FAILED_ATTEMPTS = ("(SELECT COUNT(*) FROM task_execution_log f WHERE f.execution_id = {exec} AND f.task_id = a.task_id "
                    "AND f.event_type = 'task_failed') AS failed_attempts")

_LOAD = f"""
SELECT a.id AS assignment_id, a.status, a.instance_id, a.wave_id, a.task_id, a.assigned_at,
       w.wave_number, w.execution_id, r.status AS run_status, r.task_list_id,
       t.display_id, t.title, t.command, t.validate_command, t.timeout_s, b.status AS agent_status,
       {_FAILED_ATTEMPTS.format(exec="w.execution_id")}
FROM wave_task_assignments a
JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
JOIN task_list_execution_runs r ON r.execution_id = w.execution_id
JOIN tasks t ON t.id = a.task_id
LEFT JOIN build_agent_instances b ON b.instance_id = a.instance_id
WHERE a.id = ?
"""


# --------------------------------------------------------------------------- helpers

def _assignment_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"invalid assignment id {value!r}: expected an integer") from None


def lock_run(db: Database, execution_id: str, *, unless_busy: bool = False) -> bool:
    """Inside a write: take the run's row lock, so that the run's state changes happen one
    at a time (a wave settles only when its last task ended, counters add up, the barrier
    and max_parallel_agents hold). SQLite's BEGIN IMMEDIATE does this for the whole
    database already; PostgreSQL's READ COMMITTED needs the row locked. Every write that
    changes a run's assignments takes it first, so the locks are always taken in the same
    order (the run, then its rows) and never deadlock.

    With ``unless_busy``, a run another transaction holds is not queued for: False, with
    nothing locked (for claimers that wait for the next change anyway: on PostgreSQL, 64
    of them queueing behind each other at every change would hold the run for everyone)."""
    lock = db.sql.lock_rows("task_list_execution_runs", skip_locked=unless_busy)
    if lock:
        got = db.scalar(f"SELECT 1 FROM task_list_execution_runs WHERE execution_id = ?{lock}", (execution_id,))
        return got is not None or not unless_busy
    return True


def _load(db: Database, assignment_id: Any) -> dict:
    """The assignment with its task and run, inside a write: its run locked (``lock_run``),
    then the row itself."""
    aid = _assignment_id(assignment_id)
    row = db.one(_LOAD, (aid,))
    if row is None:
        raise NotFound(f"no assignment {aid}")
    lock = db.sql.lock_rows("a")
    if lock:  # read again under the locks: another transaction may have changed it meanwhile
        lock_run(db, row["execution_id"])
        row = db.one(_LOAD + lock, (aid,))
    return row


def _require_held(row: dict, instance_id: str | None, verb: str) -> None:
    if row["status"] not in HELD:
        raise Conflict(
            f"cannot {verb} assignment {row['assignment_id']} ({row['display_id']}): it is {row['status']}, "
            "not assigned or running"
        )
    if instance_id is not None and row["instance_id"] != instance_id:
        raise Conflict(
            f"cannot {verb} assignment {row['assignment_id']} ({row['display_id']}): it is held by agent "
            f"{row['instance_id']}, not {instance_id}"
        )


def failed_attempts(db: Database, execution_id: str, task_id: str) -> int:
    """Failed attempts of a task in one execution = its task_failed events in that lane."""
    return db.scalar(
        "SELECT COUNT(*) FROM task_execution_log WHERE execution_id = ? AND task_id = ? AND event_type = 'task_failed'",
        (execution_id, task_id),
    ) or 0


def _agent_released(db: Database, instance_id: str | None, task_id: str) -> None:
    """The agent no longer holds the task: idle again, unless it was stuck or has ended."""
    if not instance_id:
        return
    db.execute(
        "UPDATE build_agent_instances SET "
        "  status = CASE WHEN status IN ('stuck', 'completed', 'failed') THEN status ELSE 'idle' END, "
        "  current_task_id = CASE WHEN status IN ('completed', 'failed') THEN current_task_id ELSE NULL END "
        "WHERE instance_id = ? AND (current_task_id IS NULL OR current_task_id = ?)",
        (instance_id, task_id),
    )


def list_status_for_run(db: Database, task_list_id: str) -> None:
    """Keep task_lists_v2.status in step with its newest run."""
    run = db.one(
        "SELECT status FROM task_list_execution_runs WHERE task_list_id = ? ORDER BY run_number DESC LIMIT 1",
        (task_list_id,),
    )
    if run is None:
        return
    status = {"pending": "in_progress", "running": "in_progress", "paused": "paused",
              "completed": "completed", "failed": "ready", "cancelled": "ready"}[run["status"]]
    db.execute(
        f"UPDATE task_lists_v2 SET status = ?, updated_at = {db.sql.now} WHERE id = ? AND status <> ? AND status <> 'archived'",
        (status, task_list_id, status),
    )


def settle(db: Database, execution_id: str, *, changed_wave: str | None = None) -> None:
    """End the waves and the run whose assignments have all ended (inside the caller's write).

    A wave is completed when all its assignments ended completed or skipped, failed
    when one of them failed. The run is completed when all ended and none failed,
    failed when any failed. Cancelled waves and runs keep their status.

    ``changed_wave``: the caller ended assignments of that wave only. Every write that ends
    assignments settles, so nothing else can have become ready to end: while that wave
    still has work, neither it nor the run can, and one index probe says so.
    """
    if changed_wave is not None and db.scalar(
            f"SELECT 1 FROM wave_task_assignments WHERE wave_id = ? AND status IN {states.sql_list(ACTIVE)} LIMIT 1",
            (changed_wave,)):
        return
    db.execute(
        f"""
        UPDATE parallel_execution_waves SET
          status = CASE WHEN EXISTS (SELECT 1 FROM wave_task_assignments a
                                     WHERE a.wave_id = parallel_execution_waves.wave_id AND a.status = 'failed')
                        THEN 'failed' ELSE 'completed' END,
          completed_at = {db.sql.now}
        WHERE execution_id = ? AND status IN ('pending', 'running')
          AND NOT EXISTS (SELECT 1 FROM wave_task_assignments a
                          WHERE a.wave_id = parallel_execution_waves.wave_id
                            AND a.status IN ('pending', 'assigned', 'running'))
        """,
        (execution_id,),
    )
    cur = db.execute(
        f"""
        UPDATE task_list_execution_runs SET
          status = CASE WHEN failed_tasks > 0 THEN 'failed' ELSE 'completed' END,
          completed_at = {db.sql.now}
        WHERE execution_id = ? AND status IN ('pending', 'running', 'paused')
          AND NOT EXISTS (SELECT 1 FROM wave_task_assignments a
                          JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
                          WHERE w.execution_id = ? AND a.status IN ('pending', 'assigned', 'running'))
        """,
        (execution_id, execution_id),
    )
    if cur.rowcount:
        list_id = db.scalar("SELECT task_list_id FROM task_list_execution_runs WHERE execution_id = ?", (execution_id,))
        list_status_for_run(db, list_id)


def _set_status(db: Database, assignment_id: int, old: tuple[str, ...], new: str, *, extra: str = "",
                params: tuple = ()) -> None:
    marks = ",".join("?" * len(old))
    cur = db.execute(
        f"UPDATE wave_task_assignments SET status = ?{extra} WHERE id = ? AND status IN ({marks})",
        (new, *params, assignment_id, *old),
    )
    if cur.rowcount != 1:  # the row changed under us; impossible inside BEGIN IMMEDIATE, but never count twice
        raise Conflict(f"assignment {assignment_id} changed state concurrently; nothing was written")


#: An ended assignment's counters: the run's and the wave's.
_ENDED_COUNTERS = {"completed": ("completed_tasks", "completed_count"), "failed": ("failed_tasks", "failed_count")}


def _end_held(db: Database, row: dict, status: str) -> None:
    """A held assignment ends ``status`` ('completed' or 'failed'), inside the caller's write:
    the row, the run's and the wave's counters, and the task, together."""
    run_counter, wave_counter = _ENDED_COUNTERS[status]
    _set_status(db, row["assignment_id"], HELD, status, extra=f", completed_at = {db.sql.now}")
    db.execute(f"UPDATE task_list_execution_runs SET {run_counter} = {run_counter} + 1 WHERE execution_id = ?",
               (row["execution_id"],))
    db.execute(f"UPDATE parallel_execution_waves SET {wave_counter} = {wave_counter} + 1 WHERE wave_id = ?",
               (row["wave_id"],))
    db.execute(f"UPDATE tasks SET status = ?, updated_at = {db.sql.now} WHERE id = ?", (status, row["task_id"]))


def skip_pending(db: Database, execution_id: str, rows: list[dict], *, reason: str, message: str,
                 context: dict | None = None) -> int:
    """Mark pending assignments skipped, with counters and one task_skipped event each (caller's write)."""
    n = 0
    for r in rows:
        cur = db.execute(
            f"UPDATE wave_task_assignments SET status = 'skipped', completed_at = {db.sql.now} WHERE id = ? AND status = 'pending'",
            (r["assignment_id"],),
        )
        if cur.rowcount != 1:
            continue
        n += 1
        db.execute(f"UPDATE tasks SET status = 'skipped', updated_at = {db.sql.now} WHERE id = ?", (r["task_id"],))
        execlog.append(
            db, execution_id, "task_skipped", message.format(task=r["display_id"]), task_id=r["task_id"],
            context={**(context or {}), "reason": reason, "wave": r["wave_number"], "assignment_id": r["assignment_id"]},
        )
    if n:
        db.execute("UPDATE task_list_execution_runs SET skipped_tasks = skipped_tasks + ? WHERE execution_id = ?",
                   (n, execution_id))
    return n


def _skip_dependents(db: Database, row: dict) -> list[str]:
    """Every transitive dependent of the failed task still pending in this run -> skipped."""
    rows = db.query(
        """
        WITH RECURSIVE dep(id) AS (
          SELECT source_task_id FROM task_relationships
          WHERE target_task_id = :task AND relationship_type = 'depends_on'
          UNION
          SELECT r.source_task_id FROM task_relationships r JOIN dep ON r.target_task_id = dep.id
          WHERE r.relationship_type = 'depends_on'
        )
        SELECT a.id AS assignment_id, a.task_id, w.wave_number, t.display_id
        FROM wave_task_assignments a
        JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
        JOIN tasks t ON t.id = a.task_id
        WHERE w.execution_id = :exec AND a.status = 'pending' AND a.task_id IN (SELECT id FROM dep)
        ORDER BY w.wave_number, t.position, a.id
        """,
        {"task": row["task_id"], "exec": row["execution_id"]},
    )
    skip_pending(
        db, row["execution_id"], rows, reason="dependency_failed",
        message="{task} skipped: it depends on " + row["display_id"] + ", which failed",
        context={"failed_task": row["display_id"], "failed_task_id": row["task_id"]},
    )
    return [r["display_id"] for r in rows]


# --------------------------------------------------------------------------- claim

class _Outlook:
    """What a run has to hand out right now: ``pick`` (the next claimable assignment with
    its task, wave and run — everything a claim needs —, or None), ``state`` ('work',
    'wait' — more will come —, or 'done'), and ``why`` not."""

    __slots__ = ("pick", "state", "why")

    def __init__(self, pick: dict | None, state: str, why: str = ""):
        self.pick, self.state, self.why = pick, state, why


def _outlook(db: Database, execution_id: str, task_id: str | None = None, *, lock: bool = False,
             unless_busy: bool = False, run_locked: bool = False) -> _Outlook:
    """The next pending assignment of the lowest unfinished wave that may be handed out now
    (with ``task_id``, that task's or nothing). Only when the run is pending or running,
    fewer than max_parallel_agents assignments are held, and the assignment's retry
    backoff (``not_before``) has passed. With ``lock`` (inside a write), the run's row is
    locked first (``lock_run``; when ``unless_busy`` finds it held: nothing, 'wait'), unless
    ``run_locked`` says this transaction holds it already, and the pick skips rows other
    transactions hold."""
    if lock and not run_locked and not lock_run(db, execution_id, unless_busy=unless_busy):
        return _Outlook(None, "wait", "another agent is changing the run right now")
    # One statement (one round trip on PostgreSQL): the run, its list's limit, its lowest
    # unfinished wave (none when every task has ended) and how many tasks it holds.
    run = db.one(
        "SELECT r.execution_id, r.status, r.task_list_id, l.max_parallel_agents, "
        "       w.wave_id, w.wave_number, w.status AS wave_status, "
        "       (SELECT COUNT(*) FROM wave_task_assignments h JOIN parallel_execution_waves hw ON hw.wave_id = h.wave_id "
        f"        WHERE hw.execution_id = r.execution_id AND h.status IN {states.sql_list(HELD)}) AS held "
        "FROM task_list_execution_runs r JOIN task_lists_v2 l ON l.id = r.task_list_id "
        "LEFT JOIN parallel_execution_waves w ON w.wave_id = ("
        "    SELECT u.wave_id FROM parallel_execution_waves u WHERE u.execution_id = r.execution_id "
        f"   AND EXISTS (SELECT 1 FROM wave_task_assignments a WHERE a.wave_id = u.wave_id AND a.status IN {states.sql_list(ACTIVE)}) "
        "    ORDER BY u.wave_number LIMIT 1) "
        "WHERE r.execution_id = ?",
        (execution_id,),
    )
    if run is None:
        raise NotFound(f"no execution {execution_id!r}")
    if run["status"] in RUN_ENDED:
        return _Outlook(None, "done", f"execution {execution_id} is {run['status']}")
    if run["wave_id"] is None:
        return _Outlook(None, "done", f"every task of execution {execution_id} has ended")
    if run["status"] == "paused":
        return _Outlook(None, "wait", f"execution {execution_id} is paused; no task is handed out")
    if run["held"] >= run["max_parallel_agents"]:
        return _Outlook(None, "wait", f"the run already has max_parallel_agents ({run['max_parallel_agents']}) "
                                      "tasks held")
    wave = {"wave_id": run["wave_id"], "wave_number": run["wave_number"], "wave_status": run["wave_status"]}
    # The list's order is the assignments' id order: runs.start inserts each wave's
    # assignments in (position, id) order and positions never change. Ordering by a.id
    # reads the first pending row straight off idx_wave_tasks; ordering by t.position
    # joined and sorted every pending row of the wave (0.2-0.5 ms a claim at 500 tasks).
    nxt = db.one(
        "SELECT a.id AS assignment_id, a.task_id, t.display_id, t.title, t.command, t.validate_command, t.timeout_s, "
        f"{_FAILED_ATTEMPTS.format(exec='?')} "
        "FROM wave_task_assignments a JOIN tasks t ON t.id = a.task_id "
        f"WHERE a.wave_id = ? AND a.status = 'pending' AND (a.not_before IS NULL OR a.not_before <= {db.sql.now}) "
        "AND (CAST(? AS TEXT) IS NULL OR a.task_id = ?) ORDER BY a.id LIMIT 1"
        + (db.sql.lock_rows("a", skip_locked=True) if lock else ""),
        (execution_id, wave["wave_id"], task_id, task_id),
    )
    if nxt is not None:
        return _Outlook({**nxt, **wave, "run_status": run["status"], "task_list_id": run["task_list_id"]}, "work")
    if db.scalar("SELECT 1 FROM wave_task_assignments a WHERE a.wave_id = ? AND a.status = 'pending' "
                 f"AND a.not_before > {db.sql.now} LIMIT 1", (wave["wave_id"],)):
        return _Outlook(None, "wait", f"wave {wave['wave_number']}'s next task waits out its retry backoff")
    return _Outlook(None, "wait", f"wave {wave['wave_number']} has not ended yet (the barrier)")


def claim_next(db: Database, execution_id: str, instance_id: str, task_id: str | None = None, *,
               start: bool = False, context: dict | None = None, refuse: bool = False) -> dict | None:
    """Atomically hand the next pending assignment of the lowest unfinished wave to an agent
    (``_outlook`` says which); None when nothing can be handed out now (``run_state`` says
    whether to wait or stop), unless ``refuse`` (see ``claim_in``). With ``start``, the
    assignment is also started (running, task_started) in the same transaction."""
    with db.write():
        return claim_in(db, execution_id, instance_id, task_id, start=start, context=context, refuse=refuse)


def claim_in(db: Database, execution_id: str, instance_id: str, task_id: str | None = None, *,
             start: bool = False, context: dict | None = None, refuse: bool = False,
             unless_busy: bool = False) -> dict | None:
    """``claim_next`` inside the caller's write (`agent spawn --task T` registers the agent
    and claims in one transaction, so a refused claim leaves no agent behind).

    A named task (``task_id``) that cannot be taken now is refused (Conflict) with the
    reason. With ``refuse`` (a script asking), nothing to claim is refused too: Conflict
    for a cancelled run, NothingLeft when the run has nothing left, NothingYet when more
    will come. ``unless_busy``: see ``lock_run``."""
    agent = db.one("SELECT instance_id, execution_id, status FROM build_agent_instances WHERE instance_id = ?",
                   (instance_id,))
    if agent is None:
        raise NotFound(f"no agent {instance_id!r}")
    if agent["execution_id"] != execution_id:
        raise Conflict(f"agent {instance_id} belongs to execution {agent['execution_id']}, not {execution_id}")
    if agent["status"] in AGENT_OUT:
        raise Conflict(f"agent {instance_id} is {agent['status']}; it cannot take new work")
    outlook = _outlook(db, execution_id, task_id, lock=True, unless_busy=unless_busy)
    if outlook.pick is None:
        if task_id is not None:
            raise Conflict(_why_not(db, execution_id, task_id, outlook))
        if refuse:
            _refuse(db, execution_id, outlook)
        return None
    return _hand_out(db, outlook.pick, execution_id, instance_id, agent["status"], start=start, context=context)


def _hand_out(db: Database, pick: dict, execution_id: str, instance_id: str, agent_status: str, *, start: bool,
              context: dict | None) -> dict:
    """Give ``pick`` (``_outlook``'s) to the agent (now ``agent_status``), inside the caller's
    write: the assignment assigned (running at once with ``start``: claim and start in one
    transaction, the worker's common case), the run and the wave running if they were
    pending (the list follows its run), the agent running it. Only what changes is
    written: every change of a run's status goes through here or through a function that
    keeps its list in step, so a run that was running already needs nothing more; and an
    agent's status is set only when it differs (setting it rewrites its three indexes)."""
    aid = pick["assignment_id"]
    assigned_at = db.scalar(
        f"UPDATE wave_task_assignments SET status = ?, instance_id = ?, assigned_at = {db.sql.now}, not_before = NULL "
        "WHERE id = ? AND status = 'pending' RETURNING assigned_at",
        ("running" if start else "assigned", instance_id, aid),
    )
    if assigned_at is None:  # impossible under the run's lock, but never hand a task out twice
        raise Conflict(f"assignment {aid} changed state concurrently; nothing was written")
    if pick["run_status"] == "pending":
        db.execute(
            f"UPDATE task_list_execution_runs SET status = 'running', started_at = COALESCE(started_at, {db.sql.now}) "
            "WHERE execution_id = ? AND status = 'pending'",
            (execution_id,),
        )
        list_status_for_run(db, pick["task_list_id"])
    if pick["wave_status"] == "pending":
        db.execute(
            f"UPDATE parallel_execution_waves SET status = 'running', started_at = COALESCE(started_at, {db.sql.now}) "
            "WHERE wave_id = ? AND status = 'pending'",
            (pick["wave_id"],),
        )
    db.execute(
        "UPDATE build_agent_instances SET current_task_id = ?, wave_number = ?"
        + (", status = 'running'" if agent_status != "running" else "") + " WHERE instance_id = ?",
        (pick["task_id"], pick["wave_number"], instance_id),
    )
    row = {**pick, "execution_id": execution_id, "assigned_at": assigned_at}
    if start:
        attempt = _record_start(db, row, instance_id, context)
    else:
        attempt = 1 + pick["failed_attempts"]
    return _claim(row, instance_id, attempt)


def claim_of(db: Database, assignment_id: Any) -> dict:
    """The claim of an assignment an agent holds, as ``claim_next`` returned it: a worker
    whose claim committed but whose reply was lost with its connection runs what it took."""
    row = db.one(_LOAD, (_assignment_id(assignment_id),))
    if row is None:
        raise NotFound(f"no assignment {assignment_id}")
    return _claim(row, row["instance_id"], 1 + failed_attempts(db, row["execution_id"], row["task_id"]))


def _claim(row: dict, instance_id: str, attempt: int) -> dict:
    """What a claim hands the agent: the assignment, its task and wave, the attempt."""
    return {
        "assignment_id": row["assignment_id"],
        "execution_id": row["execution_id"],
        "instance_id": instance_id,
        "wave_id": row["wave_id"],
        "wave_number": row["wave_number"],
        "task_id": row["task_id"],
        "display_id": row["display_id"],
        "title": row["title"],
        "command": row["command"],
        "validate_command": row["validate_command"],
        "timeout_s": row["timeout_s"],
        "attempt": attempt,
        "assigned_at": row["assigned_at"],
    }


def _refuse(db: Database, execution_id: str, outlook: _Outlook) -> None:
    """Nothing to claim, said as a script can act on it (exit 5, 10 or 9)."""
    status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (execution_id,))
    if status == "cancelled":
        raise Conflict(f"execution {execution_id} was cancelled: stop working")
    if outlook.state == "done":
        raise NothingLeft(f"nothing left to claim: {outlook.why}")
    raise NothingYet(f"nothing can be claimed yet: {outlook.why}")


def _why_not(db: Database, execution_id: str, task_id: str, outlook: _Outlook) -> str:
    """Why a named task cannot be claimed now (`agent spawn --task T`)."""
    row = db.one(
        "SELECT a.status, a.instance_id, w.wave_number, t.display_id FROM wave_task_assignments a "
        "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id JOIN tasks t ON t.id = a.task_id "
        "WHERE w.execution_id = ? AND a.task_id = ?", (execution_id, task_id))
    if row is None:
        return f"task {task_id} is not in execution {execution_id}"
    name = row["display_id"]
    if row["status"] in HELD:
        return f"task {name} is {row['status']}, not pending (agent {row['instance_id']} holds it); it cannot be taken"
    if row["status"] != "pending":
        return f"task {name} is {row['status']}, not pending; it cannot be taken"
    if outlook.state == "done":
        return f"task {name} cannot be taken: {outlook.why}"
    current = db.scalar(
        "SELECT MIN(w.wave_number) FROM parallel_execution_waves w JOIN wave_task_assignments a ON a.wave_id = w.wave_id "
        f"WHERE w.execution_id = ? AND a.status IN {states.sql_list(ACTIVE)}", (execution_id,))
    if current is not None and row["wave_number"] > current:
        return f"task {name} is in wave {row['wave_number']}; wave {current} has not ended yet"
    return f"task {name} cannot start now: {outlook.why}"


def task_taken_for_good(db: Database, execution_id: str, task_id: str) -> bool:
    """Whether a named task can never be claimed again in this run (it ended, or the run did):
    `--wait` stops waiting for it."""
    row = db.one(
        "SELECT a.status, r.status AS run_status FROM wave_task_assignments a "
        "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
        "JOIN task_list_execution_runs r ON r.execution_id = w.execution_id "
        "WHERE w.execution_id = ? AND a.task_id = ?", (execution_id, task_id))
    return row is None or row["status"] in ENDED or row["run_status"] in RUN_ENDED


def run_state(db: Database, execution_id: str) -> str:
    """'work' (something is claimable now), 'wait' (barrier, limit, backoff or pause holds;
    more will come), or 'done' (the run ended, or nothing is pending, assigned or running)."""
    with db.read():
        return _outlook(db, execution_id).state


# --------------------------------------------------------------------------- transitions

def _record_start(db: Database, row: dict, instance_id: str, context: dict | None) -> int:
    """An assignment just became running (inside the caller's write): its task in_progress,
    the task_started event; returns the attempt's number."""
    db.execute(f"UPDATE tasks SET status = 'in_progress', updated_at = {db.sql.now} WHERE id = ?", (row["task_id"],))
    attempt = 1 + row["failed_attempts"]  # counted by the query that picked it, in this transaction
    execlog.append(
        db, row["execution_id"], "task_started", f"{row['display_id']} started (attempt {attempt})",
        task_id=row["task_id"], instance_id=instance_id,
        context={**(context or {}), "attempt": attempt, "wave": row["wave_number"], "assignment_id": row["assignment_id"]},
    )
    return attempt


def complete(db: Database, assignment_id: Any, *, instance_id: str | None = None, context: dict | None = None) -> dict:
    """assigned/running -> completed, with counters, task status, wave/run status and the
    ``task_completed`` event, in one transaction."""
    with db.write():
        return complete_in(db, assignment_id, instance_id=instance_id, context=context)


def complete_in(db: Database, assignment_id: Any, *, instance_id: str | None = None,
                context: dict | None = None) -> dict:
    """``complete`` inside the caller's write (`agent finish` completes the task its agent
    held in the transaction that ends the agent)."""
    row = _load(db, assignment_id)
    _require_held(row, instance_id, "complete")
    out = _complete(db, row, context)
    _agent_released(db, row["instance_id"], row["task_id"])
    return out


def complete_and_claim(db: Database, assignment_id: Any, *, instance_id: str,
                       context: dict | None = None) -> tuple[dict, dict | None]:
    """``complete`` the agent's assignment, then ``claim_next(start=True)`` for the same agent,
    in ONE transaction: a worker going from one task to the next commits once instead of
    twice. The claim obeys every rule ``claim_next`` does (the run's lock, the barrier,
    max_parallel_agents, backoffs, a paused or ended run) and sees the completion (a wave
    it ended lets the next one start). Returns (``complete``'s result, the claim or None);
    with no claim the agent is left idle, exactly as ``complete`` leaves it. An agent
    marked stuck (or ended) meanwhile still completes its task but takes no new one."""
    with db.write():
        row = _load(db, assignment_id)
        _require_held(row, instance_id, "complete")
        done = _complete(db, row, context)
        claim = None
        if row["agent_status"] not in AGENT_OUT:  # the holder is instance_id (_require_held)
            outlook = _outlook(db, row["execution_id"], lock=True, run_locked=True)  # _load locked it
            if outlook.pick is not None:
                claim = _hand_out(db, outlook.pick, row["execution_id"], instance_id, row["agent_status"], start=True,
                                  context=None)
        if claim is None:
            _agent_released(db, instance_id, row["task_id"])
    return done, claim


def _complete(db: Database, row: dict, context: dict | None) -> dict:
    """assigned/running -> completed inside the caller's write, ``row`` (``_load``'s) checked
    by the caller: counters, task, the task_completed event, the wave and run settled.
    The holding agent is left to the caller (released, or handed its next task)."""
    aid = row["assignment_id"]
    attempt = 1 + row["failed_attempts"]  # counted by _load, in this transaction (a completion adds none)
    _end_held(db, row, "completed")
    execlog.append(
        db, row["execution_id"], "task_completed", f"{row['display_id']} completed",
        task_id=row["task_id"], instance_id=row["instance_id"],
        context={**(context or {}), "attempt": attempt, "wave": row["wave_number"], "assignment_id": aid},
    )
    settle(db, row["execution_id"], changed_wave=row["wave_id"])
    return {"assignment_id": aid, "status": "completed", "attempt": attempt}


def held_by(db: Database, instance_id: str) -> dict | None:
    """The assignment an agent holds (assigned or running), or None."""
    return db.one(f"SELECT id AS assignment_id, task_id FROM wave_task_assignments WHERE instance_id = ? "
                  f"AND status IN {states.sql_list(HELD)} ORDER BY id LIMIT 1", (instance_id,))


def _same_error_streak(db: Database, row: dict, error: str) -> bool:
    """Whether a failure with ``error``, about to be recorded, is the NO_PROGRESS_ATTEMPTS-th
    consecutive failed attempt of the task in this lane with the same error (the
    error compared as sql/queries/progress_between_attempts.sql does: context.error, else
    the message; "consecutive" = since the task's last task_completed)."""
    earlier = db.query(
        f"SELECT {db.sql.json_field('context', 'error')} AS error, message FROM task_execution_log "
        "WHERE execution_id = :ex AND task_id = :task AND event_type = 'task_failed' "
        "  AND id > COALESCE((SELECT MAX(id) FROM task_execution_log WHERE execution_id = :ex AND task_id = :task "
        "                     AND event_type = 'task_completed'), 0) "
        "ORDER BY id DESC LIMIT :n",
        {"ex": row["execution_id"], "task": row["task_id"], "n": NO_PROGRESS_ATTEMPTS - 1})
    return len(earlier) == NO_PROGRESS_ATTEMPTS - 1 and all(
        (e["error"] if e["error"] is not None else e["message"]) == error for e in earlier)


def _no_progress_stuck(db: Database, row: dict, error: str) -> str | None:
    """Mark the agent holding ``row`` stuck when this failure makes no progress (inside the
    caller's write, after the failure is recorded); returns the reason, or None."""
    from buildctl import agentstate

    agent = db.one("SELECT instance_id, execution_id, status FROM build_agent_instances WHERE instance_id = ?",
                   (row["instance_id"],))
    if agent is None or agent["status"] not in states.AGENT_LIVE:
        return None
    last_line = ([line for line in error.splitlines() if line.strip()] or ["(no error text)"])[-1]
    reason = f"{NO_PROGRESS_ATTEMPTS} consecutive failed attempts of {row['display_id']} with the same error: {last_line}"
    agentstate.mark_stuck(db, agent, code="no_progress", message=reason, task_id=row["task_id"])
    return reason


def _fail(db: Database, row: dict, *, error: str, max_retries: int, context: dict | None,
          kind: str, backoff_s: float | None = None) -> tuple[str, str | None]:
    """Record a failed attempt (caller's write): ('retry' | 'failed' | 'skipped' (handed back
    in a cancelled run), why the agent was marked stuck or None). A retry handed back to
    pending waits ``backoff_s`` before it may be claimed again."""
    if max_retries is None or int(max_retries) < 0:
        raise UsageError(f"max_retries must be >= 0, not {max_retries!r}")
    max_retries = int(max_retries)
    aid = row["assignment_id"]
    attempt = 1 + failed_attempts(db, row["execution_id"], row["task_id"])
    retry = attempt < 1 + max_retries
    error = str(error) if error is not None else ""
    # A release is not the task failing (its error is why the agent lost it): only a
    # reported failure counts towards the no-progress rule.
    streak = kind == "fail" and row["instance_id"] is not None and _same_error_streak(db, row, error)
    ctx = {**(context or {}), "attempt": attempt, "error": error, "max_retries": max_retries,
           "will_retry": retry, "wave": row["wave_number"], "assignment_id": aid}
    if kind == "release":
        ctx["released"] = True
    if retry and backoff_s:
        ctx["retry_after_s"] = backoff_s
    verb = "released" if kind == "release" else "failed"
    tail = f"; retry {attempt} of {max_retries} follows" if retry else "; no retries left"
    execlog.append(
        db, row["execution_id"], "task_failed",
        f"{row['display_id']} {verb} (attempt {attempt}): {error}{tail}",
        task_id=row["task_id"], instance_id=row["instance_id"], context=ctx,
    )
    if retry:
        if backoff_s:
            from buildctl.durations import offset

            _set_status(db, aid, HELD, "pending", extra=f", instance_id = NULL, assigned_at = NULL, "
                                                        f"not_before = {db.sql.ago('?')}", params=(offset(-backoff_s),))
        else:
            _set_status(db, aid, HELD, "pending", extra=", instance_id = NULL, assigned_at = NULL")
        db.execute(f"UPDATE tasks SET status = 'pending', updated_at = {db.sql.now} WHERE id = ?", (row["task_id"],))
        _agent_released(db, row["instance_id"], row["task_id"])
        outcome = "retry"
        if row["run_status"] == "cancelled":
            # Cancel skipped the run's pending work; a task handed back afterwards joins it.
            skip_pending(db, row["execution_id"], [row], reason="run_cancelled",
                         message="{task} skipped: the run was cancelled")
            outcome = "skipped"
    else:
        _end_held(db, row, "failed")
        _skip_dependents(db, row)
        _agent_released(db, row["instance_id"], row["task_id"])
        settle(db, row["execution_id"])
        outcome = "failed"
    return outcome, (_no_progress_stuck(db, row, error) if streak else None)


def fail(db: Database, assignment_id: Any, *, error: str, max_retries: int, instance_id: str | None = None,
         context: dict | None = None, backoff_s: float | None = None) -> str:
    """A failed attempt: ``task_failed`` event (context has attempt and error). Back to
    pending while attempts < 1 + max_retries ('retry'; 'skipped' when the run was
    cancelled), claimable again after ``backoff_s``; else failed for good, its transitive
    dependents still pending in this run skipped ('failed'). The third consecutive
    failure with the same error also marks the holding agent stuck."""
    with db.write():
        return fail_in(db, assignment_id, error=error, max_retries=max_retries, instance_id=instance_id,
                       context=context, backoff_s=backoff_s)["outcome"]


def fail_in(db: Database, assignment_id: Any, *, error: str, max_retries: int, instance_id: str | None = None,
            context: dict | None = None, backoff_s: float | None = None) -> dict:
    """``fail`` inside the caller's write: {assignment_id, outcome, attempt, agent_stuck}."""
    row = _load(db, assignment_id)
    _require_held(row, instance_id, "fail")
    attempt = 1 + failed_attempts(db, row["execution_id"], row["task_id"])
    outcome, stuck = _fail(db, row, error=error, max_retries=max_retries, context=context, kind="fail",
                           backoff_s=backoff_s)
    return {"assignment_id": row["assignment_id"], "outcome": outcome, "status": _RELEASED_AS[outcome],
            "attempt": attempt, "agent_stuck": stuck}


def retry_in_place(db: Database, assignment_id: Any, *, instance_id: str, error: str, context: dict | None = None,
                   max_retries: int | None = None) -> dict:
    """A failed attempt that the holding agent retries itself (after its backoff): the
    ``task_failed`` event is written (context has attempt and error, will_retry true)
    and the assignment stays with the agent, running; no counter changes. With
    ``max_retries``, an attempt that leaves no retry is refused (use ``fail``).

    Unless the attempt makes no progress (the third consecutive failure with the same
    error): then the agent is marked stuck and the assignment released in the
    same transaction (back to pending, or failed when no retry is left; ``max_retries``
    defaults to the agent's maxRetries), and ``agent_stuck`` names why."""
    with db.write():
        row = _load(db, assignment_id)
        _require_held(row, instance_id, "retry")
        attempt = 1 + failed_attempts(db, row["execution_id"], row["task_id"])
        if max_retries is not None and attempt >= 1 + int(max_retries):
            raise Conflict(f"cannot retry assignment {row['assignment_id']} ({row['display_id']}) in place: attempt "
                           f"{attempt} is the last of 1 + {max_retries}; report it with fail")
        error = str(error) if error is not None else ""
        if _same_error_streak(db, row, error):
            if max_retries is None:
                from buildctl import agentstate

                max_retries = agentstate.config_of(db, instance_id)["maxRetries"]
            outcome, stuck = _fail(db, row, error=error, max_retries=max_retries, context=context, kind="fail")
            return {"assignment_id": row["assignment_id"], "status": _RELEASED_AS[outcome],
                    "attempt": attempt, "next_attempt": attempt + 1, "agent_stuck": stuck}
        execlog.append(
            db, row["execution_id"], "task_failed",
            f"{row['display_id']} failed (attempt {attempt}): {error}; retrying in place",
            task_id=row["task_id"], instance_id=row["instance_id"],
            context={**(context or {}), "attempt": attempt, "error": error, "will_retry": True, "in_place": True,
                     "wave": row["wave_number"], "assignment_id": row["assignment_id"]},
        )
        if row["status"] == "assigned":
            _set_status(db, row["assignment_id"], ("assigned",), "running")
    return {"assignment_id": row["assignment_id"], "status": "running", "attempt": attempt, "next_attempt": attempt + 1,
            "agent_stuck": None}


def release(db: Database, assignment_id: Any, *, reason: str, max_retries: int, instance_id: str | None = None) -> str:
    """Take an assignment back from a stuck or stale agent: a failed attempt with
    error=reason. Returns 'pending' (a retry remains), 'failed', or 'skipped' (the run
    was cancelled)."""
    with db.write():
        row = _load(db, assignment_id)
        _require_held(row, instance_id, "release")
        outcome, _ = _fail(db, row, error=reason, max_retries=max_retries, context=None, kind="release")
    return _RELEASED_AS[outcome]


def release_held(db: Database, instance_id: str, *, reason: str, agent: dict) -> list[dict]:
    """Inside the caller's write: release every assignment ``instance_id`` still holds, each
    a failed attempt with error=reason (as ``release``), under the maxRetries of ``agent``'s
    stored config (the agent's row; {} for one that is gone). Ending an agent calls this
    in the transaction that ends it, so an ended agent never holds a task."""
    held = db.query(f"SELECT id FROM wave_task_assignments WHERE instance_id = ? AND status IN {states.sql_list(HELD)} "
                    "ORDER BY id", (instance_id,))
    if not held:
        return []  # the common case (a script's `agent finish` after `agent done`): no config to parse
    from buildctl import agentstate

    max_retries = int(agentstate.config_from(agent)["maxRetries"])
    # An agent row that is gone (deleted by hand) cannot be named by the log's foreign key.
    exists = db.scalar("SELECT 1 FROM build_agent_instances WHERE instance_id = ?", (instance_id,))
    out = []
    for h in held:
        row = _load(db, h["id"])
        if not exists:
            row["instance_id"] = None
        outcome, _ = _fail(db, row, error=reason, max_retries=max_retries, context=None, kind="release")
        out.append({"assignment_id": h["id"], "outcome": _RELEASED_AS[outcome]})
    return out


# --------------------------------------------------------------------------- recount

def recount(db: Database, execution_id: str) -> dict:
    """The stored counters and the same counters recounted from the assignments.

    Returns ``{"execution_id", "stored": {...}, "recounted": {...}, "ok": bool}``
    where each side is ``{"run": {total_tasks, completed_tasks, failed_tasks,
    skipped_tasks}, "waves": {wave_number: {task_count, completed_count, failed_count}}}``.
    """
    with db.read():
        run = db.one(
            "SELECT total_tasks, completed_tasks, failed_tasks, skipped_tasks FROM task_list_execution_runs "
            "WHERE execution_id = ?", (execution_id,))
        if run is None:
            raise NotFound(f"no execution {execution_id!r}")
        waves = db.query(
            "SELECT wave_number, task_count, completed_count, failed_count FROM parallel_execution_waves "
            "WHERE execution_id = ? ORDER BY wave_number", (execution_id,))
        run_re = db.one(
            "SELECT COUNT(a.id) AS total_tasks, "
            "       COUNT(a.id) FILTER (WHERE a.status = 'completed') AS completed_tasks, "
            "       COUNT(a.id) FILTER (WHERE a.status = 'failed') AS failed_tasks, "
            "       COUNT(a.id) FILTER (WHERE a.status = 'skipped') AS skipped_tasks "
            "FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
            "WHERE w.execution_id = ?", (execution_id,))
        waves_re = db.query(
            "SELECT w.wave_number, COUNT(a.id) AS task_count, "
            "       COUNT(a.id) FILTER (WHERE a.status = 'completed') AS completed_count, "
            "       COUNT(a.id) FILTER (WHERE a.status = 'failed') AS failed_count "
            "FROM parallel_execution_waves w LEFT JOIN wave_task_assignments a ON a.wave_id = w.wave_id "
            "WHERE w.execution_id = ? GROUP BY w.wave_id ORDER BY w.wave_number", (execution_id,))
    stored = {"run": run, "waves": {w.pop("wave_number"): w for w in waves}}
    recounted = {"run": run_re, "waves": {w.pop("wave_number"): w for w in waves_re}}
    for side in (stored, recounted):
        for w in side["waves"].values():
            for k in w:
                w[k] = w[k] or 0
    return {"execution_id": execution_id, "stored": stored, "recounted": recounted, "ok": stored == recounted}


__all__ = ["claim_next", "claim_in", "claim_of", "run_state", "complete", "complete_and_claim", "fail",
           "retry_in_place", "release", "release_held", "recount", "settle", "skip_pending", "failed_attempts"]
