"""A build farm on PostgreSQL (issue 12, SPEC §9): workers that survive a dropped
connection, several hosts on one run (two clones, a clock five minutes ahead in another
time zone), max_parallel_agents under 64 claimers, the lease across hosts.

Real server, real `buildctl` processes, real shell tasks that count their side effects in
files. PostgreSQL only: every test skips without BUILDCTL_TEST_PG_DSN.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import seed
from conftest import buildctl_executable
from runhelpers import task, write_list
from test_reliability import assert_invariants, wait_for

pytestmark = pytest.mark.postgres

FAST = {"heartbeatIntervalMs": 200, "retryBackoffMs": [50]}


def _env(location: str, **extra: str) -> dict:
    env = {**os.environ, "BUILDCTL_DB": location, "NO_COLOR": "1", **extra}
    env.pop("BUILDCTL_DEBUG", None)
    return env


def buildctl(location: str, *args, check: bool = True, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    p = subprocess.run(buildctl_executable() + [str(a) for a in args], capture_output=True, text=True,
                       env=popen.pop("env", None) or _env(location), timeout=timeout, **popen)
    if check:
        assert p.returncode == 0, f"buildctl {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}"
    return p


def counted(marks: Path, name: str, command: str = "true") -> str:
    """``command`` between two side effects: a line in started/NAME before, finished/NAME after."""
    return f"echo x >> {marks}/started/{name}; {command}; echo x >> {marks}/finished/{name}"


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def assert_each_ran_once(marks: Path, names) -> None:
    runs = {n: (lines(marks / "started" / n), lines(marks / "finished" / n)) for n in names}
    assert {n: c for n, c in runs.items() if c != (1, 1)} == {}, "tasks whose command did not run exactly once"


def make_marks(tmp_path: Path) -> Path:
    marks = tmp_path / "marks"
    for sub in ("started", "finished"):
        (marks / sub).mkdir(parents=True)
    return marks


class Terminator:
    """Terminates every buildctl connection to one database (application_name 'buildctl'),
    again and again, from a thread, until stopped: a server that keeps dropping them."""

    def __init__(self, location: str, every_s: float):
        import psycopg

        self.conn = psycopg.connect(location, autocommit=True, application_name="terminator")
        self.every_s = every_s
        self.killed = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            n = self.conn.execute("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND application_name = 'buildctl'").fetchone()[0]
            self.killed += n
            self.rounds += n > 0

    def __enter__(self) -> "Terminator":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def _recount_ok(location: str, execution_id: str) -> dict:
    from buildctl import assignments, storage

    with storage.connect(location) as db:
        rc = assignments.recount(db, execution_id)
    assert rc["ok"], rc
    return rc["stored"]["run"]


def _started_per_task(location: str, execution_id: str) -> dict[str, int]:
    return dict(seed.query(location, "SELECT t.display_id, COUNT(*) FROM task_execution_log l JOIN tasks t ON t.id = l.task_id "
                                     "WHERE l.execution_id = ? AND l.event_type = 'task_started' GROUP BY t.display_id",
                           (execution_id,)))


# --------------------------------------------------------------------------- connection loss (item 5)

@pytest.mark.slow
def test_run_exec_survives_every_connection_being_terminated_again_and_again(pg_location, tmp_path):
    """`run exec` and its `agent work` workers lose every connection (heartbeat threads
    included) every 0.3 s while 60 short tasks in three waves run: each reconnects and finds
    out what its lost statement did; the run completes, every command ran exactly once."""
    marks = make_marks(tmp_path)
    names = [f"T-{i:03d}" for i in range(1, 61)]
    tasks = [task(n, deps=[names[i - 20]] if i >= 20 else [], command=counted(marks, n, "sleep 0.1"))
             for i, n in enumerate(names)]
    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", tasks, max_parallel_agents=4)).stdout.strip()
    with Terminator(pg_location, every_s=0.3) as terminator:
        r = buildctl(pg_location, "run", "exec", ex, "--jobs", "4", "--config", json.dumps(FAST), check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    assert terminator.rounds >= 5, f"only {terminator.rounds} rounds found connections to terminate"
    assert_each_ran_once(marks, names)
    assert _started_per_task(pg_location, ex) == {n: 1 for n in names}
    assert _recount_ok(pg_location, ex) == {"total_tasks": 60, "completed_tasks": 60, "failed_tasks": 0,
                                            "skipped_tasks": 0}
    assert seed.scalar(pg_location, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "completed"
    assert_invariants(pg_location)


@pytest.mark.slow
def test_agent_spawn_with_a_command_survives_its_connections_being_terminated(pg_location, tmp_path):
    """`agent spawn --next -- CMD`: its connections die while CMD runs (the heartbeat
    thread's) and when it reports; CMD runs once, its exit code passes through, the task
    is completed and the agent ended."""
    marks = make_marks(tmp_path)
    names = ["T-001", "T-002"]
    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", [task(n) for n in names])).stdout.strip()
    cfg = json.dumps({"heartbeatIntervalMs": 100})
    with Terminator(pg_location, every_s=0.2) as terminator:
        for n in names:
            buildctl(pg_location, "agent", "spawn", ex, "--task", n, "--config", cfg, "--",
                     "sh", "-c", counted(marks, n, "sleep 1.5"))
    assert terminator.rounds >= 5, f"only {terminator.rounds} rounds found connections to terminate"
    assert_each_ran_once(marks, names)
    statuses = seed.query(pg_location, "SELECT status FROM build_agent_instances")
    assert statuses == [("completed",), ("completed",)]
    assert _recount_ok(pg_location, ex)["completed_tasks"] == 2
    assert_invariants(pg_location)


class LoseCommit:
    """Fault injection: the next COMMIT of ``db`` is lost with its connection, after it took
    effect (``committed``) or before (the server then rolls the transaction back)."""

    def __init__(self, db, *, committed: bool):
        self.db, self.committed, self.fired = db, committed, 0
        self._real = db._simple
        db._simple = self._simple

    def _simple(self, text: str) -> None:
        from buildctl.errors import ConnectionLost

        if text != "COMMIT" or self.fired:
            return self._real(text)
        self.fired += 1
        if self.committed:
            self._real(text)
        self.db.conn.close()
        raise ConnectionLost("injected: the connection was lost with the COMMIT's reply")


@pytest.fixture
def worker(pg_location, tmp_path):
    """A worker (in this process) registered in a run of two tasks, nothing claimed yet."""
    from buildctl import agents, worker as worker_module

    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", [task("T-001"), task("T-002")])).stdout.strip()
    w = worker_module.Worker(pg_location, worker_module.Options(ex))
    w.instance_id = agents.spawn(w.db, ex)
    yield w
    w.db.close()


@pytest.mark.parametrize("committed", [True, False], ids=["took-effect", "rolled-back"])
def test_a_claim_and_a_completion_whose_connection_was_lost_happen_exactly_once(worker, pg_location, committed):
    from buildctl import assignments

    def claim():
        return assignments.claim_next(worker.db, worker.execution_id, worker.instance_id, start=True)

    with_loss = LoseCommit(worker.db, committed=committed)
    got = worker._db(claim, settled=worker._claim_settled)
    assert with_loss.fired == 1 and worker.db.reconnects == 1
    assert got["display_id"] == "T-001" and got["instance_id"] == worker.instance_id and got["attempt"] == 1
    LoseCommit(worker.db, committed=committed)
    worker._complete(got["assignment_id"], {"exit_code": 0})
    events = seed.query(pg_location, "SELECT l.event_type, t.display_id FROM task_execution_log l JOIN tasks t "
                                     "ON t.id = l.task_id WHERE l.event_type LIKE 'task_%' ORDER BY l.id")
    assert events == [("task_started", "T-001"), ("task_completed", "T-001")]  # once each
    assert _recount_ok(pg_location, worker.execution_id)["completed_tasks"] == 1


# --------------------------------------------------------------------------- several hosts (item 6)

@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_checkpoint_of_another_host_is_restored_only_from_a_commit_present_here(pg_location, tmp_path):
    """Each host has its own clone. A checkpoint records its host (BUILDCTL_HOST stands in for
    a second machine's name); restoring it on another host is refused with one line (exit 5,
    nothing changed) until its commit is fetched into that host's clone."""
    from checkpoint_helpers import git, git_env, init_repo, tree_state, write
    from conftest import EXAMPLES, assert_refused, snapshot

    genv = git_env(tmp_path / "home")
    origin = init_repo(tmp_path / "origin", genv, files={"a.txt": "one\n", "b.txt": "two\n"})
    clones = {}
    for host in ("host-a", "host-b"):
        clones[host] = tmp_path / host
        git(tmp_path, "clone", "-q", str(origin), str(clones[host]), env=genv)

    def on(host: str, *args, check: bool = True):
        return buildctl(pg_location, *args, check=check, env=_env(pg_location, **genv, BUILDCTL_HOST=host))

    ex = on("host-a", "run", "start", EXAMPLES / "five-tasks.toml").stdout.strip()
    write(clones["host-a"], "a.txt", "changed on host-a\n")
    cp = on("host-a", "checkpoint", "create", ex, "--task", "T-001", "--repo", clones["host-a"]).stdout.strip()
    meta = json.loads(seed.scalar(pg_location, "SELECT metadata FROM checkpoints WHERE id = ?", (cp,)))
    assert meta["created_by"]["host"] == "host-a"

    before, tree_b = snapshot(pg_location), tree_state(clones["host-b"])
    refused = on("host-b", "checkpoint", "restore", cp, "--repo", clones["host-b"], check=False)
    assert_refused(refused, code=5, contains=f"checkpoint {cp} was made on host host-a, not on host-b")
    assert "is not in" in refused.stderr and "nothing was changed" in refused.stderr
    assert snapshot(pg_location) == before and tree_state(clones["host-b"]) == tree_b

    # Its commit fetched into host-b's clone (no ref of its own there): now it restores.
    git(clones["host-b"], "fetch", "-q", str(clones["host-a"]), f"refs/buildctl/checkpoints/{cp}", env=genv)
    on("host-b", "checkpoint", "restore", cp, "--repo", clones["host-b"])
    assert (clones["host-b"] / "a.txt").read_text() == "changed on host-a\n"
    # On its own host, as before.
    write(clones["host-a"], "a.txt", "later\n")
    on("host-a", "checkpoint", "restore", cp, "--repo", clones["host-a"])
    assert (clones["host-a"] / "a.txt").read_text() == "changed on host-a\n"
