"""Runs that heal themselves and a cancel that reaches every agent (issue 11): real
`run exec` and worker processes, real signals, real shell tasks that count their side
effects in files, one real database (SQLite, and PostgreSQL).

No timed assertions beyond the promise under test ("well within staleAfterMs + a few
seconds"), and those with generous margins: every wait polls a real condition.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import seed
from buildctl import exitcodes
from conftest import REPO, buildctl_executable
from runhelpers import task, write_list
from test_reliability import assert_invariants, children_of, pid_alive, query, wait_for

pytestmark = pytest.mark.engines

FAST = {"heartbeatIntervalMs": 200, "retryBackoffMs": [50], "killGraceMs": 1000}


def _start(cli, tmp_path, tasks, **extra) -> str:
    return cli("run", "start", str(write_list(tmp_path / "list.json", tasks, **extra)), check=True).out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def _workers_of(pid: int) -> dict[str, int]:
    """The worker processes of a `run exec`: agent id -> pid."""
    out = {}
    for child in children_of(pid):
        argv = _cmdline(child)
        if argv[1:5] == ["-m", "buildctl", "agent", "work"] and "--agent" in argv:
            out[argv[argv.index("--agent") + 1]] = child
    return out


def _holder(db_path: Path, display_id: str) -> str | None:
    rows = query(db_path, "SELECT a.instance_id FROM wave_task_assignments a JOIN tasks t ON t.id = a.task_id "
                          "WHERE t.display_id = ? AND a.status IN ('assigned', 'running')", (display_id,))
    return rows[0][0] if rows else None


def _agent(db_path: Path, instance_id: str) -> dict:
    status, ctx = query(db_path, "SELECT status, error_context FROM build_agent_instances WHERE instance_id = ?",
                        (instance_id,))[0]
    return {"status": status, "error_context": json.loads(ctx) if ctx else None}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _no_overlapping_attempts(db_path: Path, execution_id: str) -> None:
    """From the log: per task, an attempt starts only after the previous one ended."""
    open_attempt: dict[str, int] = {}
    for lid, kind, display, ctx in query(
            db_path, "SELECT l.id, l.event_type, t.display_id, l.context FROM task_execution_log l "
                     "JOIN tasks t ON t.id = l.task_id WHERE l.execution_id = ? ORDER BY l.id", (execution_id,)):
        if kind == "task_started":
            assert display not in open_attempt, f"{display} started again at log id {lid} while an attempt ran"
            open_attempt[display] = lid
        elif kind in ("task_completed", "task_failed") and not json.loads(ctx or "{}").get("in_place"):
            open_attempt.pop(display, None)


def _reap(*procs: subprocess.Popen) -> None:
    """A failed assertion must not leave processes polling forever."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
            p.wait()


# --------------------------------------------------------------------------- run exec: SIGKILL of a worker

