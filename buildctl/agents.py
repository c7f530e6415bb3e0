"""Build agents: spawn, heartbeat, finish, list, show, stale (+ mark).

Stdlib only, and cheap to import: ``heartbeat`` and ``agent finish`` run on the lean
hot path (a process per call, where start-up is most of the cost). ``jsonstrict``,
``ids`` (which pulls in ``secrets``), ``assignments`` and ``psutil`` are imported inside
the functions that need them.

Lifecycle: initializing (spawned) → running → idle ↔ running → completed | failed | stuck.
A stuck agent that heartbeats again goes back to running, with a ``warning`` event.
"""

from __future__ import annotations

import os

from buildctl import execlog, resolve, states
from buildctl.agentstate import (DEFAULT_CONFIG, config_from, mark_stuck,
                                 parse_config)
from buildctl.errors import Conflict, InvalidInput, NotFound, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only

    from buildctl.storage import Database

STATUSES = states.AGENT_STATUSES
#: An agent in one of these has finished: heartbeats and finish are refused.
ENDED = states.AGENT_FINISHED
HEARTBEAT_STATUSES = states.HEARTBEAT_STATUSES
FINISH_STATUSES = states.FINISH_STATUSES
DEFAULT_STALE_S = 60.0

_AGENT = "SELECT * FROM build_agent_instances WHERE instance_id = ?"


# --------------------------------------------------------------------------- lookups

_FOR_WRITE = ("SELECT a.instance_id, a.execution_id, a.status, a.current_task_id, a.config, "
              "r.status AS run_status, r.task_list_id FROM build_agent_instances a "
              "JOIN task_list_execution_runs r ON r.execution_id = a.execution_id WHERE a.instance_id = ?")


def _unended(db: Database, instance_id: str, refusal: str, *, lock: bool = False) -> dict:
    """The agent with its run's status (exact id first: the hot path's common case),
    refused when it has finished. With ``lock``, its row is locked (PostgreSQL; SQLite's
    write transaction holds the whole database): a write that sets the agent's status
    from what it read must not overwrite a status another transaction set meanwhile."""
    sql = _FOR_WRITE + (db.sql.lock_rows("a") if lock else "")
    agent = db.one(sql, (instance_id,))
    if agent is None:
        agent = db.one(sql, (resolve.agent(db, instance_id)["instance_id"],))
    if agent["status"] in ENDED:
        raise Conflict(f"agent {agent['instance_id']} " + refusal.format(status=agent["status"]))
    return agent


# --------------------------------------------------------------------------- spawn

def spawn(db: Database, execution_id: str, wave: int | None = None, task: str | None = None,
          config: str | dict | None = None, instance_id: str | None = None) -> str:
    """Register an agent (status ``initializing``) in a run; returns its instance id
    (``instance_id`` when given: a caller whose reply was lost can look for its agent).

    Refused for an unknown, ended or cancelled run, a wave the run does not have,
    or a task that is not in the run (or not in ``wave``).
    """
    cfg = parse_config(config)
    _check_wave(wave)
    with db.write():
        return _spawn_in(db, execution_id, wave, task, cfg, instance_id)[0]


def spawn_many(db: Database, execution_id: str, instance_ids: list[str], config: str | dict | None = None) -> None:
    """Register the agents ``instance_ids`` (status ``initializing``, the run's current wave)
    in ONE transaction: `run exec` registers all its workers' agents before any worker
    starts, instead of one transaction each racing the workers that already started.
    Refused, registering none, as ``spawn`` refuses."""
    cfg = parse_config(config)
    with db.write():
        for instance_id in instance_ids:
            _spawn_in(db, execution_id, None, None, cfg, instance_id)


