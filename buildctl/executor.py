"""`buildctl run exec`: drive a run on this machine with N worker processes.

The workers are real processes (`python -m buildctl.worker`), each a registered
agent; this module starts them, samples the database for the live view, and on
Ctrl-C cancels the run so that every worker stops its child and exits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from buildctl import jsonstrict, storage
from buildctl.storage import Database

@dataclass
class ExecResult:
    execution_id: str
    status: str
    worker_codes: list[int] = field(default_factory=list)
    worker_errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    snapshot: dict | None = None


def snapshot(db: Database, execution_id: str) -> dict:
    """What the live view shows: the wave summary and the tasks held right now."""
    from buildctl import runs

    summary = runs.wave_summary(db, execution_id)
    running = db.query(
        f"""
        SELECT t.display_id, t.title, a.status, a.instance_id, w.wave_number, a.assigned_at, b.last_heartbeat,
               (julianday({storage.NOW}) - julianday(a.assigned_at)) * 86400 AS elapsed_s,
               (julianday({storage.NOW}) - julianday(COALESCE(b.last_heartbeat, b.spawned_at))) * 86400 AS heartbeat_age_s
        FROM wave_task_assignments a
        JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
        JOIN tasks t ON t.id = a.task_id
        LEFT JOIN build_agent_instances b ON b.instance_id = a.instance_id
        WHERE w.execution_id = ? AND a.status IN ('assigned', 'running')
        ORDER BY a.assigned_at, a.id
        """,
        (execution_id,),
    )
    return {"summary": summary, "running": running}


def worker_command(location: str, execution_id: str, *, repo: str | None, checkpoints: bool,
                   config: dict | None) -> list[str]:
    cmd = [sys.executable, "-m", "buildctl.worker", execution_id, "--db", location]
    if repo:
        cmd += ["--repo", repo]
    if checkpoints:
        cmd.append("--checkpoints")
    if config:
        cmd += ["--config", jsonstrict.dumps(config, what="--config")]
    return cmd


def execute(location: str, execution_id: str, *, jobs: int, repo: str | None = None, checkpoints: bool = False,
            config: dict | None = None, on_tick: Callable[[dict], None] | None = None,
            tick_s: float = 0.25) -> ExecResult:
    """Start ``jobs`` workers and wait for them; on Ctrl-C cancel the run and wait again."""
    from buildctl import runs

    db = storage.connect(location)
    result = ExecResult(execution_id, "")
    logs = [tempfile.TemporaryFile() for _ in range(jobs)]
    procs: list[subprocess.Popen] = []
    try:
        cmd = worker_command(location, execution_id, repo=repo, checkpoints=checkpoints, config=config)
        for i in range(jobs):
            # Their own session: a Ctrl-C reaches only us, and we cancel the run cleanly.
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logs[i],
                                          start_new_session=True))
        try:
            while True:
                if on_tick is not None:
                    on_tick(snapshot(db, execution_id))
                if all(p.poll() is not None for p in procs):
                    break
                time.sleep(tick_s)
        except KeyboardInterrupt:
            result.interrupted = True
            try:
                runs.cancel(db, execution_id)
            except Exception:
                pass  # already ended: the workers are leaving anyway
            while any(p.poll() is None for p in procs):
                try:
                    if on_tick is not None:
                        on_tick(snapshot(db, execution_id))
                    time.sleep(tick_s)
                except KeyboardInterrupt:
                    for p in procs:  # a second Ctrl-C: stop the workers now (each stops its child)
                        if p.poll() is None:
                            p.terminate()
        result.status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (execution_id,))
        result.snapshot = snapshot(db, execution_id)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for i, p in enumerate(procs):
            result.worker_codes.append(p.returncode)
            logs[i].seek(0)
            text = logs[i].read().decode("utf-8", "replace").strip()
            if text:
                result.worker_errors.append(text)
            logs[i].close()
        db.close()
    return result
