"""Running builds for real: `agent work`, `run exec`, `agent spawn -- CMD` (issue 7).

Real worker processes, real shell commands, real git, one real database (SQLite, and PostgreSQL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import seed
from buildctl import assignments, storage
from conftest import buildctl_executable
from runhelpers import task, write_list

pytestmark = pytest.mark.engines

FAST = {"heartbeatIntervalMs": 200, "retryBackoffMs": [50], "killGraceMs": 1000}


def _events(path: Path, execution_id: str) -> list[dict]:
    return seed.rows(path, "SELECT l.id, l.event_type, l.instance_id, l.context, t.display_id FROM task_execution_log l "
                           "LEFT JOIN tasks t ON t.id = l.task_id WHERE l.execution_id = ? ORDER BY l.id", (execution_id,))


def _recount_ok(path: Path, execution_id: str) -> dict:
    db = storage.connect(str(path))
    try:
        rc = assignments.recount(db, execution_id)
        assert rc["ok"], rc
        return rc["stored"]["run"]
    finally:
        db.close()


def _start(cli, tmp_path, tasks, **extra) -> str:
    f = write_list(tmp_path / "list.json", tasks, **extra)
    return cli("run", "start", str(f), check=True).out


def _no_overlapping_attempts(events: list[dict]) -> None:
    """From the log: per task, an attempt starts only after the previous one ended."""
    open_attempt: dict[str, int] = {}
    for e in events:
        t = e["display_id"]
        if e["event_type"] == "task_started":
            assert t not in open_attempt, f"{t} started again at log id {e['id']} while attempt from id {open_attempt[t]} ran"
            open_attempt[t] = e["id"]
        elif e["event_type"] in ("task_completed", "task_failed"):
            ctx = json.loads(e["context"] or "{}")
            if not ctx.get("in_place"):  # an in-place retry keeps the attempt slot
                open_attempt.pop(t, None)


def test_five_task_scenario_runs_waves_in_order_with_overlap_inside_a_wave(cli, migrated, tmp_path):
    tasks = [task("T-001", command="sleep 0.6"), task("T-002", command="sleep 0.6"),
             task("T-003", ["T-001", "T-002"], command="sleep 0.2"), task("T-004", ["T-002"], command="sleep 0.2"),
             task("T-005", ["T-003", "T-004"], command="sleep 0.1")]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=2)
    r = cli("run", "exec", ex, "--jobs", "2", "--config", json.dumps(FAST), timeout=120)
    assert r.returncode == 0, r.stderr
    ev = _events(migrated, ex)
    first = {(e["event_type"], e["display_id"]): e["id"] for e in ev if e["display_id"]}
    # Wave 1 overlaps: both started before either completed.
    assert max(first[("task_started", "T-001")], first[("task_started", "T-002")]) < \
        min(first[("task_completed", "T-001")], first[("task_completed", "T-002")])
    # Barrier: wave 2 starts only after wave 1 ended, wave 3 after wave 2.
    assert min(first[("task_started", "T-003")], first[("task_started", "T-004")]) > \
        max(first[("task_completed", "T-001")], first[("task_completed", "T-002")])
    assert first[("task_started", "T-005")] > max(first[("task_completed", "T-003")], first[("task_completed", "T-004")])
    # Two different agents shared wave 1.
    agents_w1 = {e["instance_id"] for e in ev if e["event_type"] == "task_started" and e["display_id"] in ("T-001", "T-002")}
    assert len(agents_w1) == 2
    run = _recount_ok(migrated, ex)
    assert run == {"total_tasks": 5, "completed_tasks": 5, "failed_tasks": 0, "skipped_tasks": 0}
    _no_overlapping_attempts(ev)


def _git(repo: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, "GIT_CONFIG_NOSYSTEM": "1",
           "HOME": str(repo.parent), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def test_failing_task_retries_with_restores_then_fails_and_skips_dependents(cli, migrated, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "kept.txt").write_text("original\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "start")
    # T-002 scribbles on out.txt, then fails the same way every time.
    tasks = [task("T-001", command="echo one > one.txt", files=[{"path": "one.txt", "op": "CREATE"}]),
             task("T-002", command="echo partial >> out.txt; echo 'disk quota exceeded' >&2; exit 3",
                  files=[{"path": "out.txt", "op": "CREATE"}]),
             task("T-003", ["T-002"], command="true"), task("T-004", ["T-003"], command="true"),
             task("T-005", ["T-001"], command="echo five > five.txt")]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=2)
    cfg = {**FAST, "maxRetries": 2}
    r = cli("run", "exec", ex, "--jobs", "2", "--repo", str(repo), "--checkpoints", "--config", json.dumps(cfg),
            timeout=120)
    assert r.returncode == 1, r.stderr  # the run failed
    ev = _events(migrated, ex)
    t2 = [e for e in ev if e["display_id"] == "T-002"]
    failed = [e for e in t2 if e["event_type"] == "task_failed"]
    assert len(failed) == 3
    assert [json.loads(e["context"])["error"] for e in failed] == ["disk quota exceeded"] * 3
    assert [json.loads(e["context"])["exit_code"] for e in failed] == [3, 3, 3]
    # A restore after each failed attempt, before the next attempt starts.
    kinds = [e["event_type"] for e in t2 if e["event_type"] in ("task_started", "task_failed", "checkpoint_restored")]
    assert kinds == ["task_started", "task_failed", "checkpoint_restored", "task_failed", "checkpoint_restored",
                     "task_failed", "checkpoint_restored"]
    assert not (repo / "out.txt").exists()  # its partial output was rolled back
    assert (repo / "one.txt").read_text() == "one\n" and (repo / "five.txt").exists()  # neighbours' work kept
    statuses = dict(seed.query(migrated, "SELECT t.display_id, a.status FROM wave_task_assignments a "
                                         "JOIN tasks t ON t.id = a.task_id"))
    assert statuses == {"T-001": "completed", "T-002": "failed", "T-003": "skipped", "T-004": "skipped",
                        "T-005": "completed"}
    assert _recount_ok(migrated, ex) == {"total_tasks": 5, "completed_tasks": 2, "failed_tasks": 1, "skipped_tasks": 2}
    sia = json.loads(cli("log", "failures", ex, "--json", check=True).stdout)
    assert len(sia) == 1 and sia[0]["task"] == "T-002" and sia[0]["failure_count"] == 3
    assert sia[0]["sia_triggered"] is True and sia[0]["no_progress"] is True


def _worker(migrated: Path, ex: str, cfg: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "buildctl", "agent", "work", ex, "--db", str(migrated), "--config",
                             json.dumps(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (this sandbox's init does not reap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
def test_sigkilled_worker_is_marked_stuck_and_its_task_runs_again_elsewhere(cli, migrated, tmp_path):
    marks, gate = tmp_path / "marks", tmp_path / "gate"
    marks.mkdir()
    # Each attempt leaves a file named after its pid and runs until the gate opens, so that
    # the survivors' attempts are certainly still running when the victim's is checked.
    cmd = f"sh -c 'echo $$ > {marks}/$$; while [ ! -e {gate} ]; do sleep 0.05; done'"
    tasks = [task(f"T-00{i}", command=cmd) for i in range(1, 4)]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=3)
    workers = [_worker(migrated, ex, FAST) for _ in range(3)]
    try:
        _sigkill_scenario(cli, migrated, ex, marks, gate, workers)
    finally:
        gate.touch()
        for w in workers:  # a failed assertion must not leave workers polling forever
            if w.poll() is None:
                w.kill()
                w.wait()


def _sigkill_scenario(cli, migrated, ex, marks, gate, workers):
    _wait(lambda: seed.scalar(migrated, "SELECT count(*) FROM wave_task_assignments WHERE status = 'running'") == 3,
          what="three running tasks")
    _wait(lambda: len(list(marks.iterdir())) == 3, what="three task processes")
    victim = workers[0]
    attempts = set(marks.iterdir())
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # Its task dies with it (the worker's watcher sees its lifeline close); the other two
    # attempts run on.
    _wait(lambda: sum(_alive(int(p.name)) for p in attempts) == 2, what="the killed worker's task to die")
    time.sleep(0.5)
    assert sum(_alive(int(p.name)) for p in attempts) == 2
    # Mark it stale; the task goes back to pending and a surviving worker runs it again.
    time.sleep(2)  # silent for longer than the threshold below
    r = cli("agent", "stale", "--mark", "--threshold", "2s", "--json", check=True)
    marked = [a["instance_id"] for a in json.loads(r.stdout)]
    assert len(marked) == 1  # the killed one; the live workers heartbeat every 200 ms
    victim_agent = marked[0]
    gate.touch()
    for w in workers[1:]:
        w.wait(timeout=60)
    assert seed.scalar(migrated, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "completed"
    ev = _events(migrated, ex)
    assert sum(e["event_type"] == "task_started" for e in ev) == 4  # three tasks, one run twice
    _no_overlapping_attempts(ev)
    _recount_ok(migrated, ex)
    assert seed.scalar(migrated, "SELECT status FROM build_agent_instances WHERE instance_id = ?", (victim_agent,)) == "stuck"


def test_two_hundred_true_tasks_over_ten_waves_with_four_jobs(cli, migrated, tmp_path):
    tasks = []
    for w in range(10):
        for i in range(20):
            deps = [f"T-{w - 1}-00"] if w else []
            tasks.append(task(f"T-{w}-{i:02d}", deps, command="true"))
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=4)
    r = cli("run", "exec", ex, "--jobs", "4", timeout=300)
    assert r.returncode == 0, r.stderr
    run = _recount_ok(migrated, ex)
    assert run == {"total_tasks": 200, "completed_tasks": 200, "failed_tasks": 0, "skipped_tasks": 0}
    assert seed.scalar(migrated, "SELECT count(*) FROM parallel_execution_waves WHERE execution_id = ? AND status = 'completed'",
                   (ex,)) == 10


def _exec_running(cli, tmp_path, env, jobs: int, then: str) -> tuple[str, subprocess.Popen, list[int]]:
    """`run exec --jobs N` on N tasks, once all N run: each task writes its shell's pid,
    then runs ``then``. Returns the run, the `run exec` process and the tasks' pids."""
    pids = tmp_path / "pids"
    pids.mkdir()
    tasks = [task(f"T-00{i}", command=f"echo $$ > {pids}/{i}; {then}") for i in range(1, jobs + 1)]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=jobs)
    proc = subprocess.Popen(buildctl_executable() + ["run", "exec", ex, "--jobs", str(jobs), "--config", json.dumps(FAST)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: len(list(pids.iterdir())) == jobs, what=f"{jobs} running tasks")
    return ex, proc, [int(p.read_text()) for p in pids.iterdir()]


@pytest.mark.slow
def test_run_cancel_stops_the_workers_children_and_leaves_no_process(cli, migrated, tmp_path, env):
    ex, proc, task_pids = _exec_running(cli, tmp_path, env, 2, "exec sleep 60")
    t0 = time.time()
    cli("run", "cancel", ex, check=True)
    out, err = proc.communicate(timeout=30)
    took = time.time() - t0
    assert proc.returncode == 1, err
    assert took < 15, f"run exec took {took:.1f}s to stop after the cancel"
    for pid in task_pids:
        assert not _alive(pid), pid
    assert seed.scalar(migrated, "SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "cancelled"
    assert seed.scalar(migrated, "SELECT count(*) FROM build_agent_instances WHERE status IN ('running','idle','initializing')") == 0


def test_run_exec_workers_are_its_children_each_named_by_its_own_agent(cli, migrated, tmp_path, env):
    """`run exec` forks its first worker, which forks the others (issue 14): each is still
    `run exec`'s direct child, the leader of its own session, with a command line `… -m
    buildctl agent work EXEC --agent ID` naming its own registered agent, the name a started
    worker has, and stderr of its own."""
    from test_reliability import children_of

    ex, proc, _ = _exec_running(cli, tmp_path, env, 4, "sleep 1")
    try:
        workers = {}
        for pid in children_of(proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
            if argv[1:5] == ["-m", "buildctl", "agent", "work"]:
                assert argv[5] == ex and argv.count("--agent") == 1, argv
                workers[argv[argv.index("--agent") + 1]] = pid
        agents = {r["instance_id"] for r in seed.rows(
            migrated, "SELECT instance_id FROM build_agent_instances WHERE execution_id = ?", (ex,))}
        assert len(workers) == 4 and set(workers) == agents, (workers, agents)
        assert all(os.getsid(pid) == pid for pid in workers.values())
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in workers.values()}
        assert len(names) == 1 and "python" in names.pop(), names  # as a started worker is named
        stderrs = {os.stat(f"/proc/{pid}/fd/2").st_ino for pid in workers.values()}
        assert len(stderrs) == 4
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    _recount_ok(migrated, ex)


@pytest.mark.parametrize("words", [["x"], ["python3", "-m", "buildctl", "agent", "work", "ex_" + "a" * 12, "--agent",
                                     "ag_" + "b" * 12, "--repo", "/a folder/with spaces/" + "c" * 300]])
def test_set_command_line_gives_a_process_any_command_line(words):
    """What a forked worker shows in /proc/PID/cmdline, `ps` and `pgrep -f`: exactly the words
    it was given, shorter or longer than its own (prctl PR_SET_MM_MAP), then the same length
    again in place (a peer forked from it naming its own agent)."""
    code = ("import sys; from buildctl import worker\n"
            "words = sys.argv[1:]\n"
            "ok = worker.set_command_line(words)\n"
            "first = open('/proc/self/cmdline', 'rb').read()\n"
            "again = worker.set_command_line([w.upper() for w in words])\n"
            "second = open('/proc/self/cmdline', 'rb').read()\n"
            "import json; print(json.dumps([ok, again, first.decode(), second.decode()]))\n")
    out = subprocess.run([sys.executable, "-c", code, *words], capture_output=True, text=True, check=True).stdout
    ok, again, first, second = json.loads(out)
    assert ok and again, out
    assert first == "\0".join(words) + "\0"
    assert second == "\0".join(w.upper() for w in words) + "\0"


def test_a_worker_run_exec_says_nothing_to_stands_down_without_a_write(migrated, tmp_path):
    """A worker started by `run exec` waits for its word; the go pipe's end without one (its
    agent was never registered) makes it leave at once, exit 0, silent, the database untouched."""
    from conftest import snapshot

    from buildctl.worker import FORK_GO_ENV

    ex = seed.scalar(migrated, "SELECT execution_id FROM task_list_execution_runs LIMIT 1") or "ex_000000000000"
    before = snapshot(migrated)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "buildctl", "agent", "work", ex, "--agent", "ag_000000000000"],
                            env={**os.environ, "BUILDCTL_DB": str(migrated), FORK_GO_ENV: str(read_end)},
                            pass_fds=(read_end,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(read_end)
    time.sleep(0.2)
    assert proc.poll() is None  # waiting for its word
    os.close(write_end)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, "", "")
    assert snapshot(migrated) == before


def test_run_exec_starts_its_first_worker_anew_where_it_cannot_fork():
    """No process to be had for the fork (EAGAIN): Zygote.fork gives None, so that the pool
    starts the worker as a new process, and leaves no descriptor open behind it."""
    code = ("import os\n"
            "from buildctl import executor\n"
            "def refuse():\n"
            "    raise BlockingIOError(11, 'Resource temporarily unavailable')\n"
            "before = sorted(os.listdir('/proc/self/fd'))\n"
            "os.fork = refuse\n"
            "print(executor.Zygote.fork(3, serve=None), before == sorted(os.listdir('/proc/self/fd')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "True"], out


def test_workers_of_a_run_that_ended_before_their_agents_were_registered_stand_down(cli, migrated, tmp_path):
    """The race `run exec`'s own check cannot close: the run ends after the check, before the
    agents are registered. The first worker, started before the registration, is told
    nothing and leaves; execute() returns with nothing registered, nothing written and no
    worker left."""
    from conftest import snapshot
    from test_reliability import children_of

    from buildctl import executor

    ex = _start(cli, tmp_path, [task("T-001"), task("T-002")])
    cli("run", "cancel", ex, check=True)
    before = snapshot(migrated)
    result = executor.execute(str(migrated), ex, jobs=3, config=FAST)
    assert result.status == "cancelled" and result.worker_errors == [] and result.worker_codes == []
    assert snapshot(migrated) == before
    for pid in children_of(os.getpid()):  # not even a zombie: it was waited for
        try:
            assert ex.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
        except FileNotFoundError:
            pass


def test_a_refused_run_exec_leaves_no_worker_behind(cli, migrated):
    """`run exec` forks its first worker before it opens the database; refused after that (no
    such run), it must not leave that process behind, nor write anything."""
    from conftest import assert_refused, snapshot

    before = snapshot(migrated)
    missing = "ex_" + os.urandom(6).hex()
    assert_refused(cli("run", "exec", missing, "--jobs", "3"), code=4)
    assert snapshot(migrated) == before
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert missing.encode() not in cmdline.read_bytes(), cmdline
        except OSError:
            pass  # gone meanwhile


def test_agent_spawn_runs_a_command_as_an_agent_and_passes_its_exit_code(cli, migrated, tmp_path):
    tasks = [task("T-001"), task("T-002", ["T-001"])]
    ex = _start(cli, tmp_path, tasks)
    # The barrier holds for scripts too: T-002 cannot start before wave 1 ended.
    early = cli("agent", "spawn", ex, "--task", "T-002", "--", "true")
    assert early.returncode == 5 and "wave 1 has not ended" in early.stderr
    bad = cli("agent", "spawn", ex, "--task", "T-001", "--config", '{"maxRetries": 0}', "--",
              "sh", "-c", "echo out; echo broken >&2; exit 7")
    assert bad.returncode == 7
    assert "out" in bad.stdout and "broken" in bad.stderr  # the command's output passes through
    ok_ex = _start(cli, tmp_path, [task("T-001"), task("T-002", ["T-001"])], name="second")
    good = cli("agent", "spawn", ok_ex, "--task", "T-001", "--", "sh", "-c", "echo hello")
    assert good.returncode == 0 and good.stdout.strip() == "hello"
    st = dict(seed.query(migrated, "SELECT execution_id, status FROM build_agent_instances"))
    assert sorted(st.values()) == ["completed", "failed"]
    assert seed.scalar(migrated, "SELECT a.status FROM wave_task_assignments a JOIN tasks t ON t.id = a.task_id "
                             "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
                             "WHERE w.execution_id = ? AND t.display_id = 'T-001'", (ok_ex,)) == "completed"
    missing = cli("agent", "spawn", ok_ex, "--task", "T-002", "--", "/no/such/program")
    assert missing.returncode == 127


def test_first_sigterm_lets_the_current_task_finish(cli, migrated, tmp_path):
    tasks = [task("T-001", command="sleep 1"), task("T-002", command="sleep 1")]
    ex = _start(cli, tmp_path, tasks, max_parallel_agents=1)
    w = _worker(migrated, ex, FAST)
    _wait(lambda: seed.scalar(migrated, "SELECT count(*) FROM wave_task_assignments WHERE status = 'running'") == 1,
          what="a running task")
    w.send_signal(signal.SIGTERM)
    w.wait(timeout=30)
    assert w.returncode == 0
    rows = dict(seed.query(migrated, "SELECT t.display_id, a.status FROM wave_task_assignments a "
                                     "JOIN tasks t ON t.id = a.task_id"))
    assert sorted(rows.values()) == ["completed", "pending"]  # finished its task, took no new one


def test_refused_executor_commands_change_nothing(cli, migrated, tmp_path):
    from conftest import assert_refused, snapshot

    ex = _start(cli, tmp_path, [task("T-001"), task("T-002", ["T-001"])])
    before = snapshot(migrated)
    cases = [
        (["agent", "spawn", ex, "--task", "T-002", "--", "true"], 5),      # wave 1 has not ended
        (["agent", "spawn", ex, "--task", "T-404", "--", "true"], 4),      # no such task
        (["agent", "spawn", "ex_nope", "--", "true"], 4),                  # no such run
        (["agent", "work", "ex_nope"], 4),
        (["agent", "work", ex, "--repo", str(tmp_path / "missing")], 2),
        (["agent", "work", ex, "--config", '{"maxRetries": -1}'], 3),
        (["run", "exec", ex, "--config", "not json"], 3),
        (["run", "exec", ex, "--repo", str(tmp_path / "missing")], 2),
        (["run", "exec", ex, "--jobs", "0"], 2),
        (["run", "exec", "ex_nope"], 4),
    ]
    for args, code in cases:
        assert_refused(cli(*args), code=code)
        assert snapshot(migrated) == before, args
    cli("run", "cancel", ex, check=True)
    ended = snapshot(migrated)
    assert_refused(cli("run", "exec", ex), code=5, contains="already ended")
    assert snapshot(migrated) == ended