def spawn_and_claim(db: Database, execution_id: str, *, task: str | None = None, wave: int | None = None,
                    config: str | dict | None = None, context: dict | None = None,
                    instance_id: str | None = None, unless_busy: bool = False) -> dict:
    """`agent spawn EXEC --task T` / `--next` (and `-- CMD`): register an agent and claim and
    start T (or the next claimable task) for it, in ONE transaction, under every rule a
    worker obeys. When nothing can be taken, nothing is written: a named task is refused
    with the reason (Conflict); for the next task, NothingYet (the barrier, the limit, a
    backoff, a pause: try again), NothingLeft (the run has nothing left) or Conflict (the
    run was cancelled). Returns the claim (``assignments.claim_in``'s dict). ``unless_busy``
    (a caller that waits for the next change anyway): a run another agent is changing
    right now is not queued for (NothingYet; see ``assignments.lock_run``)."""
    from buildctl import assignments
    from buildctl.errors import NothingLeft, NothingYet

    cfg = parse_config(config)
    _check_wave(wave)
    with db.write():
        # The run's row lock before the agent's row is written: that INSERT's foreign-key
        # check takes a KEY SHARE lock on the run, and two spawners each holding one while
        # waiting to take the claim's FOR UPDATE would deadlock (PostgreSQL).
        if not assignments.lock_run(db, resolve.execution(db, execution_id)["execution_id"], unless_busy=unless_busy):
            raise NothingYet("nothing can be claimed yet: another agent is changing the run right now")
        if task is None:
            run = resolve.execution(db, execution_id)
            if run["status"] == "cancelled":
                raise Conflict(f"execution {run['execution_id']} was cancelled: there is nothing to claim")
            if run["status"] in states.RUN_ENDED:
                raise NothingLeft(f"nothing left to claim: execution {run['execution_id']} is {run['status']}")
        instance_id, ex, task_id = _spawn_in(db, execution_id, wave, task, cfg, instance_id)
        return assignments.claim_in(db, ex, instance_id, task_id, start=True, context=context, refuse=True,
                                    unless_busy=unless_busy)


def claim(db: Database, instance_id: str, *, context: dict | None = None, unless_busy: bool = False) -> dict:
    """`agent claim AG`: the next claimable task for an agent that holds none, claimed and
    started in one transaction, under every rule a worker obeys. Refused as
    ``spawn_and_claim`` refuses the next task, and for an agent that holds a task already
    (report it first: `agent done`) or has ended. ``unless_busy``: as for ``spawn_and_claim``."""
    from buildctl import assignments

    with db.write():
        agent = _unended(db, instance_id, "has ended ({status}); it cannot claim a task")
        iid = agent["instance_id"]
        held = assignments.held_by(db, iid)
        if held is not None:
            name = db.scalar("SELECT display_id FROM tasks WHERE id = ?", (held["task_id"],))
            raise Conflict(f"agent {iid} still holds {name}; report it first (`buildctl agent done {iid} --status …`)")
        return assignments.claim_in(db, agent["execution_id"], iid, start=True, context=context, refuse=True,
                                    unless_busy=unless_busy)


def done(db: Database, instance_id: str, status: str, error: str | None = None, *,
         context: dict | None = None) -> dict:
    """`agent done AG --status completed|failed [--error MSG]`: end the task the agent holds
    — completed, or a failed attempt under the run's retry rules (back to pending after
    its backoff while retries remain, else failed for good with its dependents skipped) —
    and keep the agent for its next claim. One transaction. Refused when the agent holds
    no task or has ended."""
    with db.write():
        agent = _unended(db, instance_id, "has ended ({status}); it holds no task")
        result = _report_held(db, agent, status, error, context)
        if result is None:
            raise Conflict(f"agent {agent['instance_id']} holds no task; claim one first "
                           f"(`buildctl agent claim {agent['instance_id']}`)")
    return result


def _report_held(db: Database, agent: dict, status: str, error: str | None, context: dict | None) -> dict | None:
    """Inside the caller's write: complete or fail the task ``agent`` holds; None when it holds none."""
    from buildctl import agentstate, assignments

    if status not in FINISH_STATUSES:
        raise UsageError(f"invalid status {status!r}; expected one of: {', '.join(FINISH_STATUSES)}")
    iid = agent["instance_id"]
    held = assignments.held_by(db, iid)
    if held is None:
        return None
    ctx = {**(context or {}), "reported_by": "script"}
    if status == "completed":
        out = assignments.complete_in(db, held["assignment_id"], instance_id=iid, context=ctx)
        return {**out, "outcome": "completed", "agent_stuck": None}
    cfg = config_from(agent)
    attempt = 1 + assignments.failed_attempts(db, agent["execution_id"], held["task_id"])
    return assignments.fail_in(db, held["assignment_id"], error=error or "failed (no error given)",
                               max_retries=int(cfg["maxRetries"]), instance_id=iid, context=ctx,
                               backoff_s=agentstate.backoff_s(cfg, attempt))


