"""Build agents: spawn, heartbeat, finish, list, show, stale (+ mark) (SPEC §4, B.1, B.2).

Stdlib only, and cheap to import: ``heartbeat`` and ``agent finish`` run on the lean
hot path (SPEC §7). ``jsonstrict``, ``ids`` (which pulls in ``secrets``), ``assignments``
and ``psutil`` are imported inside the functions that need them.

Lifecycle: initializing (spawned) → running → idle ↔ running → completed | failed | stuck.
A stuck agent that heartbeats again goes back to running, with a ``warning`` event.
"""

from __future__ import annotations

import os

from buildctl import execlog, resolve
from buildctl.errors import Conflict, InvalidInput, NotFound, UsageError, quoted
from buildctl.storage import NOW

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from typing import Any

    from buildctl.storage import Database

STATUSES = ("initializing", "running", "idle", "completed", "failed", "stuck")
#: An agent in one of these has ended: heartbeats and finish are refused.
ENDED = ("completed", "failed")
#: What a heartbeat may set (completed/failed go through `agent finish`; stuck is for gc).
HEARTBEAT_STATUSES = ("running", "idle")
FINISH_STATUSES = ("completed", "failed")
#: Judged stale by `agent stale` (SPEC §4).
LIVE = ("initializing", "running", "idle")
#: A run in one of these takes no new agents.
RUN_CLOSED = ("completed", "failed", "cancelled")

DEFAULT_CONFIG = {"maxRetries": 3, "heartbeatIntervalMs": 30000, "taskTimeoutMs": 300000, "validationTimeoutMs": 120000}
#: Worker settings beyond SPEC §4's four: the backoff before each retry (1 s, 5 s, 15 s),
#: how long a stopped child gets between SIGTERM and SIGKILL, and how long a worker
#: that cannot write heartbeats keeps its child (the stale threshold).
WORKER_CONFIG = {"retryBackoffMs": [1000, 5000, 15000], "killGraceMs": 5000, "staleAfterMs": 60000}
DEFAULT_STALE_S = 60.0
#: The range of every config value (and of each retryBackoffMs step): milliseconds up to
#: 7 days, at most 100 retries. Zero is refused where it would make the worker spin or
#: stop every task at once (intervals, timeouts, the stale threshold).
_WEEK_MS = 7 * 24 * 3600 * 1000
CONFIG_RANGES = {
    "maxRetries": (0, 100),
    "heartbeatIntervalMs": (1, _WEEK_MS),
    "taskTimeoutMs": (1, _WEEK_MS),
    "validationTimeoutMs": (1, _WEEK_MS),
    "retryBackoffMs": (0, _WEEK_MS),
    "killGraceMs": (0, _WEEK_MS),
    "staleAfterMs": (1, _WEEK_MS),
}
#: retryBackoffMs holds one step per retry at most.
MAX_BACKOFF_STEPS = CONFIG_RANGES["maxRetries"][1]

#: An ISO-8601 UTC timestamp from the database clock, for JSON documents we store.
NOW_ISO = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

_AGENT = "SELECT * FROM build_agent_instances WHERE instance_id = ?"


# --------------------------------------------------------------------------- lookups

def _unended(db: Database, instance_id: str, refusal: str) -> dict:
    """The agent, refused when it has finished."""
    agent = resolve.agent(db, instance_id)
    if agent["status"] in ENDED:
        raise Conflict(f"agent {agent['instance_id']} " + refusal.format(status=agent["status"]))
    return agent


def _config(row: dict) -> dict:
    """The stored config merged over the defaults. A stored value that is not valid JSON,
    or a key whose value is out of range (a row written by an old version or by hand),
    falls back to the default: a worker or a release never fails on one."""
    from buildctl import jsonstrict

    cfg = jsonstrict.stored(row.get("config"), {})
    if not isinstance(cfg, dict):
        cfg = {}
    good = {}
    for key, v in cfg.items():
        try:
            _check_config_value(key, v)
        except InvalidInput:
            continue
        good[key] = v
    return {**DEFAULT_CONFIG, **good}


