"""`buildctl gc`: cleanup that cron can run on a busy database.

Heartbeats older than the cut-off go whatever their run's status (an agent's
``last_heartbeat`` column keeps what staleness needs). The log and the checkpoints of a
pending, running or paused run are never touched.

Each step deletes in bounded batches of constant cost — every batch reaches its rows
through an index and never re-reads the rows it keeps — one short BEGIN IMMEDIATE
transaction per batch, with a pause between batches so that a writer waiting for the
lock gets it (see ``_let_writers_in``). A step that fails is reported and the others
still run.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from buildctl.durations import offset
from buildctl.storage import Database, query_text

#: Rows per delete transaction. Chosen by benchmarks/bench_gc.py: on 5 M heartbeats a
#: batch of 10,000 holds the write lock about 20 ms (p99 25 ms; up to 75 ms on a 2-core
#: machine at load 5); with the pause below, a concurrent heartbeat writer waits at most
#: about one batch (see benchmarks/RESULTS.md).
DEFAULT_BATCH_SIZE = 10000

#: The pause after each batch: half the time the batch held the lock, within these
#: bounds. SQLite queues nobody: a writer that finds the lock taken sleeps and retries
#: (its busy handler sleeps at most 25 ms until it has waited 128 ms, 50 ms until
#: 228 ms, then 100 ms). A gc that takes the lock again at once after each commit
#: leaves it microseconds to succeed in, and starved it for seconds whatever the batch
#: size; a pause at least as long as the sleep of a writer that waited the batch out
#: lets it in on its first retry after the batch.
MIN_PAUSE_S = 0.025
MAX_PAUSE_S = 0.100


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
def gc_lock(db: Database, *, dry_run: bool = False) -> Iterator[None]:
    """One gc at a time (GcBusy names the holder). SQLite: an flock beside the file, held for
    the whole gc. PostgreSQL: nothing here — every batch takes the transaction-scoped
    advisory lock ``gc`` (``db.try_lock``), so it works behind PgBouncer in transaction
    mode, and a gc that finds it taken stops (GcBusy). A dry run changes nothing, so it
    takes no lock and leaves nothing on disk."""
    if dry_run or db.sql.name != "sqlite":
        yield
        return
    with _file_lock(db.location + ".gc.lock"):
        yield


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """An exclusive flock beside the SQLite file: it dies with its process, never a row left behind."""
    import fcntl

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


def _let_writers_in(db: Database, held_s: float) -> None:
    """Between two batches: checkpoint what the batch wrote, then, where writers poll for
    the lock (SQLite), keep it free for a while: half the time the batch held it."""
    released = time.monotonic()
    db.checkpoint()
    if db.sql.writers_poll:
        pause = min(MAX_PAUSE_S, max(MIN_PAUSE_S, held_s / 2))
        time.sleep(max(0.0, released + pause - time.monotonic()))


def _delete_in_batches(db: Database, query: str, params: dict, batch_size: int) -> int:
    sql = query_text(query, db.sql)
    total = 0
    while True:
        with db.write():
            if not db.try_lock("gc"):
                raise GcBusy("another gc (it holds the advisory lock)")
            taken = time.monotonic()
            n = db.execute(sql, {**params, "batch_size": batch_size}).rowcount
        total += n
        if n < batch_size:
            return total
        _let_writers_in(db, time.monotonic() - taken)


def _run_step(report: Report, name: str, fn) -> None:
    step = Step(name)
    try:
        fn(step)
    except GcBusy:
        raise  # not this step's failure: the whole gc stops, another one is at work
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

    def heartbeats(step: Step) -> None:
        params = {"cutoff_offset": offset(keep_heartbeats_s)}
        if dry_run:
            step.count = db.scalar(query_text("gc_count_heartbeats", db.sql), params)
        else:
            step.count = _delete_in_batches(db, "gc_delete_heartbeats", params, batch_size)

    def stale_agents(step: Step) -> None:
        from buildctl import agents

        if dry_run:
            rows = agents.stale(db, stale_after_s)
        else:
            rows = agents.mark_stale(db, stale_after_s)
        step.count = len(rows)
        step.details = [r["instance_id"] for r in rows]

    def logs(step: Step) -> None:
        params = {"cutoff_offset": offset(keep_logs_s)}
        if dry_run:
            step.count = db.scalar(query_text("gc_count_logs", db.sql), params)
            return
        # Run by run, so that each batch is an index range of one run's log.
        for run in db.query(query_text("gc_expired_log_runs", db.sql), params):
            step.count += _delete_in_batches(db, "gc_delete_logs", {"execution_id": run["execution_id"]}, batch_size)

    def checkpoints(step: Step) -> None:
        step.count, step.details, unreachable = _checkpoints(db, offset(keep_checkpoints_s), repo, batch_size, dry_run)
        if unreachable:
            step.ok = False
            step.error = (f"{len(unreachable)} checkpoint ref(s) could not be deleted (their rows were); if their "
                          "repository still exists, delete them there with `git update-ref -d REF`")
            step.details.extend(unreachable)

    def optimize(step: Step) -> None:
        if not dry_run:
            step.details = db.optimize(("agent_heartbeats", "task_execution_log", "checkpoints"))

    _run_step(report, "heartbeats", heartbeats)
    _run_step(report, "stale_agents", stale_agents)
    _run_step(report, "logs", logs)
    _run_step(report, "checkpoints", checkpoints)
    _run_step(report, "optimize", optimize)
    return report


def _checkpoints(db: Database, cutoff_offset: str, repo: str | None, batch_size: int, dry_run: bool):
    """Delete expired checkpoints (refs first, then rows) a batch at a time; returns
    (count, refs deleted, refs that could not be deleted, each with its reason)."""
    params = {"cutoff_offset": cutoff_offset}
    if dry_run:
        return db.scalar(query_text("gc_count_checkpoints", db.sql), params), [], []
    from buildctl import checkpoints as cp
    from buildctl.gitrepo import checkpoint_ref

    sql = query_text("gc_expired_checkpoints", db.sql)
    deleted_refs: list[str] = []
    unreachable: list[str] = []
    count = 0
    while True:
        ids = [r["id"] for r in db.query(sql, {**params, "batch_size": batch_size})]
        if not ids:
            break
        result = cp.delete_checkpoints(db, ids, repo)
        deleted_refs += result["deleted_refs"]
        unreachable += [f"could not delete {checkpoint_ref(e['id'])}: {e['error']}" for e in result["ref_errors"]]
        count += result["rows"]
        if len(ids) < batch_size:
            break
    return count, deleted_refs, unreachable