def claim_waiting(db: Database, attempt, *, execution_id: str, wait_s: float, stale_after_s: float,
                  task_id: str | None = None, agent_id: str | None = None, poll_max_s: float = 1.0) -> dict:
    """Retry ``attempt()`` (a claim) until it succeeds, for at most ``wait_s`` seconds
    (``math.inf``: until the run has nothing left). While waiting, the run's stale agents
    are marked stuck and their tasks released (the lease: a script killed mid-task gives
    its task back to whoever waits), at most once a second, and the next try comes as
    soon as anything commits. What cannot change by waiting is raised at once: a run that
    ended or was cancelled, a named task that ended or was taken for good. A waiting
    ``agent_id`` heartbeats meanwhile (waiting is a sign of life: its own lease must not
    run out while it waits for work)."""
    import time

    from buildctl import assignments
    from buildctl.errors import NothingYet

    deadline = time.monotonic() + wait_s
    next_recover = next_beat = 0.0
    while True:
        try:
            return attempt()
        except NothingYet:
            if time.monotonic() >= deadline:
                raise
        except Conflict:
            # Only a named task that is not claimable *yet* is worth waiting for; anything
            # else refused (a cancelled run, an ended agent) stays refused.
            if task_id is None or time.monotonic() >= deadline:
                raise
            with db.read():
                if assignments.task_taken_for_good(db, execution_id, task_id):
                    raise
        while True:
            if agent_id is not None and time.monotonic() >= next_beat:
                heartbeat(db, agent_id)  # often enough for the lease, not so often that waiters wake each other
                next_beat = time.monotonic() + max(1.0, stale_after_s / 4)
            if time.monotonic() >= next_recover:
                recover(db, stale_after_s, execution_id)
                next_recover = time.monotonic() + 1.0
            version, pause = db.data_version(), 0.01
            until = min(deadline, time.monotonic() + poll_max_s)
            while time.monotonic() < until and db.data_version() == version:
                time.sleep(pause)
                pause = min(pause * 1.5, 0.2)
            # Waiting for the next task: look (read-only) before claiming again. A claim is a
            # write transaction, and one that takes nothing still ends a transaction, which
            # moves every waiter's data_version on PostgreSQL: 64 waiters that each claimed
            # on every change would keep waking each other.
            if task_id is not None or time.monotonic() >= deadline or assignments.run_state(db, execution_id) != "wait":
                break


def _check_wave(wave) -> None:
    if wave is not None and (isinstance(wave, bool) or int(wave) < 1):
        raise UsageError(f"--wave must be at least 1, not {wave}")


def _spawn_in(db: Database, execution_id: str, wave: int | None, task: str | None, cfg: dict,
              instance_id: str | None = None) -> tuple[str, str, str | None]:
    """Insert the agent (a new id unless ``instance_id`` is given) inside the caller's
    write: (instance id, execution id, task id)."""
    from buildctl import ids, jsonstrict

    run = resolve.execution(db, execution_id)
    ex = run["execution_id"]
    if run["status"] in states.RUN_ENDED:
        raise Conflict(f"execution {ex} is {run['status']}; it takes no new agents")
    if wave is not None:
        if not db.scalar("SELECT 1 FROM parallel_execution_waves WHERE execution_id = ? AND wave_number = ?",
                         (ex, int(wave))):
            raise NotFound(f"execution {ex} has no wave {int(wave)}")
    task_id = None
    if task is not None:
        task_id = resolve.task(db, run, task)["id"]
        waves = [r["wave_number"] for r in db.query(
            "SELECT w.wave_number FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
            "WHERE w.execution_id = ? AND a.task_id = ? ORDER BY w.wave_number", (ex, task_id))]
        if not waves:
            raise NotFound(f"task {task} is not in execution {ex}")
        if wave is not None and int(wave) not in waves:
            raise Conflict(f"task {task} is in wave {waves[0]} of execution {ex}, not wave {int(wave)}")
        if wave is None:
            wave = waves[0]
    if wave is None:
        # The run's current wave: the first one not yet ended (else the last, else 1).
        wave = db.scalar(
            "SELECT wave_number FROM parallel_execution_waves WHERE execution_id = ? "
            "ORDER BY status IN ('pending', 'running') DESC, "
            "CASE WHEN status IN ('pending', 'running') THEN wave_number ELSE -wave_number END LIMIT 1",
            (ex,)) or 1
    instance_id = instance_id or ids.new_id("agent")
    db.execute(
        "INSERT INTO build_agent_instances (instance_id, execution_id, current_task_id, wave_number, status, "
        f"spawned_at, config) VALUES (?, ?, ?, ?, 'initializing', {db.sql.now}, ?)",
        (instance_id, ex, task_id, int(wave), jsonstrict.dumps(cfg)),
    )
    execlog.append(db, ex, "info", f"agent {instance_id} spawned (wave {int(wave)})", task_id=task_id,
                   instance_id=instance_id, context={"wave": int(wave), "config": cfg})
    return instance_id, ex, task_id


