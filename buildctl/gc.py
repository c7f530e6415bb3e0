"""`buildctl gc`: cleanup that cron can run on a busy database.

Each step deletes in bounded batches, one short BEGIN IMMEDIATE transaction per
batch, so an agent writing a heartbeat meanwhile waits at most one batch. A step
that fails is reported and the others still run. Nothing of a pending, running or
paused run is deleted.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from buildctl.storage import Database, query_text

#: Rows per delete transaction. Chosen by benchmarks/bench_gc.py: at 2,000 rows a
#: batch takes a few milliseconds to tens of milliseconds, far below the 250 ms p99
#: budget of a concurrent heartbeat writer, while the per-transaction overhead
#: stays small beside the work (see benchmarks/RESULTS.md).
DEFAULT_BATCH_SIZE = 2000


@dataclass
class Step:
    name: str
    count: int = 0
    ok: bool = True
    error: str | None = None
    details: list[str] = field(default_factory=list)


@dataclass
class Report:
    dry_run: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "ok": self.ok,
                "steps": [{"step": s.name, "count": s.count, "ok": s.ok, "error": s.error, "details": s.details}
                          for s in self.steps]}


class GcBusy(Exception):
    """Another gc holds the lock."""


@contextmanager
def gc_lock(db: Database) -> Iterator[None]:
    """An exclusive lock that dies with its process (flock), never a row left behind."""
    import fcntl

    path = Path(db.location + ".gc.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise GcBusy(holder or "unknown") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _cutoff(db: Database, seconds: float) -> str:
    """An absolute cut-off from the database clock, fixed for the whole gc."""
    return db.scalar("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now', ?)", (f"-{seconds:.3f} seconds",))


def _delete_in_batches(db: Database, query: str, params: dict, batch_size: int) -> int:
    sql = query_text(query)
    total = 0
    while True:
        with db.write():
            n = db.execute(sql, {**params, "batch_size": batch_size}).rowcount
        total += n
        if n < batch_size:
            return total


def _run_step(report: Report, name: str, fn) -> None:
    step = Step(name)
    try:
        fn(step)
    except Exception as exc:  # a failed step is reported; the others still run
        step.ok = False
        step.error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    report.steps.append(step)


def collect(db: Database, *, keep_heartbeats_s: float = 86400, stale_after_s: float = 60,
            keep_logs_s: float = 30 * 86400, keep_checkpoints_s: float = 7 * 86400,
            repo: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False) -> Report:
    """Run every gc step (or, with ``dry_run``, count what each would do)."""
    report = Report(dry_run=dry_run)
    if not dry_run:
        # A database that cannot be written (a read-only file) fails here with one
        # error line and exit 7, instead of one failed step after another.
        db.check_writable()
    hb_cutoff = _cutoff(db, keep_heartbeats_s)
    log_cutoff = _cutoff(db, keep_logs_s)
    cp_cutoff = _cutoff(db, keep_checkpoints_s)

    def heartbeats(step: Step) -> None:
        if dry_run:
            step.count = db.scalar(query_text("gc_count_heartbeats"), {"cutoff": hb_cutoff})
        else:
            step.count = _delete_in_batches(db, "gc_delete_heartbeats", {"cutoff": hb_cutoff}, batch_size)

    def stale_agents(step: Step) -> None:
        from buildctl import agents

        if dry_run:
            rows = agents.stale(db, stale_after_s)
        else:
            rows = agents.mark_stale(db, stale_after_s)
        step.count = len(rows)
        step.details = [r["instance_id"] for r in rows]

    def logs(step: Step) -> None:
        if dry_run:
            step.count = db.scalar(query_text("gc_count_logs"), {"cutoff": log_cutoff})
        else:
            step.count = _delete_in_batches(db, "gc_delete_logs", {"cutoff": log_cutoff}, batch_size)

    def checkpoints(step: Step) -> None:
        step.count, step.details, unreachable = _checkpoints(db, cp_cutoff, repo, batch_size, dry_run)
        if unreachable:
            step.details.extend(f"could not reach {r}" for r in unreachable)

    def optimize(step: Step) -> None:
        if dry_run:
            return
        db.execute("PRAGMA optimize")
        busy, log_frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        step.count = done if done >= 0 else 0
        step.details = [f"wal frames {log_frames}, checkpointed {done}" + (" (busy)" if busy else "")]

    _run_step(report, "heartbeats", heartbeats)
    _run_step(report, "stale_agents", stale_agents)
    _run_step(report, "logs", logs)
    _run_step(report, "checkpoints", checkpoints)
    _run_step(report, "optimize", optimize)
    return report


def _checkpoints(db: Database, cutoff: str, repo: str | None, batch_size: int, dry_run: bool):
    """Delete expired checkpoints (refs first, then rows) a batch at a time; returns
    (count, refs deleted, refs that could not be reached)."""
    if dry_run:
        return db.scalar(query_text("gc_count_checkpoints"), {"cutoff": cutoff}), [], []
    from buildctl import checkpoints as cp
    from buildctl.gitrepo import checkpoint_ref

    sql = query_text("gc_expired_checkpoints")
    deleted_refs: list[str] = []
    unreachable: list[str] = []
    count = 0
    while True:
        ids = [r["id"] for r in db.query(sql, {"cutoff": cutoff, "batch_size": batch_size})]
        if not ids:
            break
        result = cp.delete_checkpoints(db, ids, repo)
        deleted_refs += result["deleted_refs"]
        unreachable += [f"{checkpoint_ref(e['id'])} ({e['error']}; pass --repo)" for e in result["ref_errors"]]
        count += result["rows"]
        if len(ids) < batch_size:
            break
    return count, deleted_refs, unreachable
