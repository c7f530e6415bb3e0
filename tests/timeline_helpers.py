"""Hand-made runs for the timeline, report and metrics tests: waves, dependencies, agents and log
events at chosen seconds, seeded row by row (issue 13)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import seed
from buildctl import timeline

T0 = datetime(2026, 11, 27, 8, 0, 0)


def at(seconds: float) -> str:
    return timeline.format_time(T0 + timedelta(seconds=seconds))


class Run:
    """A run seeded row by row: waves of display ids, dependencies, and log events at chosen seconds."""

    def __init__(self, db, waves, deps=(), capacity=3, status="completed", agents=(), execution_id="ex_hand"):
        self.db, self.ex = db, execution_id
        conn = db.conn
        names = [t for wave in waves for t in wave]
        self.ids = seed.seed_list(conn, f"tl_{execution_id}", tasks=names, max_parallel=capacity)
        seed.seed_run(conn, execution_id, f"tl_{execution_id}", status=status)
        for n, wave in enumerate(waves, 1):
            seed.seed_wave(conn, execution_id, n, [self.ids[t] for t in wave], status="completed")
        if status != "running":
            conn.execute("UPDATE wave_task_assignments SET status = 'completed' WHERE wave_id IN "
                         "(SELECT wave_id FROM parallel_execution_waves WHERE execution_id = ?)", (execution_id,))
        for source, target in deps:
            conn.execute("INSERT INTO task_relationships (source_task_id, target_task_id) VALUES (?, ?)",
                         (self.ids[source], self.ids[target]))
        for agent in agents:
            seed.seed_agent(conn, agent, execution_id)

    def event(self, kind, task_, seconds, agent=None, message="", context=None, raw_context=None):
        self.db.execute(
            "INSERT INTO task_execution_log (execution_id, task_id, instance_id, timestamp, event_type, message, context) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.ex, self.ids[task_], agent, at(seconds), kind, message or f"{task_} {kind}",
             raw_context if raw_context is not None else (json.dumps(context) if context is not None else None)))

    def heartbeat(self, agent, seconds, memory_mb=None, cpu=None, status="running"):
        self.db.execute("INSERT INTO agent_heartbeats (instance_id, timestamp, status, memory_usage_mb, cpu_percent) "
                        "VALUES (?, ?, ?, ?, ?)", (agent, at(seconds), status, memory_mb, cpu))

    def attempt(self, task_, start, end, agent, outcome="completed", **ctx):
        self.event("task_started", task_, start, agent, context={"attempt": ctx.get("attempt", 1)})
        self.event("task_completed" if outcome == "completed" else "task_failed", task_, end, agent, context=ctx)

    def build(self, by="task"):
        return timeline.build(self.db, self.ex, by=by)