def _check_config_value(key: str, v: Any) -> None:
    if key not in CONFIG_RANGES:
        raise InvalidInput(f"unknown --config key {key!r}; expected one of: {', '.join(CONFIG_RANGES)}")
    low, high = CONFIG_RANGES[key]
    if key == "retryBackoffMs":
        if (not isinstance(v, list) or not 1 <= len(v) <= MAX_BACKOFF_STEPS
                or any(isinstance(x, bool) or not isinstance(x, int) or not low <= x <= high for x in v)):
            raise InvalidInput(f"--config retryBackoffMs must be a list of 1 to {MAX_BACKOFF_STEPS} integers "
                               f"between {low} and {high}, not {quoted(v)}")
    elif isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise InvalidInput(f"--config {key} must be an integer between {low} and {high}, not {quoted(v)}")


def parse_config(value: str | dict | None) -> dict:
    """SPEC §4 defaults merged with ``--config``: a strict JSON object of known keys, each
    an integer in its range (``CONFIG_RANGES``)."""
    from buildctl import jsonstrict

    if value is None:
        given = {}
    elif isinstance(value, dict):
        given = value
    else:
        given = jsonstrict.loads(value, what="--config")
        if not isinstance(given, dict):
            raise InvalidInput("--config must be a JSON object, e.g. '{\"maxRetries\": 5}'")
    for key, v in given.items():
        _check_config_value(key, v)
    return {**DEFAULT_CONFIG, **given}


# --------------------------------------------------------------------------- spawn

