"""Reliability suite (issue 8): faults injected into real processes on real files.

Each fault test kills or starves a real `buildctl` (or worker) process, then checks
that the database passes the product's own invariant check (`doctor.diagnose`:
integrity, foreign keys, migrations, counters vs recount, orphan assignments, stale
agents, unsettled runs) and that the next command recovers.

Covered elsewhere, not repeated here:
- SIGKILL of `migrate` at spread-out moments and in the middle of one file:
  tests/test_migrations.py::test_sigkill_during_migrate_leaves_old_or_new_version and
  ::test_sigkill_in_the_middle_of_one_file_rolls_that_file_back;
- SIGKILL of `gc` mid-batch: tests/test_gc.py::test_sigkill_in_the_middle_leaves_a_consistent_database_and_the_next_gc_finishes
  (here: test_gc_killed_mid_batch_passes_doctor adds the invariant check after it).

No timed assertions: every wait polls a real condition with a generous deadline
that only turns a hang into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checkpoint_helpers import git_env, init_repo, tree_state, write
from conftest import assert_refused, buildctl_executable, git_available, snapshot
from seed import query

from buildctl import exitcodes

DEADLINE_S = 60


# --------------------------------------------------------------------------- helpers

def invariant_findings(path: Path, *, stale_after_s: float = 60) -> dict[str, list[str]]:
    """`buildctl doctor`'s checks on the file; {} when healthy."""
    from buildctl import doctor, storage

    db = storage.connect(str(path))
    try:
        return {c.name: c.findings for c in doctor.diagnose(db, stale_after_s=stale_after_s) if not c.ok}
    finally:
        db.close()


def assert_invariants(path: Path, **kw) -> None:
    findings = invariant_findings(path, **kw)
    assert findings == {}, findings


