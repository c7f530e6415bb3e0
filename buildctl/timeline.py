"""A run against time: every attempt of every task, the waves, the critical path (issue 13).

Built only from the execution log's server timestamps (``task_started``,
``task_completed``, ``task_failed``, ``task_skipped``; see ``assignments`` and
``worker`` for what each carries in ``context``), so the picture is the database
clock's, whichever machines ran the agents. Stdlib only; never prints.

Attempts
    An attempt opens at ``task_started`` and closes at the task's next
    ``task_completed`` (outcome ``completed``) or ``task_failed`` (``released`` when
    its context says ``released``: taken back from a stuck, stale or stopped agent;
    else ``failed``). A worker that retries in place writes no ``task_started`` for
    the retry: such an attempt starts ``duration_s`` (+ ``validation_duration_s``)
    before its end, never before the previous attempt's end (at that end when the
    context has no duration); the backoff between the two is held time, not work. An
    attempt still open is ``running`` and ends at the database's now. A second
    ``task_started`` from another agent while one is open closes the first as
    ``unknown``. A stored ``context`` that is not a JSON object counts as empty; an
    event whose timestamp cannot be read is left out and counted.

Figures (``summary``)
    wall time
        from the first attempt's start to the last attempt's end; while the run is
        active (pending, running, paused) to the database's now.
    task time
        the attempts' durations summed: the agent-time spent running tasks. It
        includes failed and released attempts (``retry_time_s`` is their part) and
        excludes the backoff between in-place retries.
    agents (``capacity``)
        the task list's ``max_parallel_agents``: no claim ever lets more tasks run
        at once, so wall × capacity is exactly the agent-time the run was allowed.
        Counting the distinct agents instead would count a killed worker and its
        replacement twice and would make an idle surplus worker look like capacity;
        that count is reported as ``agents_used``.
    parallel efficiency
        task time ÷ (wall time × capacity), between 0 and 1.
    idle at barriers
        for each wave followed by a wave that ran, the agent-seconds of free
        capacity, capacity − slots held, between the wave's last hand-out (the
        start of its last attempt that was claimed, i.e. not a retry in place: from
        then on nothing of the wave was left to hand out, and nothing of the next
        wave could start) and the end of its last attempt (the barrier). A slot is
        held from an attempt's start to its end, and through an in-place retry's
        backoff.

Critical path
    The chain of tasks that set the wall time, walked backwards. It ends with the
    task whose last attempt ended last. A task T (spanning its first attempt's
    start S to its last attempt's end) is preceded by whichever of these ended
    last at or before S: a task T depends on (``dependency``); a task of an earlier
    wave (``barrier``: T could not start before every earlier wave had ended); a
    task of T's own wave whose end freed a slot while every slot was held
    (``slot``: held slots ≥ min(capacity, agents_used) just before it ended). Ties
    prefer dependency, then barrier. The walk stops at a task with no such
    predecessor. Each task on the path has its span, its share of the wall time,
    and the wait between its predecessor's end and its own start (claim latency, a
    pause); the spans and the waits add up to the wall time when the path starts at
    the run's first attempt.
"""

from __future__ import annotations

import bisect
import json
import math
from datetime import datetime, timedelta, timezone

from buildctl import states
from buildctl.errors import NotFound, UsageError

GROUPINGS = ("task", "agent")
#: How an attempt ended; ``running`` is still open, ``unknown`` was superseded without a report.
OUTCOMES = ("completed", "failed", "released", "running", "unknown")
#: A ``duration_s`` in a context beyond this (about 116 days) is not believed.
_MAX_DURATION_S = 1e7

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from buildctl.storage import Database


# --------------------------------------------------------------------------- reading stored values

def parse_time(value) -> datetime | None:
    """A stored timestamp as a naive UTC datetime; None when it cannot be read."""
    if isinstance(value, datetime):
        stamp = value
    else:
        try:
            stamp = datetime.fromisoformat(str(value).strip())
        except (TypeError, ValueError):
            return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return stamp