def spawn(db: Database, execution_id: str, wave: int | None = None, task: str | None = None,
          config: str | dict | None = None) -> str:
    """Register an agent (status ``initializing``) in a run; returns its instance id.

    Refused for an unknown, ended or cancelled run, a wave the run does not have,
    or a task that is not in the run (or not in ``wave``).
    """
    from buildctl import ids, jsonstrict

    cfg = parse_config(config)
    if wave is not None and (isinstance(wave, bool) or int(wave) < 1):
        raise UsageError(f"--wave must be at least 1, not {wave}")
    with db.write():
        run = resolve.execution(db, execution_id)
        ex = run["execution_id"]
        if run["status"] in RUN_CLOSED:
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
        instance_id = ids.new_id("agent")
        db.execute(
            "INSERT INTO build_agent_instances (instance_id, execution_id, current_task_id, wave_number, status, "
            f"spawned_at, config) VALUES (?, ?, ?, ?, 'initializing', {NOW}, ?)",
            (instance_id, ex, task_id, int(wave), jsonstrict.dumps(cfg, what="--config")),
        )
        execlog.append(db, ex, "info", f"agent {instance_id} spawned (wave {int(wave)})", task_id=task_id,
                       instance_id=instance_id, context={"wave": int(wave), "config": cfg})
    return instance_id


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
              pid: int | None = None) -> dict:
    """One heartbeat: an ``agent_heartbeats`` row plus ``last_heartbeat`` (and status/task
    when given) in one transaction. ``pid`` samples that process's memory and CPU
    (explicit ``memory_mb``/``cpu`` win). Refused for an unknown or ended agent."""
    check_heartbeat_values(status, progress, memory_mb, cpu, pid)
    if pid is not None and (memory_mb is None or cpu is None):
        sampled_mem, sampled_cpu = sample_process(pid)
        memory_mb = sampled_mem if memory_mb is None else memory_mb
        cpu = sampled_cpu if cpu is None else cpu
    with db.write():
        agent = _unended(db, instance_id, "has ended ({status}); heartbeats are refused")
        iid = agent["instance_id"]
        task_id = agent["current_task_id"]
        if task is not None:
            run = db.one("SELECT execution_id, task_list_id FROM task_list_execution_runs WHERE execution_id = ?",
                         (agent["execution_id"],))
            task_id = resolve.task(db, run, task)["id"]
        was_stuck = agent["status"] == "stuck"
        new_status = status or ("running" if was_stuck else agent["status"])
        now = db.scalar(
            f"UPDATE build_agent_instances SET last_heartbeat = {NOW}, status = ?, current_task_id = ? "
            "WHERE instance_id = ? RETURNING last_heartbeat", (new_status, task_id, iid))
        cur = db.execute(
            "INSERT INTO agent_heartbeats (instance_id, timestamp, status, current_task_id, progress_percent, "
            "memory_usage_mb, cpu_percent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iid, now, new_status, task_id, progress, None if memory_mb is None else round(memory_mb),
             None if cpu is None else float(cpu)))
        if was_stuck:
            execlog.append(db, agent["execution_id"], "warning",
                           f"agent {iid} was stuck and sent a heartbeat; back to {new_status}",
                           task_id=task_id, instance_id=iid, context={"previous_status": "stuck"})
    return {"instance_id": iid, "heartbeat_id": cur.lastrowid, "status": new_status, "timestamp": now,
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

def finish(db: Database, instance_id: str, status: str, error: str | None = None) -> dict:
    """End an agent: ``completed`` or ``failed`` (with an ``error_context`` when ``error``).

    A task the agent still held (assigned/running) is released: back to pending if
    retries remain, else failed. Refused for an unknown or already ended agent.
    """
    if status not in FINISH_STATUSES:
        raise UsageError(f"invalid finish status {status!r}; expected one of: {', '.join(FINISH_STATUSES)}")
    with db.write():
        agent = _unended(db, instance_id, "has already ended ({status})")
        iid = agent["instance_id"]
        error_context = None
        if error is not None:
            from buildctl import jsonstrict

            stamp = db.scalar(f"SELECT {NOW_ISO}")
            error_context = jsonstrict.dumps({"code": "agent_failed" if status == "failed" else "agent_error",
                                              "message": error, "taskId": agent["current_task_id"], "timestamp": stamp})
        db.execute(
            f"UPDATE build_agent_instances SET status = ?, completed_at = {NOW}, "
            "error_context = COALESCE(?, error_context) WHERE instance_id = ?", (status, error_context, iid))
        if status == "failed":
            execlog.append(db, agent["execution_id"], "error",
                           f"agent {iid} failed" + (f": {error}" if error else ""),
                           task_id=agent["current_task_id"], instance_id=iid)
        else:
            execlog.append(db, agent["execution_id"], "info", f"agent {iid} completed" + (f": {error}" if error else ""),
                           task_id=agent["current_task_id"], instance_id=iid)
        held = db.query("SELECT id FROM wave_task_assignments WHERE instance_id = ? AND status IN ('assigned', 'running') "
                        "ORDER BY id", (iid,))
        cfg = config_of(db, iid) if held else None
    released = []
    for a in held:
        released.append(_release(db, a["id"], iid, cfg, f"agent {iid} finished ({status}) while holding the task"
                                 + (f": {error}" if error else "")))
    return {"instance_id": iid, "status": status, "released": [r for r in released if r]}


def config_of(db: Database, instance_id: str) -> dict:
    """The agent's config: SPEC §4 defaults merged with what it was spawned with."""
    return _config(db.one("SELECT config FROM build_agent_instances WHERE instance_id = ?", (instance_id,)) or {})


def _release(db: Database, assignment_id: int, instance_id: str, cfg: dict, reason: str) -> dict | None:
    """assignments.release in its own short transaction; None when someone else got there first."""
    from buildctl import assignments

    try:
        outcome = assignments.release(db, assignment_id, reason=reason, max_retries=int(cfg["maxRetries"]),
                                      instance_id=instance_id)
    except (Conflict, NotFound):
        return None
    return {"assignment_id": assignment_id, "outcome": outcome}


# --------------------------------------------------------------------------- list / show

_LIST = """
SELECT bai.instance_id, bai.execution_id, bai.agent_type, bai.wave_number, bai.status,
       bai.current_task_id, t.display_id AS task, bai.spawned_at, bai.last_heartbeat, bai.completed_at,
       CAST((julianday('now') - julianday(COALESCE(bai.last_heartbeat, bai.spawned_at))) * 86400 AS INTEGER)
         AS seconds_since_heartbeat,
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
        sql = _LIST + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY bai.spawned_at, bai.instance_id"
        return db.query(sql, params)


def show(db: Database, instance_id: str, heartbeats: int = 10) -> dict:
    """One agent with its most recent heartbeats (oldest first) and held assignments."""
    if heartbeats < 0:
        raise UsageError(f"--heartbeats must not be negative, not {heartbeats}")
    with db.read():
        iid = resolve.agent(db, instance_id)["instance_id"]
        agent = db.one(_LIST + " WHERE bai.instance_id = ?", (iid,))
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
    """B.8's stale query, fixed (sql/queries/stale_agents.sql): live agents whose last
    heartbeat — or spawn, when they never sent one — is older than ``threshold_s``."""
    from buildctl.durations import offset

    if threshold_s is None or threshold_s < 0:
        raise UsageError(f"--threshold must not be negative, not {threshold_s}")
    with db.read():
        ex = resolve.execution(db, execution_id)["execution_id"] if execution_id is not None else None
        return db.named("stale_agents", {"threshold": offset(threshold_s), "execution_id": ex})


def mark_stale(db: Database, threshold_s: float = DEFAULT_STALE_S, execution_id: str | None = None) -> list[dict]:
    """Set every stale agent ``stuck`` (with an ``error_context``) and release its task.

    Each agent is marked in its own short transaction, re-checked inside it (an agent
    that heartbeated meanwhile is left alone); each held assignment is then released
    by ``assignments.release`` (its own transaction): back to pending if retries
    remain, else failed. Assignments still held by agents that are already stuck (a
    mark interrupted before its release) are released too. Returns the marked agents.
    """
    from buildctl import jsonstrict
    from buildctl.durations import offset

    candidates = stale(db, threshold_s, execution_id)
    modifier = offset(threshold_s)
    reason = f"agent stale: no heartbeat for more than {threshold_s:g} s"
    marked = []
    for cand in candidates:
        iid = cand["instance_id"]
        with db.write():
            row = db.one(
                "SELECT instance_id, execution_id, status, current_task_id, config, "
                "  CAST((julianday('now') - julianday(COALESCE(last_heartbeat, spawned_at))) * 86400 AS INTEGER) AS silent_s "
                "FROM build_agent_instances WHERE instance_id = ? AND status IN ('initializing', 'running', 'idle') "
                "  AND COALESCE(last_heartbeat, spawned_at) < strftime('%Y-%m-%d %H:%M:%f', 'now', ?)", (iid, modifier))
            if row is None:
                continue
            stamp = db.scalar(f"SELECT {NOW_ISO}")
            message = f"no heartbeat for {row['silent_s']} s (threshold {threshold_s:g} s)"
            task_id = row["current_task_id"] or db.scalar(
                "SELECT task_id FROM wave_task_assignments WHERE instance_id = ? AND status IN ('assigned', 'running') "
                "ORDER BY id LIMIT 1", (iid,))
            ctx = {"code": "stale_heartbeat", "message": message, "taskId": task_id, "timestamp": stamp}
            db.execute("UPDATE build_agent_instances SET status = 'stuck', error_context = ? WHERE instance_id = ?",
                       (jsonstrict.dumps(ctx), iid))
            execlog.append(db, row["execution_id"], "warning", f"agent {iid} marked stuck: {message}",
                           task_id=task_id, instance_id=iid, context=ctx)
        marked.append({**cand, "status": "stuck", "error_context": jsonstrict.dumps(ctx), "released": []})
    by_id = {m["instance_id"]: m for m in marked}
    ex = resolve.execution(db, execution_id)["execution_id"] if execution_id is not None else None
    held = db.query(
        "SELECT a.id, a.instance_id, bai.config FROM wave_task_assignments a "
        "JOIN build_agent_instances bai ON bai.instance_id = a.instance_id "
        "WHERE a.status IN ('assigned', 'running') AND bai.status = 'stuck' AND (? IS NULL OR bai.execution_id = ?) "
        "ORDER BY a.id", (ex, ex))
    for a in held:
        done = _release(db, a["id"], a["instance_id"], _config(a), reason)
        if done and a["instance_id"] in by_id:
            by_id[a["instance_id"]]["released"].append(done)
    return marked


__all__ = ["spawn", "heartbeat", "finish", "list_agents", "show", "stale", "mark_stale", "resolve", "sample_process",
           "parse_config", "DEFAULT_CONFIG", "STATUSES", "HEARTBEAT_STATUSES", "FINISH_STATUSES"]