def adopt(db: Database, instance_id: str, execution_id: str) -> dict:
    """The registered agent a worker works as (`agent work EXEC --agent ID`; `run exec`
    registers its workers' agents itself, so that it knows who died): its instance id,
    execution id and config. Refused when unknown, of another run, or out of work."""
    with db.read():
        agent = resolve.agent(db, instance_id)
        run = resolve.execution(db, execution_id)
    iid = agent["instance_id"]
    if agent["execution_id"] != run["execution_id"]:
        raise Conflict(f"agent {iid} belongs to execution {agent['execution_id']}, not {run['execution_id']}")
    if agent["status"] in states.AGENT_ENDED:
        raise Conflict(f"agent {iid} is {agent['status']}; it cannot take new work")
    return {"instance_id": iid, "execution_id": agent["execution_id"], "config": config_from(agent)}


# --------------------------------------------------------------------------- heartbeat

def check_heartbeat_values(status=None, progress=None, memory_mb=None, cpu=None, pid=None) -> None:
    """The range checks a heartbeat makes before it touches the database (usage errors)."""
    if status is not None and status not in HEARTBEAT_STATUSES:
        raise UsageError(f"invalid heartbeat status {status!r}; expected one of: {', '.join(HEARTBEAT_STATUSES)}")
    if progress is not None and not 0 <= progress <= 100:
        raise UsageError(f"--progress must be between 0 and 100, not {progress}")
    if memory_mb is not None and memory_mb < 0:
        raise UsageError(f"--memory-mb must not be negative, not {memory_mb}")
    if cpu is not None and cpu < 0:
        raise UsageError(f"--cpu must not be negative, not {cpu}")
    if pid is not None and pid < 1:
        raise UsageError(f"--pid must be a positive process id, not {pid}")


def heartbeat(db: Database, instance_id: str, status: str | None = None, task: str | None = None,
              progress: int | None = None, memory_mb: float | None = None, cpu: float | None = None,
              pid: int | None = None, *, revive_stuck: bool = True) -> dict:
    """One heartbeat: an ``agent_heartbeats`` row plus ``last_heartbeat`` (and status/task
    when given) in one transaction. ``pid`` samples that process's memory and CPU
    (explicit ``memory_mb``/``cpu`` win). Refused (Conflict) for an unknown or ended
    agent, and for an agent of a cancelled run: that refusal is how a script learns
    to stop (cancel reaches every agent). A stuck agent goes back to running,
    unless ``revive_stuck`` is false (a worker: its agent marked stuck stops instead)."""
    check_heartbeat_values(status, progress, memory_mb, cpu, pid)
    if pid is not None and (memory_mb is None or cpu is None):
        sampled_mem, sampled_cpu = sample_process(pid)
        memory_mb = sampled_mem if memory_mb is None else memory_mb
        cpu = sampled_cpu if cpu is None else cpu
    with db.write():
        # Locked: a heartbeat read "running" while a peer marked the agent stuck would
        # otherwise set it running again, reviving it (seen on PostgreSQL).
        agent = _unended(db, instance_id, "has ended ({status}); heartbeats are refused", lock=True)
        iid = agent["instance_id"]
        if agent["run_status"] == "cancelled":
            raise Conflict(f"run {agent['execution_id']} was cancelled: agent {iid} must stop (heartbeat refused)")
        was_stuck = agent["status"] == "stuck"
        if was_stuck and not revive_stuck:
            raise Conflict(f"agent {iid} was marked stuck (heartbeat refused)")
        task_id = agent["current_task_id"]
        if task is not None:
            task_id = resolve.task(db, {"execution_id": agent["execution_id"],
                                        "task_list_id": agent["task_list_id"]}, task)["id"]
        new_status = status or ("running" if was_stuck else agent["status"])
        now = db.scalar(
            f"UPDATE build_agent_instances SET last_heartbeat = {db.sql.now}, status = ?, current_task_id = ? "
            "WHERE instance_id = ? RETURNING last_heartbeat", (new_status, task_id, iid))
        # The row's timestamp is the agent's new last_heartbeat, copied inside the database
        # (a timestamp never travels through the client as a parameter).
        heartbeat_id = db.scalar(
            "INSERT INTO agent_heartbeats (instance_id, timestamp, status, current_task_id, progress_percent, "
            "memory_usage_mb, cpu_percent) SELECT ?, last_heartbeat, ?, ?, ?, ?, ? FROM build_agent_instances "
            "WHERE instance_id = ? RETURNING id",
            (iid, new_status, task_id, progress, None if memory_mb is None else round(memory_mb),
             None if cpu is None else float(cpu), iid))
        if was_stuck:
            execlog.append(db, agent["execution_id"], "warning",
                           f"agent {iid} was stuck and sent a heartbeat; back to {new_status}",
                           task_id=task_id, instance_id=iid, context={"previous_status": "stuck"})
    return {"instance_id": iid, "heartbeat_id": heartbeat_id, "status": new_status, "timestamp": now,
            "was_stuck": was_stuck}