def format_time(stamp: datetime | None) -> str | None:
    """The database's own text form, ``YYYY-MM-DD HH:MM:SS.fff``."""
    if stamp is None:
        return None
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def context_of(text) -> dict:
    """A stored ``context`` as a dict; anything that is not a JSON object is empty."""
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value <= _MAX_DURATION_S else None


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _s(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


# --------------------------------------------------------------------------- loading

_TASK_EVENTS = states.sql_list(states.TASK_EVENT_TYPES)


def _load(db: Database, execution_id: str) -> dict:
    with db.read():
        run = db.one(
            "SELECT r.execution_id, r.task_list_id, l.name AS task_list_name, r.run_number, r.status, "
            "r.started_at, r.completed_at, l.max_parallel_agents FROM task_list_execution_runs r "
            "JOIN task_lists_v2 l ON l.id = r.task_list_id WHERE r.execution_id = ?", (execution_id,))
        if run is None:
            raise NotFound(f"no execution {execution_id!r}")
        now = db.scalar(f"SELECT {db.sql.now}")
        waves = db.query(
            "SELECT wave_number, status, task_count, started_at, completed_at FROM parallel_execution_waves "
            "WHERE execution_id = ? ORDER BY wave_number", (execution_id,))
        tasks = db.query(
            "SELECT a.task_id, t.display_id, t.title, t.position, w.wave_number, a.status, a.instance_id "
            "FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
            "JOIN tasks t ON t.id = a.task_id WHERE w.execution_id = ? ORDER BY w.wave_number, t.position, a.id",
            (execution_id,))
        deps = db.query(
            "SELECT r.source_task_id, r.target_task_id FROM task_relationships r "
            "JOIN tasks t ON t.id = r.source_task_id "
            "WHERE t.task_list_id = ? AND r.relationship_type = 'depends_on'", (run["task_list_id"],))
        agents = db.query(
            "SELECT instance_id, status, spawned_at, completed_at FROM build_agent_instances "
            "WHERE execution_id = ? ORDER BY spawned_at, instance_id", (execution_id,))
        events = db.query(
            "SELECT id, task_id, instance_id, timestamp, event_type, message, context FROM task_execution_log "
            f"WHERE execution_id = ? AND event_type IN {_TASK_EVENTS} ORDER BY timestamp, id", (execution_id,))
    return {"run": run, "now": now, "waves": waves, "tasks": tasks, "deps": deps, "agents": agents, "events": events}


# --------------------------------------------------------------------------- attempts

class _Attempt:
    __slots__ = ("task_id", "agent", "attempt", "start", "end", "held_from", "outcome", "exit_code", "error")

    def __init__(self, task_id: str, agent: str | None, start: datetime, held_from: datetime | None = None):
        self.task_id, self.agent, self.start = task_id, agent, start
        self.held_from = held_from or start
        self.attempt = self.end = self.outcome = self.exit_code = self.error = None


def _attempts(events: list[dict], task_ids: list, now: datetime) -> tuple[dict, dict, int]:
    """Per task (in ``task_ids``' order): its attempts in order, and when it was skipped; plus the
    unreadable events."""
    attempts: dict[str, list[_Attempt]] = {t: [] for t in task_ids}
    open_: dict[str, _Attempt] = {}
    skipped: dict[str, datetime] = {}
    unreadable = 0
    for ev in events:
        tid = ev["task_id"]
        if tid not in attempts:
            continue  # a task outside this run's waves (an event added by hand)
        at = parse_time(ev["timestamp"])
        if at is None:
            unreadable += 1
            continue
        ctx = context_of(ev["context"])
        kind = ev["event_type"]
        if kind == "task_skipped":
            skipped[tid] = at
            continue
        current = open_.get(tid)
        if kind == "task_started":
            if current is not None:
                if current.agent == ev["instance_id"]:
                    continue  # the same start reported twice
                _close(current, at, "unknown", {}, None)
                attempts[tid].append(current)
            open_[tid] = a = _Attempt(tid, ev["instance_id"], at)
            a.attempt = _int(ctx.get("attempt"))
            continue
        if current is None:
            current = _inferred_start(tid, ev["instance_id"], at, ctx, attempts[tid])
        outcome = "completed" if kind == "task_completed" else ("released" if ctx.get("released") is True else "failed")
        _close(current, at, outcome, ctx, ev["message"])
        if current.attempt is None:
            current.attempt = len(attempts[tid]) + 1
        attempts[tid].append(current)
        open_.pop(tid, None)
    for tid, a in open_.items():
        _close(a, max(now, a.start), "running", {}, None)
        a.attempt = a.attempt or len(attempts[tid]) + 1
        attempts[tid].append(a)
    return attempts, skipped, unreadable


def _inferred_start(task_id: str, agent: str | None, end: datetime, ctx: dict, earlier: list[_Attempt]) -> _Attempt:
    """An attempt that ended without a task_started of its own (a retry in place)."""
    previous = earlier[-1].end if earlier else None
    ran = _seconds(ctx.get("duration_s"))
    if ran is not None:
        ran += _seconds(ctx.get("validation_duration_s")) or 0.0
        start = end - timedelta(seconds=ran)
    else:
        start = previous or end
    if previous is not None and start < previous:
        start = previous
    start = min(start, end)
    # The agent that retried in place held the task through its backoff.
    held = previous if previous is not None and earlier[-1].agent == agent else start
    return _Attempt(task_id, agent, start, held)


def _close(a: _Attempt, end: datetime, outcome: str, ctx: dict, message: str | None) -> None:
    a.end, a.outcome = max(end, a.start), outcome
    a.exit_code = _int(ctx.get("exit_code"))
    if a.attempt is None:
        a.attempt = _int(ctx.get("attempt"))
    if outcome in ("failed", "released"):
        a.error = _text(ctx.get("error")) or message


# --------------------------------------------------------------------------- figures

def _occupancy(attempts: list[_Attempt]):
    """held(t): how many slots were held just before t (intervals (held_from, end])."""
    starts = sorted(a.held_from for a in attempts)
    ends = sorted(a.end for a in attempts)

    def held(t: datetime) -> int:
        return bisect.bisect_left(starts, t) - bisect.bisect_left(ends, t)

    return held


def _idle(attempts: list[_Attempt], capacity: int, lo: datetime, hi: datetime) -> float:
    """Agent-seconds of free capacity between lo and hi."""
    if hi <= lo:
        return 0.0
    points = sorted({lo, hi, *(a.held_from for a in attempts if lo < a.held_from < hi),
                     *(a.end for a in attempts if lo < a.end < hi)})
    total = 0.0
    for left, right in zip(points, points[1:]):
        held = sum(1 for a in attempts if a.held_from <= left and a.end >= right)
        total += max(0, capacity - held) * (right - left).total_seconds()
    return total


def _critical_path(spans: dict, wave_of: dict, depends_on: dict, held, slot_limit: int) -> list[tuple[str, str | None]]:
    """[(task_id, via)] from first to last; see the module docstring."""
    if not spans:
        return []
    order = {"dependency": 0, "barrier": 1, "slot": 2}
    last = max(spans, key=lambda t: (spans[t][1], wave_of[t]))  # ties: the first in plan order
    path = [(last, None)]
    seen = {last}
    by_end = sorted(spans, key=lambda t: spans[t][1], reverse=True)
    while True:
        cur = path[0][0]
        start = spans[cur][0]
        best = None  # (end, -rank, task, via)
        for tid in by_end:
            end = spans[tid][1]
            if end > start or tid in seen:
                continue
            if best is not None and end < best[0]:
                break  # sorted by end: nothing later can beat it
            if tid in depends_on.get(cur, ()):
                via = "dependency"
            elif wave_of[tid] < wave_of[cur]:
                via = "barrier"
            elif wave_of[tid] == wave_of[cur] and held(end) >= slot_limit:
                via = "slot"
            else:
                continue
            cand = (end, -order[via], tid, via)
            if best is None or cand[:2] > best[:2]:
                best = cand
        if best is None:
            return path
        path[0] = (cur, best[3])  # how cur followed its predecessor
        path.insert(0, (best[2], None))
        seen.add(best[2])


# --------------------------------------------------------------------------- the document

def build(db: Database, execution_id: str, by: str = "task") -> dict:
    """The timeline of one run (a full execution id) as plain data; ``by`` is task or agent.

    Keys (timestamps in ``*_at`` keys, the database's text, UTC; offsets and
    durations in seconds from ``started_at``): execution_id, task_list_id,
    task_list_name, run_number, status, by, generated_at (the database's now),
    started_at, ended_at, summary, waves, critical_path, rows, unreadable_events.
    Each row is a task (grouped by wave, in plan order) or an agent, with its
    ``segments``: one per attempt (task, task_id, wave_number, attempt, agent,
    outcome, started_at, ended_at, offset_s, duration_s, exit_code, error, critical).
    """
    if by not in GROUPINGS:
        raise UsageError(f"invalid grouping {by!r}: expected one of {', '.join(GROUPINGS)}")
    doc = build_both(db, execution_id)
    rows = {"task": doc.pop("task_rows"), "agent": doc.pop("agent_rows")}[by]
    return {**doc, "by": by, "rows": rows}


def build_both(db: Database, execution_id: str) -> dict:
    """``build``'s document with both groupings from one snapshot: ``task_rows`` and
    ``agent_rows`` instead of ``by`` and ``rows`` (the HTML report draws both)."""
    raw = _load(db, execution_id)
    run = raw["run"]
    now = parse_time(raw["now"])
    tasks = {t["task_id"]: t for t in raw["tasks"]}
    per_task, skipped_at, unreadable = _attempts(raw["events"], list(tasks), now)
    everything = [a for group in per_task.values() for a in group]

    active = run["status"] in states.RUN_ACTIVE
    start = min((a.start for a in everything), default=None)
    end = max((a.end for a in everything), default=None)
    if start is not None and active:
        end = max(end, now)
    wall = _s(end - start) if start is not None else 0.0
    capacity = int(run["max_parallel_agents"])
    agents_used = len({a.agent for a in everything if a.agent})
    held = _occupancy(everything)

    spans = {tid: (group[0].start, max(a.end for a in group)) for tid, group in per_task.items() if group}
    wave_of = {tid: t["wave_number"] for tid, t in tasks.items()}
    depends_on: dict[str, set] = {}
    for d in raw["deps"]:
        depends_on.setdefault(d["source_task_id"], set()).add(d["target_task_id"])
    path = _critical_path(spans, wave_of, depends_on, held, max(1, min(capacity, agents_used or capacity)))
    critical = {tid for tid, _ in path}

    def offset(stamp: datetime) -> float:
        return _s(stamp - start)

    def segment(a: _Attempt) -> dict:
        t = tasks[a.task_id]
        return {"task": t["display_id"], "task_id": a.task_id, "wave_number": t["wave_number"],
                "attempt": a.attempt, "agent": a.agent, "outcome": a.outcome,
                "started_at": format_time(a.start), "ended_at": format_time(a.end),
                "offset_s": offset(a.start), "duration_s": _s(a.end - a.start),
                "exit_code": a.exit_code, "error": a.error, "critical": a.task_id in critical}

    waves = []
    wave_numbers = [w["wave_number"] for w in raw["waves"]]
    barrier_total = 0.0
    for w in raw["waves"]:
        members = [tid for tid, t in tasks.items() if t["wave_number"] == w["wave_number"]]
        ran = [a for tid in members for a in per_task[tid]]
        later = [a for tid, t in tasks.items() if t["wave_number"] > w["wave_number"] for a in per_task[tid]]
        w_start = min((a.start for a in ran), default=None)
        w_end = max((a.end for a in ran), default=None)
        # The wave's last hand-out: its last task_started (a retry in place hands nothing out).
        handed_out = max((a.start for a in ran if a.held_from == a.start), default=None)
        idle = _idle(everything, capacity, handed_out, w_end) if handed_out and later else 0.0
        barrier_total += idle
        waves.append({
            "wave_number": w["wave_number"], "status": w["status"], "task_count": len(members),
            "started_at": format_time(w_start), "ended_at": format_time(w_end),
            "offset_s": offset(w_start) if w_start else None,
            "duration_s": _s(w_end - w_start) if w_start else None,
            "barrier_idle_s": round(idle, 3),
            "tasks": [tasks[tid]["display_id"] for tid in members],
            "skipped": [tasks[tid]["display_id"] for tid in members if tasks[tid]["status"] == "skipped"],
        })

    task_rows = []
    for tid, t in tasks.items():
        group = per_task[tid]
        task_rows.append({
            "task": t["display_id"], "task_id": tid, "title": t["title"], "wave_number": t["wave_number"],
            "status": t["status"], "critical": tid in critical, "attempts": len(group),
            "started_at": format_time(group[0].start) if group else None,
            "ended_at": format_time(spans[tid][1]) if group else None,
            "duration_s": _s(spans[tid][1] - spans[tid][0]) if group else None,
            "busy_s": round(sum(_s(a.end - a.start) for a in group), 3),
            "skipped_at": format_time(skipped_at.get(tid)),
            "segments": [segment(a) for a in group],
        })
    agent_rows = _agent_rows(raw["agents"], everything, segment)

    task_time = sum(((a.end - a.start).total_seconds() for a in everything), 0.0)
    retry_time = sum(((a.end - a.start).total_seconds() for a in everything if a.outcome not in ("completed", "running")),
                     0.0)
    path_rows = []
    previous_end = start
    for tid, via in path:
        s, e = spans[tid]
        path_rows.append({
            "task": tasks[tid]["display_id"], "task_id": tid, "title": tasks[tid]["title"],
            "wave_number": tasks[tid]["wave_number"], "via": via,
            "started_at": format_time(s), "ended_at": format_time(e), "duration_s": _s(e - s),
            "share": round((e - s).total_seconds() / wall, 4) if wall > 0 else None,
            "wait_s": _s(s - previous_end),
        })
        previous_end = e
    path_s = sum((p["duration_s"] for p in path_rows), 0.0)
    summary = {
        "wall_s": wall,
        "task_time_s": round(task_time, 3),
        "retry_time_s": round(retry_time, 3),
        "tasks": len(tasks),
        "tasks_run": len(spans),
        "attempts": len(everything),
        "retries": len(everything) - len(spans),
        "capacity": capacity,
        "agents_used": agents_used,
        "efficiency": round(task_time / (wall * capacity), 4) if wall > 0 else None,
        "barrier_idle_s": round(barrier_total, 3),
        "critical_path_s": round(path_s, 3),
        "critical_share": round(path_s / wall, 4) if wall > 0 else None,
        "waves": len(wave_numbers),
    }
    return {
        "execution_id": run["execution_id"], "task_list_id": run["task_list_id"],
        "task_list_name": run["task_list_name"], "run_number": run["run_number"], "status": run["status"],
        "generated_at": format_time(now), "started_at": format_time(start), "ended_at": format_time(end),
        "summary": summary, "waves": waves, "critical_path": path_rows,
        "task_rows": task_rows, "agent_rows": agent_rows,
        "unreadable_events": unreadable,
    }


def _agent_rows(agents: list[dict], attempts: list[_Attempt], segment) -> list[dict]:
    """One row per agent of the run (those that never ran an attempt too: idle capacity),
    in the order they first worked; attempts logged without an agent last."""
    by_agent: dict[str | None, list[_Attempt]] = {a["instance_id"]: [] for a in agents}
    for a in sorted(attempts, key=lambda a: (a.start, a.end)):
        by_agent.setdefault(a.agent, []).append(a)
    status = {a["instance_id"]: a["status"] for a in agents}
    rows = []
    for agent, group in by_agent.items():
        segments = [segment(a) for a in group]
        rows.append({
            "agent": agent, "status": status.get(agent), "attempts": len(group),
            "started_at": format_time(group[0].start) if group else None,
            "ended_at": format_time(max(a.end for a in group)) if group else None,
            "busy_s": round(sum(s["duration_s"] for s in segments), 3),
            "tasks": list(dict.fromkeys(s["task"] for s in segments)),
            "segments": segments,
        })
    rows.sort(key=lambda r: (r["agent"] is None, r["started_at"] is None, r["started_at"] or ""))
    return rows


__all__ = ["build", "build_both", "GROUPINGS", "OUTCOMES", "parse_time", "format_time", "context_of"]
