"""A build farm on PostgreSQL (issue 12): workers that survive a dropped
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
    """``command`` between two side effects: a line in started/NAME before, finished/NAME
    after, each naming the host (BUILDCTL_HOST) and its clock (seconds since the epoch)."""
    stamp = '"${BUILDCTL_HOST:-?} $(date +%s)"'
    return f"echo {stamp} >> {marks}/started/{name}; {command}; echo {stamp} >> {marks}/finished/{name}"


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


@pytest.mark.parametrize("committed", [True, False], ids=["took-effect", "rolled-back"])
def test_a_completion_that_claims_the_next_task_survives_a_lost_reply_exactly_once(worker, pg_location, committed):
    """A worker completes its task and claims the next in one transaction; when that
    transaction's reply is lost, the task it holds afterwards is its claim, and neither
    the completion nor the claim happens twice."""
    from buildctl import assignments

    first = assignments.claim_next(worker.db, worker.execution_id, worker.instance_id, start=True)
    with_loss = LoseCommit(worker.db, committed=committed)
    nxt = worker._complete_and_claim(first["assignment_id"], {"exit_code": 0})
    assert with_loss.fired == 1 and worker.db.reconnects == 1
    assert nxt["display_id"] == "T-002" and nxt["instance_id"] == worker.instance_id and nxt["attempt"] == 1
    events = seed.query(pg_location, "SELECT l.event_type, t.display_id FROM task_execution_log l JOIN tasks t "
                                     "ON t.id = l.task_id WHERE l.event_type LIKE 'task_%' ORDER BY l.id")
    assert events == [("task_started", "T-001"), ("task_completed", "T-001"), ("task_started", "T-002")]
    held = seed.query(pg_location, "SELECT t.display_id, a.status FROM wave_task_assignments a JOIN tasks t "
                                   "ON t.id = a.task_id ORDER BY t.display_id")
    assert held == [("T-001", "completed"), ("T-002", "running")]
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


# --------------------------------------------------------------------------- acceptance: two hosts, one run

#: libfaketime 0.9.10 (Debian 12) returns EINVAL from Python 3.11's time.sleep when the
#: monotonic clock is not faked (wolfcw/libfaketime#426), and hangs threads' timed waits when
#: it is (#390). A host whose wall clock is wrong still has a true monotonic clock, so the
#: faked host's Python processes keep it and sleep with select() instead (same semantics).
SLEEP_SHIM = "import select, time\ntime.sleep = lambda seconds: select.select([], [], [], seconds)\n"


def faked_host(tmp_path: Path, ahead: str) -> tuple[list[str], dict]:
    """The command prefix and environment of a host whose clock is ``ahead`` (faketime's
    -f offset) in Tokyo's time zone; skips when Debian's faketime is not installed."""
    if shutil.which("faketime") is None:
        pytest.skip("Debian's faketime is not installed (apt-get install faketime): it simulates a host whose clock is off")
    shim = tmp_path / "faketime-shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
    return ["faketime", "-f", ahead], {"TZ": "Asia/Tokyo", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": str(shim)}


def two_hundred_tasks(marks: Path) -> list[dict]:
    """200 tasks: chains 40 apart, a file every 17th task updates and files CREATEd by every
    9th (conflicts that push tasks into later waves): 12 waves of 37 tasks down to 1."""
    names = [f"T-{i:03d}" for i in range(1, 201)]
    tasks = []
    for i, n in enumerate(names):
        files = []
        if i % 17 == 0:
            files.append({"path": "shared/registry.txt", "op": "UPDATE", "confidence": 0.9})
        if i % 9 == 0:
            files.append({"path": f"src/mod{i % 4}.py", "op": "CREATE", "confidence": 0.8})
        tasks.append(task(n, deps=[names[i - 40]] if i >= 40 else [], files=files, command=counted(marks, n)))
    return tasks


def utc_epoch(stamp: str) -> float:
    from datetime import datetime, timezone

    return datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_two_hosts_one_200_task_run_one_clock_five_minutes_ahead_in_tokyo(pg_location, tmp_path):
    """Two hosts (two clones of one repository, two `run exec --jobs 4`), host-b's clock five
    minutes ahead in Asia/Tokyo: every command runs once, the barrier holds by the log's
    server timestamps, nobody is judged stale, the run completes."""
    from checkpoint_helpers import git, git_env, init_repo

    prefix, skewed = faked_host(tmp_path, "+5m")
    genv = git_env(tmp_path / "home")
    origin = init_repo(tmp_path / "origin", genv, files={"README": "farm\n"})
    marks = make_marks(tmp_path)
    tasks = two_hundred_tasks(marks)
    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", tasks, max_parallel_agents=8)).stdout.strip()
    assert seed.scalar(pg_location, "SELECT COUNT(*) FROM parallel_execution_waves WHERE execution_id = ?", (ex,)) == 12
    hosts = {}
    for host, (wrap, extra) in {"host-a": ([], {}), "host-b": (prefix, skewed)}.items():
        clone = tmp_path / host
        git(tmp_path, "clone", "-q", str(origin), str(clone), env=genv)
        hosts[host] = wrap + buildctl_executable() + ["run", "exec", ex, "--jobs", "4", "--repo", str(clone),
                                                       "--config", json.dumps(FAST)], _env(pg_location, BUILDCTL_HOST=host, **extra)
    started_at = time.time()
    procs = {h: subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h, (argv, env) in hosts.items()}
    results = {h: p.communicate(timeout=240) for h, p in procs.items()}
    ended_at = time.time()
    for h, p in procs.items():
        assert p.returncode == 0, (h, results[h][1])

    names = [t["id"] for t in tasks]
    assert_each_ran_once(marks, names)
    clocks = {}
    for n in names:
        host, clock = (marks / "started" / n).read_text().split()
        clocks.setdefault(host, []).append(int(clock))
    assert set(clocks) == {"host-a", "host-b"}, "both hosts ran tasks"
    assert max(clocks["host-a"]) < ended_at + 60 and min(clocks["host-b"]) > started_at + 240  # host-b's clock was ahead

    events = seed.rows(pg_location, "SELECT event_type, timestamp, context FROM task_execution_log "
                                    "WHERE execution_id = ? AND event_type IN ('task_started', 'task_completed')", (ex,))
    stamps = [utc_epoch(e["timestamp"]) for e in events]
    assert started_at - 5 < min(stamps) and max(stamps) < ended_at + 5  # the server's clock, not host-b's
    ends, starts = {}, {}
    for e in events:
        wave = json.loads(e["context"])["wave"]
        if e["event_type"] == "task_completed":
            ends[wave] = max(ends.get(wave, ""), e["timestamp"])
        else:
            starts[wave] = min(starts.get(wave, "9999"), e["timestamp"])
    assert sorted(starts) == list(range(1, 13))
    for wave in range(1, 12):
        assert ends[wave] <= starts[wave + 1], f"wave {wave + 1} started at {starts[wave + 1]}, before wave {wave} ended at {ends[wave]}"
    assert _started_per_task(pg_location, ex) == {n: 1 for n in names}

    assert seed.query(pg_location, "SELECT status, COUNT(*) FROM build_agent_instances GROUP BY status") == [("completed", 8)]
    assert seed.scalar(pg_location, "SELECT COUNT(*) FROM task_execution_log WHERE message LIKE '%marked stuck%'") == 0
    assert seed.scalar(pg_location, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "completed"
    assert _recount_ok(pg_location, ex)["completed_tasks"] == 200
    assert_invariants(pg_location)


# --------------------------------------------------------------------------- acceptance: 64 claimers

def max_running(location: str, execution_id: str) -> int:
    """The most tasks held at once, from the database's own record of when each assignment
    was claimed and when it ended (a sweep over those instants; an end before a start at
    the same instant)."""
    rows = seed.query(location, "SELECT a.assigned_at, a.completed_at FROM wave_task_assignments a "
                                "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id WHERE w.execution_id = ?",
                      (execution_id,))
    assert all(start and end for start, end in rows), rows
    instants = sorted([(start, 1) for start, _ in rows] + [(end, -1) for _, end in rows], key=lambda x: (x[0], x[1]))
    held = most = 0
    for _, step in instants:
        held += step
        most = max(most, held)
    return most


#: One claimer process (shared with benchmarks/bench_postgres.py).
CLAIMER = str(Path(__file__).with_name("claimer.py"))


@pytest.mark.slow
def test_64_claimers_never_exceed_max_parallel_agents_nor_take_a_task_twice(pg_location, tmp_path):
    """64 processes claiming from one run of 48 tasks with max_parallel_agents = 3."""
    marks = make_marks(tmp_path)
    names = [f"T-{i:03d}" for i in range(1, 49)]
    tasks = [task(n, command=counted(marks, n, "sleep 0.2")) for n in names]
    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", tasks, max_parallel_agents=3)).stdout.strip()
    claimers = [subprocess.Popen([sys.executable, CLAIMER, pg_location, ex, "60"], env=_env(pg_location),
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for _ in range(64)]
    try:
        wait_for(lambda: seed.scalar(pg_location, "SELECT COUNT(*) FROM build_agent_instances") == 64,
                 "64 registered claimers", timeout=120)
        for p in claimers:
            p.stdin.close()
        for p in claimers:
            p.wait(timeout=240)
        errors = [p.stderr.read() for p in claimers]
    finally:
        for p in claimers:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in claimers] == [0] * 64, [e for e in errors if e][:3]
    assert_each_ran_once(marks, names)
    assert _started_per_task(pg_location, ex) == {n: 1 for n in names}
    assert max_running(pg_location, ex) == 3  # the limit, reached and never passed
    assert seed.scalar(pg_location, "SELECT COUNT(DISTINCT instance_id) FROM wave_task_assignments") > 3  # shared out
    assert seed.scalar(pg_location, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "completed"
    assert_invariants(pg_location)


def test_a_claimer_that_waits_anyway_does_not_queue_behind_a_busy_run(pg_location, tmp_path):
    """`agent claim --wait` (unless_busy): while another transaction holds the run, the claim
    comes back at once with nothing written; without it, the claim queues for the run."""
    import psycopg

    from buildctl import agents, storage
    from buildctl.errors import NothingYet
    from conftest import snapshot

    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", [task("T-001")])).stdout.strip()
    with storage.connect(pg_location) as db:
        agent = agents.spawn(db, ex)
        holder = psycopg.connect(pg_location)
        holder.execute("SELECT 1 FROM task_list_execution_runs WHERE execution_id = %s FOR UPDATE", (ex,))
        before = snapshot(pg_location)
        with pytest.raises(NothingYet, match="another agent is changing the run"):
            agents.claim(db, agent, unless_busy=True)
        assert snapshot(pg_location) == before
        holder.rollback()
        holder.close()
        assert agents.claim(db, agent, unless_busy=True)["display_id"] == "T-001"


# --------------------------------------------------------------------------- acceptance: the lease across hosts

@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_sigkilled_workers_task_is_taken_back_by_a_worker_on_the_other_host(pg_location, tmp_path):
    """`agent work` on two hosts; host-a's worker is SIGKILLed mid-task with no parent to
    notice: once its lease (staleAfterMs) runs out, host-b's worker marks it stuck and runs
    its task, with no command typed; every other task runs once, the killed one's attempt
    never finishes and its retry does, once."""
    from checkpoint_helpers import git, git_env, init_repo

    genv = git_env(tmp_path / "home")
    origin = init_repo(tmp_path / "origin", genv, files={"README": "farm\n"})
    marks = make_marks(tmp_path)
    names = [f"T-{i:03d}" for i in range(1, 7)]
    tasks = [task(n, command=counted(marks, n, "sleep 1.5")) for n in names]
    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", tasks, max_parallel_agents=2)).stdout.strip()
    cfg = json.dumps({**FAST, "staleAfterMs": 3000})
    workers, agent_of = {}, {}
    for host in ("host-a", "host-b"):
        clone = tmp_path / host
        git(tmp_path, "clone", "-q", str(origin), str(clone), env=genv)
        env = _env(pg_location, BUILDCTL_HOST=host)
        agent_of[host] = buildctl(pg_location, "agent", "spawn", ex, "--config", cfg, env=env).stdout.strip()
        workers[host] = subprocess.Popen(buildctl_executable() + ["agent", "work", ex, "--agent", agent_of[host],
                                                                  "--repo", str(clone)],
                                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        held = wait_for(lambda: seed.query(pg_location, "SELECT t.display_id FROM wave_task_assignments a "
                                                        "JOIN tasks t ON t.id = a.task_id WHERE a.instance_id = ? "
                                                        "AND a.status = 'running'", (agent_of["host-a"],)),
                        "host-a running a task")
        victim = held[0][0]
        wait_for(lambda: (marks / "started" / victim).exists(), f"{victim}'s command to start on host-a")
        workers["host-a"].send_signal(signal.SIGKILL)
        workers["host-a"].wait(timeout=30)
        workers["host-b"].wait(timeout=120)
        assert workers["host-b"].returncode == 0, workers["host-b"].stderr.read()
    finally:
        for p in workers.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    others = [n for n in names if n != victim]
    assert_each_ran_once(marks, others)
    started = [line.split()[0] for line in (marks / "started" / victim).read_text().splitlines()]
    finished = [line.split()[0] for line in (marks / "finished" / victim).read_text().splitlines()]
    assert (started, finished) == (["host-a", "host-b"], ["host-b"])  # the killed attempt never finished
    agent_a = seed.rows(pg_location, "SELECT status, error_context FROM build_agent_instances WHERE instance_id = ?",
                        (agent_of["host-a"],))[0]
    assert agent_a["status"] == "stuck" and json.loads(agent_a["error_context"])["code"] == "stale_heartbeat"
    assert seed.scalar(pg_location, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "completed"
    assert _recount_ok(pg_location, ex)["completed_tasks"] == 6
    assert_invariants(pg_location)


def test_a_heartbeat_racing_a_stuck_marking_does_not_revive_the_agent(pg_location, tmp_path):
    """Transactions run side by side on PostgreSQL (READ COMMITTED): a worker's heartbeat
    that read its agent 'running' while another transaction was marking it stuck set it
    running again once that one committed, and the worker's finish then ended a stuck
    agent 'completed'. The heartbeat now waits for the row and sees 'stuck': refused."""
    from buildctl import agents, storage
    from buildctl.errors import Conflict

    ex = buildctl(pg_location, "run", "start", write_list(tmp_path / "list.json", [task("T-001")])).stdout.strip()
    iid = buildctl(pg_location, "agent", "spawn", ex).stdout.strip()
    marker, beater = storage.connect(pg_location), storage.connect(pg_location)
    outcome: dict = {}

    def beat() -> None:
        try:
            outcome["result"] = agents.heartbeat(beater, iid, status="running", revive_stuck=False)
        except Conflict as exc:
            outcome["result"] = exc

    try:
        with marker.write():
            marker.execute("UPDATE build_agent_instances SET status = 'stuck' WHERE instance_id = ?", (iid,))
            beating = threading.Thread(target=beat)
            beating.start()
            time.sleep(0.5)
            assert beating.is_alive()  # waiting for the row this transaction holds
        beating.join(30)
        assert isinstance(outcome.get("result"), Conflict), outcome
        assert seed.scalar(pg_location, "SELECT status FROM build_agent_instances WHERE instance_id = ?", (iid,)) == "stuck"
    finally:
        marker.close()
        beater.close()