def sample_process(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU %) of a process: from /proc (stdlib), or psutil where /proc is missing.

    The CPU figure is the process's average since it started (user + system time
    over its lifetime): one sample needs no waiting, which keeps a heartbeat fast.
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise NotFound(f"no process with pid {pid}") from None
        return _sample_psutil(pid)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot sample process {pid}: {exc}") from None
    fields = stat[stat.rindex(b")") + 2:].split()  # from field 3 (state) on
    utime, stime, start, rss_pages = int(fields[11]), int(fields[12]), int(fields[19]), int(fields[21])
    ticks = os.sysconf("SC_CLK_TCK")
    elapsed = uptime - start / ticks
    cpu = 100.0 * (utime + stime) / ticks / elapsed if elapsed > 0 else 0.0
    return rss_pages * os.sysconf("SC_PAGE_SIZE") / 1048576, round(cpu, 1)


def _sample_psutil(pid: int) -> tuple[float, float]:
    import time

    import psutil

    try:
        p = psutil.Process(int(pid))
        times = p.cpu_times()
        elapsed = max(time.time() - p.create_time(), 1e-6)
        return p.memory_info().rss / 1048576, round(100.0 * (times.user + times.system) / elapsed, 1)
    except psutil.NoSuchProcess:
        raise NotFound(f"no process with pid {pid}") from None
    except psutil.Error as exc:
        raise InvalidInput(f"cannot sample process {pid}: {exc}") from None


# --------------------------------------------------------------------------- finish

def finish(db: Database, instance_id: str, status: str, error: str | None = None, *, context: dict | None = None,
           keep_stuck: bool = False, report_held: bool = False) -> dict:
    """End an agent: ``completed`` or ``failed`` (with an ``error_context`` when ``error``;
    ``context`` adds keys to it, e.g. the signal that killed a worker).

    A task the agent still held is dealt with in the same transaction, so an ended agent
    never holds one: with ``report_held`` (a script's `agent finish`), it is completed or
    failed as ``status`` says (``done``'s rules); otherwise it is released (back to pending
    if retries remain, else failed). With ``keep_stuck``, a stuck agent stays stuck (its
    error_context says why; a worker ending after its agent was marked stuck). Refused
    for an unknown or already ended agent.
    """
    from buildctl import assignments

    if status not in FINISH_STATUSES:
        raise UsageError(f"invalid finish status {status!r}; expected one of: {', '.join(FINISH_STATUSES)}")
    with db.write():
        agent = _unended(db, instance_id, "has already ended ({status})")
        iid = agent["instance_id"]
        assignments.lock_run(db, agent["execution_id"])
        if db.sql.lock_rows("a"):  # read again under the run's lock, then the agent's (that order, as claims take them)
            agent = _unended(db, iid, "has already ended ({status})", lock=True)
        if keep_stuck and agent["status"] == "stuck":
            return {"instance_id": iid, "status": "stuck", "released": assignments.release_held(
                db, iid, reason=f"agent {iid} was stuck and ended while holding the task", agent=agent)}
        reported = _report_held(db, agent, status, error, None) if report_held else None
        error_context = None
        if error is not None:
            from buildctl import jsonstrict

            stamp = db.scalar(f"SELECT {db.sql.now_iso}")
            error_context = jsonstrict.dumps({"code": "agent_failed" if status == "failed" else "agent_error",
                                              "message": error, "taskId": agent["current_task_id"], "timestamp": stamp,
                                              **(context or {})})
        db.execute(
            f"UPDATE build_agent_instances SET status = ?, completed_at = {db.sql.now}, "
            "error_context = COALESCE(?, error_context) WHERE instance_id = ?", (status, error_context, iid))
        execlog.append(db, agent["execution_id"], "error" if status == "failed" else "info",
                       f"agent {iid} {status}" + (f": {error}" if error else ""),
                       task_id=agent["current_task_id"], instance_id=iid)
        released = assignments.release_held(
            db, iid, reason=f"agent {iid} finished ({status}) while holding the task" + (f": {error}" if error else ""),
            agent=agent)
    return {"instance_id": iid, "status": status, "released": released, "reported": reported}


