"""Raw-SQL fixture data for tests that need runs, waves, agents or log rows without
going through the commands that create them (those commands have their own tests)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def seed_list(conn, list_id="tl_seed", tasks=("T-001", "T-002", "T-003"), max_parallel=3) -> dict[str, str]:
    """A task list with the given display ids; returns display id -> task id."""
    conn.execute("INSERT INTO task_lists_v2 (id, name, status, max_parallel_agents) VALUES (?, ?, 'ready', ?)",
                 (list_id, f"list {list_id}", max_parallel))
    ids = {}
    for pos, display in enumerate(tasks):
        tid = f"tk_{list_id}_{display}"
        conn.execute("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) VALUES (?, ?, ?, ?, ?, ?)",
                     (tid, display, list_id, f"task {display}", "true", pos))
        ids[display] = tid
    return ids


def seed_run(conn, execution_id="ex_seed", list_id="tl_seed", status="running", run_number=1,
             completed_at=None) -> str:
    conn.execute(
        "INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, started_at, completed_at, triggered_by) "
        "VALUES (?, ?, ?, ?, datetime('now'), ?, 'user')",
        (execution_id, list_id, run_number, status, completed_at),
    )
    return execution_id


def seed_wave(conn, execution_id="ex_seed", wave_number=1, task_ids=(), status="pending") -> str:
    wave_id = f"wv_{execution_id}_{wave_number}"
    conn.execute("INSERT INTO parallel_execution_waves (wave_id, execution_id, wave_number, status, task_count) VALUES (?, ?, ?, ?, ?)",
                 (wave_id, execution_id, wave_number, status, len(task_ids)))
    for tid in task_ids:
        conn.execute("INSERT INTO wave_task_assignments (wave_id, task_id, status) VALUES (?, ?, 'pending')", (wave_id, tid))
    conn.execute("UPDATE task_list_execution_runs SET total_tasks = total_tasks + ? WHERE execution_id = ?",
                 (len(task_ids), execution_id))
    return wave_id


def seed_agent(conn, instance_id="ag_seed", execution_id="ex_seed", status="running", wave_number=1,
               spawned_ago_s=0, heartbeat_ago_s=None) -> str:
    conn.execute(
        "INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, spawned_at, last_heartbeat, config) "
        "VALUES (?, ?, ?, ?, datetime('now', ?), CASE WHEN ? IS NULL THEN NULL ELSE datetime('now', ?) END, ?)",
        (instance_id, execution_id, wave_number, status, f"-{spawned_ago_s} seconds", heartbeat_ago_s,
         f"-{heartbeat_ago_s} seconds", '{"maxRetries": 3}'),
    )
    return instance_id
