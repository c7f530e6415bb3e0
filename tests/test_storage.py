"""SQLite storage under a run's workers: the writers' queue rings after each commit, and the
WAL starts over instead of growing for the whole run.

Real files, real connections; the run is a real `run exec`'s worth of worker processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from buildctl import storage
from runhelpers import task, write_list

pytestmark = pytest.mark.sqlite_only(reason="the WAL, its checkpoints and the writers' queue file are SQLite's")


def _queued(path) -> storage.Database:
    db = storage.connect(str(path))
    db.queue_writes()
    return db


def _insert_log(db: storage.Database, execution_id: str, n: int = 1) -> None:
    from buildctl import execlog

    with db.write():
        for i in range(n):
            execlog.append(db, execution_id, "info", f"note {i}")


@pytest.fixture
def run_id(cli, migrated, tmp_path) -> str:
    return cli("run", "start", str(write_list(tmp_path / "list.json", [task("T-001")])), check=True).out


def test_a_queued_commit_is_heard_at_once_and_only_after_forget(migrated, run_id):
    writer, listener = _queued(migrated), _queued(migrated)
    try:
        listener.forget_commits()
        assert listener.wait_for_commit(0.01) is False  # nothing committed yet
        _insert_log(writer, run_id)
        # Already rung: heard without waiting out the (long) timeout.
        assert listener.wait_for_commit(30) is True
        assert listener.wait_for_commit(0.01) is False  # heard once
        _insert_log(writer, run_id)
        listener.forget_commits()  # a commit before forget_commits is not heard after it
        assert listener.wait_for_commit(0.01) is False
    finally:
        writer.close()
        listener.close()


def test_a_writer_that_does_not_queue_rings_no_bell(migrated, run_id):
    plain, listener = storage.connect(str(migrated)), _queued(migrated)
    try:
        listener.forget_commits()
        _insert_log(plain, run_id)
        assert listener.wait_for_commit(0.05) is False  # heard only through the timer, as before
        assert listener.data_version() is not None
    finally:
        plain.close()
        listener.close()


def test_a_connection_that_does_not_queue_waits_out_its_timeout(migrated):
    db = storage.connect(str(migrated))
    try:
        db.forget_commits()
        assert db.wait_for_commit(0.01) is False
    finally:
        db.close()


def test_the_wal_starts_over_during_a_run_instead_of_growing_with_it(cli, migrated, tmp_path):
    """1,000 no-op tasks, four workers: each task's commits append ~20 pages to the WAL.
    Copied but never started over (the WAL restarts only when a write begins with every
    frame copied, which a steady stream of commits never allows by itself), it held every
    page the run wrote: ~75 MB here. The paced checkpoints and their catch-up keep it under
    ~10 MB, however long the run."""
    from buildctl import executor

    tasks = [task(f"T-{i:04d}", command="true") for i in range(1, 1001)]
    ex = cli("run", "start", str(write_list(tmp_path / "big.json", tasks, max_parallel_agents=4)), check=True).out
    wal = f"{migrated}-wal"
    largest, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                largest[0] = max(largest[0], os.path.getsize(wal))
            except OSError:
                pass
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = executor.execute(str(migrated), ex, jobs=4, repo=str(tmp_path))
    finally:
        done.set()
        watcher.join()
    assert result.status == "completed", result.worker_errors
    conn = sqlite3.connect(migrated)
    try:
        pages = conn.execute("PRAGMA page_size").fetchone()[0]
        written = conn.execute("SELECT count(*) FROM task_execution_log WHERE execution_id = ?", (ex,)).fetchone()[0]
    finally:
        conn.close()
    assert written >= 2000  # every task started and completed
    assert 0 < largest[0] < 6_000 * (pages + 24), f"the WAL grew to {largest[0] / 1e6:.1f} MB"


def test_a_queued_connection_checks_it_can_write_in_its_turn(migrated):
    """A worker's first write-lock taking (check_writable) waits in the writers' queue like
    its claims, instead of polling for the lock beside them (SQLite's busy handler slept up
    to 80 ms while eight workers claimed)."""
    import fcntl

    db = _queued(migrated)
    holder = os.open(f"{migrated}.writers.lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another writer's turn
        checked = threading.Event()
        t = threading.Thread(target=lambda: (db.check_writable(), checked.set()))
        t.start()
        assert not checked.wait(0.3)  # waits for the turn
        fcntl.flock(holder, fcntl.LOCK_UN)
        t.join(10)
        assert checked.is_set()
    finally:
        os.close(holder)
        db.close()