# --------------------------------------------------------------------------- list / show

def _list_sql(db: Database) -> str:
    return f"""
SELECT bai.instance_id, bai.execution_id, bai.agent_type, bai.wave_number, bai.status,
       bai.current_task_id, t.display_id AS task, bai.spawned_at, bai.last_heartbeat, bai.completed_at,
       CAST({db.sql.age_s('COALESCE(bai.last_heartbeat, bai.spawned_at)')} AS INTEGER) AS seconds_since_heartbeat,
       bai.config, bai.error_context
FROM build_agent_instances bai
LEFT JOIN tasks t ON t.id = bai.current_task_id
"""


def list_agents(db: Database, execution_id: str | None = None, status: str | None = None) -> list[dict]:
    """Agents, oldest first (ties by id), optionally of one run and/or one status."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"invalid agent status {status!r}; expected one of: {', '.join(STATUSES)}")
    where, params = [], []
    with db.read():
        if execution_id is not None:
            where.append("bai.execution_id = ?")
            params.append(resolve.execution(db, execution_id)["execution_id"])
        if status is not None:
            where.append("bai.status = ?")
            params.append(status)
        sql = _list_sql(db) + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY bai.spawned_at, bai.instance_id"
        return db.query(sql, params)


def show(db: Database, instance_id: str, heartbeats: int = 10) -> dict:
    """One agent with its most recent heartbeats (oldest first) and held assignments."""
    if heartbeats < 0:
        raise UsageError(f"--heartbeats must not be negative, not {heartbeats}")
    with db.read():
        iid = resolve.agent(db, instance_id)["instance_id"]
        agent = db.one(_list_sql(db) + " WHERE bai.instance_id = ?", (iid,))
        recent = db.query(
            "SELECT h.id, h.timestamp, h.status, h.current_task_id, t.display_id AS task, h.progress_percent, "
            "h.memory_usage_mb, h.cpu_percent FROM agent_heartbeats h LEFT JOIN tasks t ON t.id = h.current_task_id "
            "WHERE h.instance_id = ? ORDER BY h.timestamp DESC, h.id DESC LIMIT ?", (iid, int(heartbeats)))
        agent["heartbeat_count"] = db.scalar("SELECT COUNT(*) FROM agent_heartbeats WHERE instance_id = ?", (iid,))
        agent["assignments"] = db.query(
            "SELECT a.id AS assignment_id, w.wave_number, t.display_id AS task, a.status, a.assigned_at, a.completed_at "
            "FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
            "JOIN tasks t ON t.id = a.task_id WHERE a.instance_id = ? ORDER BY a.id", (iid,))
    recent.reverse()
    agent["recent_heartbeats"] = recent
    return agent


# --------------------------------------------------------------------------- stale

def stale(db: Database, threshold_s: float = DEFAULT_STALE_S, execution_id: str | None = None) -> list[dict]:
    """The stale query (sql/queries/stale_agents.sql): live agents whose last
    heartbeat — or spawn, when they never sent one — is older than ``threshold_s``."""
    from buildctl.durations import offset

    if threshold_s is None or threshold_s < 0:
        raise UsageError(f"--threshold must not be negative, not {threshold_s}")
    with db.read():
        ex = resolve.execution(db, execution_id)["execution_id"] if execution_id is not None else None
        return db.named("stale_agents", {"threshold": offset(threshold_s), "execution_id": ex})


def mark_stale(db: Database, threshold_s: float = DEFAULT_STALE_S, execution_id: str | None = None) -> list[dict]:
    """`agent stale --mark`: ``recover`` and return the agents it marked stuck (each with
    the assignments released from it)."""
    return recover(db, threshold_s, execution_id)["marked"]


def recover(db: Database, stale_after_s: float = DEFAULT_STALE_S, execution_id: str | None = None) -> dict:
    """Give back the work of agents that cannot do it (so runs heal themselves):

    - every stale live agent (the lease expired: no heartbeat for ``stale_after_s`` by
      the database clock) is marked stuck, with an ``error_context``, and its tasks
      released, in ONE transaction per agent, re-checked inside it (an agent that
      heartbeated meanwhile is left alone);
    - every task still held by an agent that has ended (completed, failed, stuck) or
      does not exist is released, one transaction per agent.

    A release is a failed attempt: back to pending while retries remain, else failed
    with its dependents skipped. `agent stale --mark`, gc and every idle worker (for its
    own run) call this. Returns ``{"marked": [agent rows with "released"],
    "released": [{"instance_id", "agent_status", "assignment_id", "outcome"}]}``.
    """
    from buildctl import assignments, jsonstrict
    from buildctl.durations import offset

    candidates = stale(db, stale_after_s, execution_id)  # validates the threshold and the run
    ex = resolve.execution(db, execution_id)["execution_id"] if execution_id is not None else None
    cutoff = offset(stale_after_s)
    marked = []
    for cand in candidates:
        iid = cand["instance_id"]
        with db.write():
            assignments.lock_run(db, cand["execution_id"])
            # Still stale inside the transaction (one that heartbeated meanwhile is left
            # alone): the same named query, the one stale rule.
            row = next((r for r in db.named("stale_agents", {"threshold": cutoff,
                                                             "execution_id": cand["execution_id"]})
                        if r["instance_id"] == iid), None)
            if row is None:
                continue
            message = f"no heartbeat for {row['seconds_since_heartbeat']} s (threshold {stale_after_s:g} s)"
            task_id = row["current_task_id"] or db.scalar(
                "SELECT task_id FROM wave_task_assignments WHERE instance_id = ? "
                f"AND status IN {states.sql_list(states.ASSIGNMENT_HELD)} ORDER BY id LIMIT 1", (iid,))
            ctx = mark_stuck(db, row, code="stale_heartbeat", message=message, task_id=task_id)
            released = assignments.release_held(
                db, iid, reason=f"agent stale: no heartbeat for more than {stale_after_s:g} s",
                agent=row)
        marked.append({**cand, "status": "stuck", "error_context": jsonstrict.dumps(ctx), "released": released})
    released = []
    for orphan in _orphan_holders(db, ex):
        iid = orphan["instance_id"]
        with db.write():
            agent = db.one("SELECT status, config FROM build_agent_instances WHERE instance_id = ?", (iid,))
            if agent is not None and agent["status"] not in states.AGENT_ENDED:
                continue  # a stuck agent that heartbeated meanwhile is running again: it keeps its task
            why = (f"agent {iid} has ended ({agent['status']}) but still held the task" if agent is not None
                   else f"agent {iid} does not exist")
            done = assignments.release_held(db, iid, reason=why, agent=agent or {})
        released += [{"instance_id": iid, "agent_status": agent["status"] if agent else None, **r} for r in done]
    return {"marked": marked, "released": released}


def _orphan_holders(db: Database, execution_id: str | None) -> list[dict]:
    """Agents that hold an assignment but have ended or do not exist (of one run, or all)."""
    run_filter = "AND w.execution_id = ? " if execution_id is not None else ""
    return db.query(
        "SELECT DISTINCT a.instance_id FROM wave_task_assignments a "
        "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
        "LEFT JOIN build_agent_instances b ON b.instance_id = a.instance_id "
        f"WHERE a.status IN {states.sql_list(states.ASSIGNMENT_HELD)} AND a.instance_id IS NOT NULL {run_filter}"
        f"  AND (b.instance_id IS NULL OR b.status IN {states.sql_list(states.AGENT_ENDED)}) "
        "ORDER BY a.instance_id", (execution_id,) if execution_id is not None else ())


__all__ = ["spawn", "spawn_and_claim", "claim", "done", "claim_waiting", "adopt", "heartbeat", "finish", "mark_stuck", "list_agents", "show", "stale",
           "mark_stale", "recover", "sample_process", "parse_config", "DEFAULT_CONFIG", "STATUSES",
           "HEARTBEAT_STATUSES", "FINISH_STATUSES"]
