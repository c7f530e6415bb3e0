"""Helpers shared by the task-list, run and assignment tests (issue 3)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EXAMPLES

FIVE_TASKS = EXAMPLES / "five-tasks.toml"


def write_list(path: Path, tasks: list[dict], *, name: str = "test-list", max_parallel_agents: int = 3,
               **extra) -> Path:
    """A JSON task-list file."""
    path.write_text(json.dumps({"name": name, "max_parallel_agents": max_parallel_agents, **extra, "tasks": tasks}))
    return path


def task(tid: str, deps=(), files=(), **kw) -> dict:
    return {"id": tid, "title": f"task {tid}", "command": "true", "depends_on": list(deps), "files": list(files), **kw}


def waves_of(db, execution_id: str) -> list[list[str]]:
    rows = db.query(
        "SELECT w.wave_number, t.display_id FROM wave_task_assignments a "
        "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id JOIN tasks t ON t.id = a.task_id "
        "WHERE w.execution_id = ? ORDER BY w.wave_number, t.position", (execution_id,))
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r["wave_number"], []).append(r["display_id"])
    return [out[k] for k in sorted(out)]


def add_agent(db, execution_id: str, instance_id: str, status: str = "initializing") -> str:
    with db.write():
        db.execute(
            "INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, config) "
            "VALUES (?, ?, 0, ?, '{\"maxRetries\": 3}')", (instance_id, execution_id, status))
    return instance_id


def assignment_of(db, execution_id: str, display_id: str) -> dict:
    return db.one(
        "SELECT a.* FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
        "JOIN tasks t ON t.id = a.task_id WHERE w.execution_id = ? AND t.display_id = ?", (execution_id, display_id))