def wait_for(predicate, what: str, timeout: float = DEADLINE_S, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- SIGKILL of an agent mid-task

def _worker(db_path: Path, ex: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "buildctl", "agent", "work", ex, "--db", str(db_path),
         "--config", json.dumps({"heartbeatIntervalMs": 100, "maxRetries": 3}), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


@pytest.mark.slow
def test_agent_killed_mid_task_is_detected_and_its_task_runs_again_elsewhere(cli, migrated, tmp_path):
    """A SIGKILLed agent is detected as stale and its task runs again elsewhere;
    no task runs twice at once."""
    go = tmp_path / "go"
    started = tmp_path / "started"
    tasks = [
        # The first attempt hangs until killed; any later attempt (after `go` exists) succeeds.
        {"id": "T-001", "title": "slow", "command": f"echo x >> '{started}'; test -e '{go}' || sleep 30",
         "depends_on": [], "files": []},
        {"id": "T-002", "title": "after", "command": "true", "depends_on": ["T-001"], "files": []},
    ]
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps({"name": "killed-agent", "max_parallel_agents": 2, "tasks": tasks}))
    ex = cli("run", "start", lst, check=True).out

    first = _worker(migrated, ex)
    try:
        # Wait until the task runs (assignment running, a heartbeat written, the child started).
        wait_for(lambda: query(migrated, "SELECT 1 FROM wave_task_assignments WHERE status = 'running'")
                 and query(migrated, "SELECT 1 FROM agent_heartbeats") and started.exists()
                 and children_of(first.pid), "the first worker to start T-001")
        (agent_a,) = [r[0] for r in query(migrated, "SELECT instance_id FROM build_agent_instances")]
        child = children_of(first.pid)[0]
        # The agent dies with its task (a machine lost): SIGKILL to both, no chance to report.
        os.kill(first.pid, signal.SIGKILL)
        os.killpg(child, signal.SIGKILL)
        first.wait(timeout=DEADLINE_S)
        wait_for(lambda: not pid_alive(child), "the task's process group to die")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    # Nothing was reported: the task is still held by a dead agent.
    held_by_a = [("running", agent_a)]
    assert query(migrated, "SELECT status, instance_id FROM wave_task_assignments WHERE status IN ('assigned','running')") \
        == held_by_a

    # Another agent is already waiting for work: it must not take T-001 while the dead agent
    # still holds it (T-002 waits behind the wave barrier).
    go.touch()
    second = _worker(migrated, ex)
    try:
        # Detected as stale (doctor sees it too), then marked: stuck, task released to pending.
        wait_for(lambda: query(migrated, "SELECT 1 FROM build_agent_instances WHERE instance_id <> ? "
                                         "AND last_heartbeat IS NOT NULL", (agent_a,)), "the second worker to heartbeat")
        wait_for(lambda: invariant_findings(migrated, stale_after_s=1).get("stale_agents"), "the agent to look stale",
                 interval=0.1)
        assert query(migrated, "SELECT status, instance_id FROM wave_task_assignments "
                               "WHERE status IN ('assigned','running')") == held_by_a
        assert query(migrated, "SELECT count(*) FROM task_execution_log WHERE event_type = 'task_started'") == [(1,)]
        marked = wait_for(
            lambda: json.loads(cli("agent", "stale", "--mark", "--threshold", "1s", "--json", check=True).stdout),
            "agent stale --mark to mark the killed agent", interval=0.2)
        assert [m["instance_id"] for m in marked] == [agent_a]
        assert [r["outcome"] for r in marked[0]["released"]] == ["pending"]
        assert query(migrated, "SELECT status FROM build_agent_instances WHERE instance_id = ?", (agent_a,)) == [("stuck",)]

        # The waiting agent takes the task and completes the run.
        out, err = second.communicate(timeout=DEADLINE_S)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert second.returncode == 0, err
    assert "Traceback" not in err
    run = json.loads(cli("run", "show", ex, "--json", check=True).stdout)
    run = run.get("run", run)
    assert run["status"] == "completed"
    assert (run["completed_tasks"], run["failed_tasks"], run["skipped_tasks"]) == (2, 0, 0)
    assert_invariants(migrated)
    assert started.read_text().count("x") == 2  # exactly two attempts of T-001 ran

    # The lane's log: T-001's attempts never overlap (started .. failed/completed), and
    # the second one ran on another agent.
    events = query(migrated,
                   "SELECT l.event_type, l.instance_id, l.context FROM task_execution_log l JOIN tasks t ON t.id = l.task_id "
                   "WHERE l.execution_id = ? AND t.display_id = 'T-001' "
                   "AND l.event_type IN ('task_started', 'task_failed', 'task_completed') ORDER BY l.id", (ex,))
    open_attempt = None
    attempts = []
    for kind, agent, _ctx in events:
        if kind == "task_started":
            assert open_attempt is None, f"T-001 started on {agent} while {open_attempt} still ran it: {events}"
            open_attempt = agent
            attempts.append(agent)
        else:
            assert open_attempt is not None, events
            open_attempt = None
    assert open_attempt is None
    assert len(attempts) == 2 and attempts[0] == agent_a and attempts[1] != agent_a, events
    failed_ctx = [json.loads(c) for k, _a, c in events if k == "task_failed"]
    assert len(failed_ctx) == 1 and failed_ctx[0].get("released") is True, failed_ctx


# --------------------------------------------------------------------------- SIGKILL of checkpoint restore

N_FILES = 400


def _restore_fixture(tmp_path, cli, genv):
    """A run, a repository with many files, checkpoint A of it, then a different working tree B."""
    ex = cli("run", "start", Path(__file__).resolve().parent.parent / "examples" / "five-tasks.toml", check=True).out
    repo = init_repo(tmp_path / "repo", genv, {f"src/d{i % 20}/f{i}.txt": f"v1 {i}\n" * 20 for i in range(N_FILES)})
    write(repo, ".gitignore", "*.log\n")
    write(repo, "build.log", "ignored, never touched\n")
    cp_a = cli("checkpoint", "create", ex, "--task", "T-001", "--repo", repo, check=True, extra_env=genv).out
    state_a = tree_state(repo)
    # B: half the files changed, a tenth deleted, many new untracked files, one ignored.
    for i in range(0, N_FILES, 2):
        write(repo, f"src/d{i % 20}/f{i}.txt", f"v2 {i}\n" * 30)
    for i in range(1, N_FILES, 10):
        (repo / f"src/d{i % 20}/f{i}.txt").unlink()
    for i in range(N_FILES // 2):
        write(repo, f"new/n{i % 10}/n{i}.txt", f"uncheckpointed work {i}\n")
    write(repo, "other.log", "ignored too\n")
    # Once restore A has finished: A's files, plus B's ignored files (never touched).
    state_after_a = {**state_a, "other.log": tree_state(repo)["other.log"]}
    return ex, repo, cp_a, state_after_a


def _kill_points(repo: Path, db_path: Path):
    """Moments to SIGKILL a running restore, each an observable stage of it (polled, not timed)."""
    refs = repo / ".git" / "refs" / "buildctl" / "checkpoints"
    n_refs = len(os.listdir(refs))
    n_pre = query(db_path, "SELECT count(*) FROM checkpoints")[0][0]
    probe_removed = repo / "new" / "n0" / "n0.txt"  # created since A: the restore removes it (first)
    probe_written = repo / "src" / "d0" / "f0.txt"  # changed since A: the restore rewrites it (later)
    return {
        "pre-restore ref written": lambda: len(os.listdir(refs)) > n_refs,
        "pre-restore row written": lambda: query(db_path, "SELECT count(*) FROM checkpoints")[0][0] > n_pre,
        "first file removed": lambda: not probe_removed.exists(),
        "first file rewritten": lambda: _rewritten(probe_written),
    }


def _rewritten(path: Path) -> bool:
    try:
        return path.read_bytes().startswith(b"v1")
    except FileNotFoundError:
        return True  # git checkout-index replaces it right now


@pytest.mark.slow
@pytest.mark.skipif(not git_available(), reason="git is not installed")
def test_restore_killed_mid_way_loses_nothing_the_pre_restore_checkpoint_brings_it_all_back(cli, migrated, tmp_path,
                                                                                         monkeypatch, capsys):
    """Restore never destroys uncheckpointed work: SIGKILL `checkpoint restore`
    at spread-out moments (before, during and after its automatic checkpoint, while the
    working tree changes); afterwards either the tree was not touched yet, or the automatic
    pre-restore checkpoint (found with `checkpoint list`) restores every file that existed
    before, byte for byte."""
    genv = git_env(tmp_path / "home")
    ex, repo, cp_a, state_after_a = _restore_fixture(tmp_path, cli, genv)
    state_b = tree_state(repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({**genv, "BUILDCTL_DB": str(migrated), "NO_COLOR": "1"})

    def pre_restore_checkpoints() -> list[dict]:
        # `checkpoint list` in-process (run_app, the same Typer path) to spare a process start.
        from buildctl.entry import run as run_app

        capsys.readouterr()
        with monkeypatch.context() as m:
            m.setenv("BUILDCTL_DB", str(migrated))
            code = run_app(["checkpoint", "list", ex, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        return [r for r in json.loads(out) if r["kind"] == "pre-restore"]

    outcomes: dict[str, str] = {}
    names = list(_kill_points(repo, migrated)) + ["first file removed (again)", "first file rewritten (again)"]
    for name in names:
        if name.endswith("(again)") and "interrupted" in outcomes.values():
            continue  # a kill already landed half-way through the file changes
        point = _kill_points(repo, migrated)[name.replace(" (again)", "")]
        before_ids = {r[0] for r in query(migrated, "SELECT id FROM checkpoints")}
        # Its own process group, killed as a whole: buildctl and the git processes it runs
        # (a git left running would go on writing files after buildctl died).
        proc = subprocess.Popen(buildctl_executable() + ["checkpoint", "restore", cp_a, "--repo", str(repo)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: proc.poll() is not None or point(), f"restore to reach {name!r}", interval=0.0005)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it had finished
            proc.wait()

        assert_invariants(migrated)  # the database is healthy, whatever the moment
        new = [r for r in pre_restore_checkpoints() if r["id"] not in before_ids]
        now = tree_state(repo)
        if not new:
            # Killed before the pre-restore checkpoint was recorded: nothing may have changed yet.
            assert now == state_b, f"killed at {name!r}: the tree changed, and there is no pre-restore checkpoint"
            outcomes[name] = "untouched"
            continue
        (pre,) = new
        outcomes[name] = "finished" if now == state_after_a else ("untouched" if now == state_b else "interrupted")
        # The recovery: restore the automatic checkpoint; everything of B comes back byte for byte.
        cli("checkpoint", "restore", pre["id"], "--repo", repo, check=True, extra_env=genv)
        assert tree_state(repo) == state_b, f"killed at {name!r}: the pre-restore checkpoint lost work"
        assert_invariants(migrated)
    # At least one kill landed while the working tree was half-way changed.
    assert "interrupted" in outcomes.values(), outcomes


# --------------------------------------------------------------------------- gc killed mid-batch: invariants

def test_gc_killed_mid_batch_passes_doctor(cli, migrated):
    """tests/test_gc.py kills gc mid-batch and checks the batches; this adds the
    invariant check (doctor) before and after the next gc, on a database with a run."""
    ex = cli("run", "start", Path(__file__).resolve().parent.parent / "examples" / "five-tasks.toml", check=True).out
    agent = cli("agent", "spawn", ex, check=True).out
    cli("agent", "finish", agent, "--status", "completed", check=True)
    cli("run", "cancel", ex, check=True)  # gc keeps everything of an active run
    conn = sqlite3.connect(migrated, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO agent_heartbeats (instance_id, timestamp, status) VALUES (?, '2000-01-01 00:00:00', 'running')",
                     [(agent,)] * 20_000)
    conn.execute("COMMIT")
    conn.close()
    env = {**os.environ, "BUILDCTL_DB": str(migrated)}
    proc = subprocess.Popen(buildctl_executable() + ["gc", "--batch-size", "100", "--stale-after", "1h"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: query(migrated, "SELECT count(*) FROM agent_heartbeats")[0][0] < 20_000 or proc.poll() is not None,
             "gc to delete its first batch", interval=0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = query(migrated, "SELECT count(*) FROM agent_heartbeats")[0][0]
    assert 0 < left < 20_000 and left % 100 == 0, left  # killed mid-way, whole batches only
    assert_invariants(migrated)
    r = cli("gc", "--json", "--stale-after", "1h")
    assert r.returncode == 0, r.stderr
    assert query(migrated, "SELECT count(*) FROM agent_heartbeats")[0][0] == 0
    assert_invariants(migrated)


# --------------------------------------------------------------------------- read-only database, full disk
#
# Real conditions, not mocks. Tests run as root here, where chmod 0444 does not stop a
# write, so: an immutable file (`chattr +i`, which stops root too), a read-only bind
# mount (EROFS), and a size-limited tmpfs filled to the brim (ENOSPC). Each skips with
# its reason where the machine does not allow it (no root, no CAP_SYS_ADMIN).

def _sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True)


@pytest.fixture
def mounts():
    done: list[Path] = []
    yield done
    for m in reversed(done):
        _sh("umount", "-l", str(m))


def _mount(mounts: list, *args: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    p = _sh("mount", *args, str(target))
    if p.returncode != 0:
        pytest.skip(f"cannot mount here ({p.stderr.strip() or p.returncode}); needs root with CAP_SYS_ADMIN")
    mounts.append(target)


def _world(cli, tmp_path: Path) -> dict:
    """A run with an agent, and a task-list file: something for every kind of write."""
    ex = cli("run", "start", Path(__file__).resolve().parent.parent / "examples" / "five-tasks.toml", check=True).out
    agent = cli("agent", "spawn", ex, check=True).out
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps({"name": "more", "tasks": [
        {"id": f"T-{i:03d}", "title": f"task {i} " + "t" * 2000, "command": "true", "depends_on": [], "files": []}
        for i in range(200)]}))
    return {"ex": ex, "agent": agent, "list": lst}


def _writes(w: dict) -> list[list[str]]:
    """Commands that write: the lean hot path and the Typer path, small and large transactions."""
    return [
        ["heartbeat", w["agent"], "--progress", "10"],
        ["log", "add", w["ex"], "info", "m" * 100_000, "--context", json.dumps({"k": "c" * 100_000})],
        ["agent", "finish", w["agent"], "--status", "completed"],
        ["agent", "spawn", w["ex"]],
        ["agent", "stale", "--mark", "--threshold", "0s"],
        ["tasks", "import", str(w["list"])],
        ["run", "start", str(w["list"])],
        ["run", "pause", w["ex"]],
        ["run", "cancel", w["ex"]],
        ["gc"],
    ]


def _assert_db_refusal(r, *words: str) -> None:
    assert_refused(r, exitcodes.DATABASE)
    assert any(word in r.stderr for word in words), r.stderr


def test_immutable_database_file_refuses_every_write_with_one_line_and_changes_nothing(cli, migrated, tmp_path):
    w = _world(cli, tmp_path)
    before = snapshot(migrated)
    if _sh("chattr", "+i", str(migrated)).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root on a file system with attributes)")
    try:
        for argv in _writes(w):
            r = cli(*argv)
            _assert_db_refusal(r, "read-only")
            assert snapshot(migrated) == before, argv
        # Reads still work on a read-only file.
        assert cli("run", "show", w["ex"]).returncode == 0
        assert cli("doctor").returncode == 0
    finally:
        _sh("chattr", "-i", str(migrated))
    # Writable again: the next command works, the database is healthy.
    cli("log", "add", w["ex"], "info", "writable again", check=True)
    assert_invariants(migrated)


def test_database_on_a_read_only_file_system_is_refused_with_one_line(cli, migrated, tmp_path, mounts):
    w = _world(cli, tmp_path)
    before = snapshot(migrated)
    ro = tmp_path / "ro"
    _mount(mounts, "--bind", str(migrated.parent), target=ro)
    p = _sh("mount", "-o", "remount,ro,bind", str(ro))
    if p.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {p.stderr.strip()}")
    ro_db = ro / migrated.name
    # Refused when the connection opens, the same for every command: the lean path, Typer, a read.
    for argv in _writes(w)[::3] + [["waves", w["ex"]]]:
        r = cli("--db", ro_db, *argv)
        _assert_db_refusal(r, "read-only")
        assert "mounted read-only" in r.stderr, r.stderr
    assert snapshot(migrated) == before
    assert_invariants(migrated)


def _fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` to the last byte, then free ``leave`` bytes."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    with open(filler, "r+b") as f:
        size = f.seek(0, 2)
        f.truncate(max(0, size - leave))
    return filler


@pytest.mark.parametrize("headroom", [0, 96 * 1024], ids=["no-space-at-all", "too-little-space"])
def test_full_disk_refuses_with_one_line_and_nothing_half_written(cli, migrated, tmp_path, mounts, headroom):
    w = _world(cli, tmp_path)
    disk = tmp_path / "disk"
    _mount(mounts, "-t", "tmpfs", "-o", "size=4m", "tmpfs", target=disk)
    db = disk / "buildctl.db"
    shutil.copyfile(migrated, db)  # every `cli` process closed: the -wal was checkpointed away
    filler = _fill(disk, headroom)
    before = snapshot_ro(db)
    big = [argv for argv in _writes(w) if argv[:2] in (["log", "add"], ["tasks", "import"], ["run", "start"])]
    # No space at all: refused when the connection opens (no room for the -shm), the same for
    # every command. Too little space: refused at COMMIT of a large transaction.
    for argv in (_writes(w)[::3] if headroom == 0 else big):
        r = cli("--db", db, *argv)
        _assert_db_refusal(r, "disk is full")
        assert snapshot_ro(db) == before, argv
    # Space again: the same command succeeds, and the database is healthy.
    filler.unlink()
    r = cli("--db", db, "tasks", "import", w["list"])
    assert r.returncode == 0, r.stderr
    assert_invariants(db)


def snapshot_ro(path: Path) -> dict:
    """snapshot() through an immutable read-only URI: reading writes no -wal/-shm on a full disk."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()