KILL_POINTS = ["before claim", "running", "validating", "between complete and next claim"]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_run_exec_heals_a_sigkilled_worker_at_every_point_of_a_task(cli, env, migrated, tmp_path, point):
    """SIGKILL one of `run exec`'s workers; the run completes by itself, each task's work
    done exactly once, far sooner than staleAfterMs (60 s here): the parent noticed."""
    d = tmp_path / "fx"
    d.mkdir()
    tasks = [
        # T-001 is short: its worker then waits at the barrier ("between complete and next claim").
        task("T-001", command=f"echo run >> {d}/T-001.runs; sleep 0.3; echo done >> {d}/T-001.done"),
        task("T-002", command=f"echo run >> {d}/T-002.runs; touch {d}/T-002.started; sleep 1; echo done >> {d}/T-002.done",
             validate=f"touch {d}/T-002.validating; sleep 1; echo ok >> {d}/T-002.validated"),
        task("T-003", ["T-001", "T-002"], command=f"echo done >> {d}/T-003.done"),
    ]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=2)
    cfg = {**FAST, "staleAfterMs": 60000}
    # Three workers for two slots: one of them has not claimed anything yet.
    proc = subprocess.Popen(buildctl_executable() + ["run", "exec", ex, "--jobs", "3", "--config", json.dumps(cfg)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers = wait_for(lambda: len(_workers_of(proc.pid)) == 3 and _workers_of(proc.pid), "three workers")
        if point == "before claim":
            wait_for(lambda: (d / "T-002.started").exists() and _lines(d / "T-001.runs"), "both tasks to start")
            claimed = {r[0] for r in query(migrated, "SELECT instance_id FROM task_execution_log "
                                                     "WHERE event_type = 'task_started'")}
            (victim,) = [a for a in workers if a not in claimed]
        elif point == "running":
            wait_for(lambda: (d / "T-002.started").exists(), "T-002 to run")
            victim = _holder(migrated, "T-002")
        elif point == "validating":
            wait_for(lambda: (d / "T-002.validating").exists(), "T-002's validation to run")
            victim = _holder(migrated, "T-002")
        else:
            wait_for(lambda: _holder(migrated, "T-001"), "T-001 to be claimed")
            victim = _holder(migrated, "T-001")
            wait_for(lambda: query(migrated, "SELECT 1 FROM wave_task_assignments a JOIN tasks t ON t.id = a.task_id "
                                             "WHERE t.display_id = 'T-001' AND a.status = 'completed'"), "T-001 to complete")
            assert not (d / "T-002.validated").exists()  # T-002 still holds the barrier: the victim waits
        os.kill(workers[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        _reap(proc)
    assert proc.returncode == 0, err
    assert took < 30, f"the run took {took:.1f}s to finish after the kill"  # the lease alone would take 60 s
    agent = _agent(migrated, victim)
    assert agent["status"] == "failed", agent
    assert agent["error_context"]["code"] == "worker_died" and agent["error_context"]["signal"] == signal.SIGKILL
    assert f"killed by SIGKILL; agent {victim} marked failed" in err
    assert "takes no new agents" not in err
    # Each task's work finished exactly once (the killed attempt never finished).
    killed_mid_task = point in ("running", "validating")
    assert {t: _lines(d / f"{t}.done") for t in ("T-001", "T-002", "T-003")} == {
        "T-001": 1, "T-002": 2 if point == "validating" else 1, "T-003": 1}  # validation killed after the command ran
    assert _lines(d / "T-002.validated") == 1
    assert _lines(d / "T-002.runs") == (2 if killed_mid_task else 1)
    _no_overlapping_attempts(migrated, ex)
    assert query(migrated, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == [("completed",)]
    assert_invariants(migrated)
    assert _marked(victim) == []


def _marked(instance_id: str) -> list[int]:
    """Processes of any task of that agent still alive."""
    from buildctl.worker import agent_marker, marked_pids

    return marked_pids(agent_marker(instance_id))


# --------------------------------------------------------------------------- agent work by hand: the lease

def _worker(db_path: Path, ex: str, cfg: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "buildctl", "agent", "work", ex, "--db", str(db_path), "--config",
                             json.dumps(cfg), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_a_surviving_worker_reclaims_a_sigkilled_peers_task_when_its_lease_expires(cli, migrated, tmp_path):
    """`agent work` processes started by hand, no `run exec` parent: SIGKILL the one running
    the task; the other, idle, marks it stuck once its lease (staleAfterMs) expired and
    runs the task again, with no command typed."""
    d = tmp_path / "fx"
    d.mkdir()
    # The first attempt hangs until killed; the second one finishes at once.
    cmd = (f"echo run >> {d}/runs; if [ -e {d}/first ]; then echo done >> {d}/done; "
           f"else touch {d}/first; sleep 30; echo done >> {d}/done; fi")
    ex = _start(cli, tmp_path, [task("T-001", command=cmd)], max_parallel_agents=2)
    cfg = {**FAST, "staleAfterMs": 2000}
    workers = [_worker(migrated, ex, cfg) for _ in range(2)]
    try:
        wait_for(lambda: (d / "first").exists(), "the first attempt")
        (victim,) = [w for w in workers if children_of(w.pid)]  # the one running the task
        (survivor,) = [w for w in workers if w is not victim]
        victim_agent = _holder(migrated, "T-001")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        _out, err = survivor.communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        _reap(*workers)
    assert survivor.returncode == 0, err
    assert took < 2 + 10, f"reclaimed {took:.1f}s after the kill (staleAfterMs 2 s)"
    assert (_lines(d / "runs"), _lines(d / "done")) == (2, 1)
    agent = _agent(migrated, victim_agent)
    assert agent["status"] == "stuck" and agent["error_context"]["code"] == "stale_heartbeat"
    assert query(migrated, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == [("completed",)]
    _no_overlapping_attempts(migrated, ex)
    assert_invariants(migrated)


# --------------------------------------------------------------------------- SIGTERM / SIGHUP to run exec

_EXECUTE = textwrap.dedent("""
    import json, sys
    from buildctl import executor
    r = executor.execute(sys.argv[1], sys.argv[2], jobs=2, config=json.loads(sys.argv[3]))
    print(json.dumps({"signal": r.signal, "status": r.status, "interrupted": r.interrupted}))
    sys.exit(128 + r.signal if r.signal else 0)
""")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_run_exec_like_ctrl_c_leaving_no_process(cli, migrated, tmp_path, sig):
    pids = tmp_path / "pids"
    pids.mkdir()
    tasks = [task(f"T-00{i}", command=f"echo $$ > {pids}/{i}; exec sleep 60") for i in (1, 2)]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=2)
    proc = subprocess.Popen([sys.executable, "-c", _EXECUTE, str(migrated), ex, json.dumps(FAST)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # A pid file exists from the moment the shell opens it: wait for the whole line.
        wait_for(lambda: sorted(p.read_text().endswith("\n") for p in pids.iterdir()) == [True, True],
                 "two running tasks")
        everything = [int(p.read_text()) for p in pids.iterdir()] + list(_workers_of(proc.pid).values())
        assert len(everything) == 4
        proc.send_signal(sig)  # to run exec alone, as systemd or a CI runner does
        out, err = proc.communicate(timeout=30)
    finally:
        _reap(proc)
    assert proc.returncode == 128 + sig, err
    assert json.loads(out) == {"signal": sig, "status": "cancelled", "interrupted": True}
    for pid in everything:
        wait_for(lambda: not pid_alive(pid), f"process {pid} to end", timeout=10)
    assert query(migrated, "SELECT count(*) FROM build_agent_instances "
                           "WHERE status IN ('initializing', 'running', 'idle')") == [(0,)]
    assert_invariants(migrated)


# --------------------------------------------------------------------------- detached descendants

DETACH = ("setsid sh -c 'sleep 3; touch {d}/{a}' & setsid sh -c '(sleep 3; touch {d}/{b}) &'; "
          "touch {d}/{started}; sleep 30")


@pytest.mark.slow
def test_detached_descendants_die_with_their_worker_and_with_their_timeout(cli, migrated, tmp_path):
    """`setsid` and a double fork leave the task's process group; they still die when the
    worker is SIGKILLed (run A) and when the task times out (run B)."""
    d = tmp_path / "fx"
    d.mkdir()
    ex_a = _start(cli, tmp_path, [task("T-001", command=DETACH.format(d=d, a="a1", b="a2", started="a"))])
    list_b = write_list(tmp_path / "b.json", [task("T-001", command=DETACH.format(d=d, a="b1", b="b2", started="b"),
                                                   timeout="1s")], name="timeouts")
    ex_b = cli("run", "start", str(list_b), check=True).out
    worker_a = _worker(migrated, ex_a, FAST)
    worker_b = _worker(migrated, ex_b, {**FAST, "maxRetries": 0, "killGraceMs": 200})
    try:
        wait_for(lambda: (d / "a").exists() and (d / "b").exists(), "both tasks to detach their children")
        agent_a = _holder(migrated, "T-001")
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait()
        _out, err = worker_b.communicate(timeout=30)  # its only task timed out: the run failed
        assert worker_b.returncode == 0, err
        time.sleep(3.5)  # past the detached `sleep 3`s: a survivor would have touched its file by now
    finally:
        _reap(worker_a, worker_b)
    assert sorted(p.name for p in d.iterdir()) == ["a", "b"]
    assert _marked(agent_a) == []
    ctx = json.loads(query(migrated, "SELECT context FROM task_execution_log WHERE execution_id = ? "
                                     "AND event_type = 'task_failed'", (ex_b,))[0][0])
    assert ctx["stopped"] == "timed out after 1s"


# --------------------------------------------------------------------------- cancel reaches `agent spawn -- CMD`

@pytest.mark.slow
def test_run_cancel_stops_agent_spawn_commands_with_sigterm_then_the_grace_then_sigkill(cli, env, migrated, tmp_path):
    d = tmp_path / "fx"
    d.mkdir()
    ex = _start(cli, tmp_path, [task("T-001"), task("T-002")], max_parallel_agents=2)
    polite = (f"trap 'echo term >> {d}/polite; sleep 0.5; echo cleaned >> {d}/polite; exit 3' TERM; "
              f"touch {d}/polite.started; while :; do sleep 0.1; done")
    stubborn = f"trap '' TERM; touch {d}/stubborn.started; while :; do sleep 0.1; done"
    spawns = [subprocess.Popen(buildctl_executable() + ["agent", "spawn", ex, "--task", t, "--config",
                                                        json.dumps({"killGraceMs": grace}), "--", "sh", "-c", cmd],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
              for t, grace, cmd in (("T-001", 5000, polite), ("T-002", 500, stubborn))]
    try:
        wait_for(lambda: (d / "polite.started").exists() and (d / "stubborn.started").exists(), "both commands")
        cli("run", "cancel", ex, check=True)
        results = [p.communicate(timeout=30) for p in spawns]
    finally:
        _reap(*spawns)
    assert (d / "polite").read_text() == "term\ncleaned\n"  # SIGTERM, and the grace period to clean up
    assert spawns[0].returncode == 3, results[0]
    assert spawns[1].returncode == 128 + signal.SIGKILL, results[1]  # ignored SIGTERM: SIGKILL after 0.5 s
    stopped = [json.loads(c)["stopped"] for (c,) in query(
        migrated, "SELECT context FROM task_execution_log WHERE event_type = 'task_failed' ORDER BY id")]
    assert stopped == ["the run was cancelled"] * 2
    assert query(migrated, "SELECT count(*) FROM build_agent_instances "
                           "WHERE status IN ('initializing', 'running', 'idle')") == [(0,)]
    assert_invariants(migrated)


# --------------------------------------------------------------------------- the same-error stuck rule

def test_a_task_failing_the_same_way_marks_its_agents_stuck_and_run_exec_replaces_them(cli, migrated, tmp_path):
    ex = _start(cli, tmp_path, [task("T-001", command="echo 'disk quota exceeded' >&2; exit 3"),
                                task("T-002", ["T-001"])], max_parallel_agents=1)
    r = cli("run", "exec", ex, "--jobs", "1", "--config", json.dumps({**FAST, "maxRetries": 4}), timeout=120)
    assert r.returncode == 1, r.stderr  # the run failed
    # Five attempts: three on the first agent (then stuck), one each on the next two (the
    # last three were the same error each time), the last of them failing the task.
    rows = query(migrated, "SELECT instance_id, context FROM task_execution_log WHERE event_type = 'task_failed' "
                           "ORDER BY id")
    assert [json.loads(c)["error"] for _i, c in rows] == ["disk quota exceeded"] * 5
    by_agent = [i for i, _c in rows]
    assert [by_agent.count(a) for a in dict.fromkeys(by_agent)] == [3, 1, 1]
    for a in dict.fromkeys(by_agent):
        agent = _agent(migrated, a)
        assert agent["status"] == "stuck" and agent["error_context"]["code"] == "no_progress", agent
    assert query(migrated, "SELECT status FROM wave_task_assignments ORDER BY id") == [("failed",), ("skipped",)]
    assert "worker" not in r.stderr  # stuck workers did not die: nothing to report
    assert_invariants(migrated)


# --------------------------------------------------------------------------- smaller items

@pytest.mark.slow
def test_agent_spawn_task_losing_the_claim_race_leaves_no_agent_behind(cli, env, migrated, tmp_path, engine):
    ex = _start(cli, tmp_path, [task("T-001")])
    # Hold the lock every claim takes first (SQLite: the write lock; PostgreSQL: the run's
    # row) so that every contender waits for it before any of them can claim the task.
    if engine == "sqlite":
        lock = sqlite3.connect(migrated, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        lock = psycopg.connect(migrated)
        lock.execute("SELECT 1 FROM task_list_execution_runs WHERE execution_id = %s FOR UPDATE", (ex,))
    contenders = [subprocess.Popen(buildctl_executable() + ["agent", "spawn", ex, "--task", "T-001", "--", "true"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(4)]

    def all_waiting() -> bool:
        if engine == "sqlite":  # asleep in SQLite's busy handler
            return all(Path(f"/proc/{p.pid}/wchan").read_text() == "hrtimer_nanosleep" for p in contenders)
        return seed.scalar(migrated, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND application_name = 'buildctl' AND wait_event_type = 'Lock'") == 4

    try:
        wait_for(all_waiting, "every contender to wait for the lock", interval=0.05)
        lock.rollback() if engine == "postgres" else lock.execute("ROLLBACK")
        results = [p.communicate(timeout=60) for p in contenders]
    finally:
        lock.close()
        _reap(*contenders)
    codes = sorted(p.returncode for p in contenders)
    assert codes == [0, 5, 5, 5], results
    for p, (_out, err) in zip(contenders, results):
        if p.returncode == 5:
            assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert query(migrated, "SELECT status FROM build_agent_instances") == [("completed",)]


def test_a_bug_in_the_heartbeat_thread_ends_the_worker_loudly(migrated, cli, tmp_path):
    """Not a database error: one `error:` line, exit 70, a failed agent, its task handed back
    at once (not silence until a peer finds the agent stale)."""
    ex = _start(cli, tmp_path, [task("T-001", command="sleep 30")])
    inject = textwrap.dedent("""
        import sys
        from buildctl import agents, worker
        def broken(pid):
            raise ZeroDivisionError("injected bug")
        agents.sample_process = broken  # called by every heartbeat while a task runs
        from buildctl.entry import run
        sys.exit(run(["agent", "work", *sys.argv[1:]]))
    """)
    p = subprocess.run([sys.executable, "-c", inject, ex, "--db", str(migrated), "--config",
                        json.dumps({**FAST, "killGraceMs": 200})], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == exitcodes.INTERNAL, p.stderr
    assert p.stderr.splitlines() == [
        "error: internal error: ZeroDivisionError: injected bug (rerun with BUILDCTL_DEBUG=1 for the traceback)"]
    ((status, ctx),) = query(migrated, "SELECT status, error_context FROM build_agent_instances")
    assert status == "failed" and json.loads(ctx)["message"] == "ZeroDivisionError: injected bug"
    assert query(migrated, "SELECT status FROM wave_task_assignments") == [("pending",)]
    assert_invariants(migrated)


def test_run_exec_with_more_workers_than_work_prints_nothing_from_them(cli, migrated, tmp_path):
    ex = _start(cli, tmp_path, [task("T-001")])
    r = cli("run", "exec", ex, "--jobs", "6", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "worker:" not in r.stderr, r.stderr  # was: `execution … is completed; it takes no new agents`
    assert query(migrated, "SELECT count(*) FROM build_agent_instances WHERE status <> 'completed'") == [(0,)]


def test_run_exec_stops_replacing_workers_that_die_at_once(migrated, cli, tmp_path):
    from buildctl import executor

    ex = _start(cli, tmp_path, [task("T-001")])
    gone = tmp_path / "gone"  # the folder the tasks run in is missing: every worker refuses to start
    result = executor.execute(str(migrated), ex, jobs=1, repo=str(gone), config=FAST)
    assert result.status == "pending"
    assert result.worker_errors[-1].startswith(f"{executor.MAX_QUICK_DEATHS} workers in a row died within")
    assert query(migrated, "SELECT status, count(*) FROM build_agent_instances GROUP BY status") == \
        [("failed", executor.MAX_QUICK_DEATHS)]
    assert_invariants(migrated)


def test_workers_that_die_before_their_first_heartbeat_are_not_replaced_however_slowly_they_die(
        migrated, cli, tmp_path, monkeypatch):
    """On a loaded machine an interpreter can take longer than QUICK_DEATH_S to start and
    fail: a worker whose agent never sent a heartbeat still counts as dying at start (the
    count must not restart, or a crash at start is replaced forever). A window of 0 s makes
    every death here a slow one."""
    from buildctl import executor

    monkeypatch.setattr(executor, "QUICK_DEATH_S", 0.0)
    ex = _start(cli, tmp_path, [task("T-001")])
    started = []

    def on_tick(snapshot):  # the old rule replaces them forever: fail instead of hanging
        started.append(1)
        assert len(started) < 200, "workers dying at start are still being replaced"

    result = executor.execute(str(migrated), ex, jobs=1, repo=str(tmp_path / "gone"), config=FAST,
                              on_tick=on_tick, tick_s=0.05)
    assert result.status == "pending"
    assert result.worker_errors[-1].endswith("or before their first heartbeat; no replacement started")
    assert query(migrated, "SELECT status, count(*), count(last_heartbeat) FROM build_agent_instances "
                           "GROUP BY status") == [("failed", executor.MAX_QUICK_DEATHS, 0)]
    assert_invariants(migrated)
