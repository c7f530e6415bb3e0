"""Shell scripts drive tasks (issue 16): `agent spawn --task/--next`, `agent claim`, `agent done`,
`agent finish` moving tasks, and the README's loop (examples/script-agent/agent.sh) run as real
shell scripts, two at once, against one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildctl import exitcodes
from conftest import REPO, assert_refused, snapshot
from runhelpers import task, write_list

pytestmark = pytest.mark.engines

AGENT_SH = REPO / "examples" / "script-agent" / "agent.sh"


def _run(cli, tmp_path, tasks, **kw) -> str:
    return cli("run", "start", write_list(tmp_path / "list.json", tasks, **kw), check=True).out


def _assignment(cli, ex, display_id) -> dict:
    show = json.loads(cli("run", "show", ex, "--json", check=True).stdout)
    return next(t for w in show["waves"] for t in w["tasks"] if t["display_id"] == display_id)


# --------------------------------------------------------------------------- the commands

def test_spawn_task_claims_it_and_finish_completes_it(cli, migrated, tmp_path):
    ex = _run(cli, tmp_path, [task("A"), task("B", deps=["A"])])
    ag = cli("agent", "spawn", ex, "--task", "A", check=True).out
    assert _assignment(cli, ex, "A")["status"] == "running"
    cli("heartbeat", ag, "--status", "running", "--task", "A", "--progress", "50", check=True)
    cli("agent", "finish", ag, "--status", "completed", check=True)
    assert _assignment(cli, ex, "A")["status"] == "completed"
    show = json.loads(cli("run", "show", ex, "--json", check=True).stdout)
    assert show["completed_tasks"] == 1 and show["status"] == "running"
    ag2 = cli("agent", "spawn", ex, "--next", check=True).out
    cli("agent", "finish", ag2, "--status", "completed", check=True)
    assert json.loads(cli("run", "show", ex, "--json", check=True).stdout)["status"] == "completed"
    assert cli("doctor").returncode == 0


def test_next_json_says_what_to_run_and_claim_done_reuse_one_agent(cli, migrated, tmp_path):
    ex = _run(cli, tmp_path, [task("A", command="make a", validate="make check", timeout="90s"),
                              task("B", deps=["A"], command="make b")])
    doc = json.loads(cli("agent", "spawn", ex, "--next", "--json", check=True).stdout)
    assert {k: doc[k] for k in ("task", "command", "validate", "timeout_s", "attempt", "wave")} == \
        {"task": "A", "command": "make a", "validate": "make check", "timeout_s": 90.0, "attempt": 1, "wave": 1}
    ag = doc["agent"]
    # Holding A, the agent cannot claim another; B waits for A anyway.
    assert_refused(cli("agent", "claim", ag), exitcodes.CONFLICT, "still holds A")
    cli("agent", "done", ag, "--status", "completed", check=True)
    nxt = json.loads(cli("agent", "claim", ag, "--json", check=True).stdout)
    assert nxt["agent"] == ag and nxt["task"] == "B" and nxt["command"] == "make b"
    cli("agent", "done", ag, "--status", "completed", check=True)
    r = cli("agent", "claim", ag)
    assert_refused(r, exitcodes.NOTHING_LEFT, "nothing left")
    agent = json.loads(cli("agent", "show", ag, "--json", check=True).stdout)
    assert agent["status"] == "idle" and [a["task"] for a in agent["assignments"]] == ["A", "B"]


def test_a_failed_attempt_is_retried_after_its_backoff_then_fails_for_good(cli, migrated, tmp_path):
    ex = _run(cli, tmp_path, [task("A"), task("B", deps=["A"]), task("C")], max_parallel_agents=3)
    # A backoff long enough that the four commands before the "nothing yet" claim finish
    # inside it on a slow machine (on PostgreSQL each one is ~0.3 s of start-up there).
    ag = cli("agent", "spawn", ex, "--config", '{"maxRetries": 1, "retryBackoffMs": [6000]}', check=True).out
    assert json.loads(cli("agent", "claim", ag, "--json", check=True).stdout)["task"] == "A"
    cli("agent", "done", ag, "--status", "failed", "--error", "compiler crashed", check=True)
    assert _assignment(cli, ex, "A")["status"] == "pending"
    # The retry waits out its backoff: C (same wave, no backoff) comes first, then nothing yet.
    assert json.loads(cli("agent", "claim", ag, "--json", check=True).stdout)["task"] == "C"
    cli("agent", "done", ag, "--status", "completed", check=True)
    assert_refused(cli("agent", "claim", ag), exitcodes.NOTHING_YET, "backoff")
    retry = json.loads(cli("agent", "claim", ag, "--wait", "30s", "--json", check=True).stdout)
    assert retry["task"] == "A" and retry["attempt"] == 2
    cli("agent", "done", ag, "--status", "failed", "--error", "compiler crashed", check=True)
    show = json.loads(cli("run", "show", ex, "--json", check=True).stdout)
    assert (show["status"], show["failed_tasks"], show["skipped_tasks"], show["completed_tasks"]) == ("failed", 1, 1, 1)
    events = json.loads(cli("log", "tail", ex, "--type", "task_failed", "--json", check=True).stdout)
    assert [e["context"]["attempt"] for e in events] == [1, 2]
    assert events[0]["context"]["retry_after_s"] == 6 and events[0]["context"]["error"] == "compiler crashed"


def test_spawn_wait_blocks_until_the_barrier_opens(cli, migrated, tmp_path, env):
    ex = _run(cli, tmp_path, [task("A"), task("B", deps=["A"])])
    ag = cli("agent", "spawn", ex, "--task", "A", check=True).out
    from conftest import buildctl_executable

    waiter = subprocess.Popen(buildctl_executable() + ["agent", "spawn", ex, "--task", "B", "--wait", "60s"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting behind the barrier
    cli("agent", "done", ag, "--status", "completed", check=True)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert _assignment(cli, ex, "B")["instance_id"] == out.strip()


def test_a_wait_ends_when_the_run_has_nothing_left_or_is_cancelled(cli, migrated, tmp_path):
    ex = _run(cli, tmp_path, [task("A")])
    ag = cli("agent", "spawn", ex, "--task", "A", check=True).out
    cli("agent", "done", ag, "--status", "completed", check=True)
    assert_refused(cli("agent", "spawn", ex, "--next", "--wait", "60s"), exitcodes.NOTHING_LEFT)
    ex2 = _run(cli, tmp_path, [task("X"), task("Y", deps=["X"])], name="other")
    holder = cli("agent", "spawn", ex2, "--task", "X", check=True).out
    cli("run", "cancel", ex2, check=True)
    assert_refused(cli("agent", "spawn", ex2, "--next", "--wait", "60s"), exitcodes.CONFLICT, "cancelled")
    assert_refused(cli("heartbeat", holder), exitcodes.CONFLICT, "cancelled")


def test_every_refusal_is_one_line_with_its_exit_code_and_writes_nothing(cli, migrated, tmp_path):
    ex = _run(cli, tmp_path, [task("A"), task("B", deps=["A"]), task("C")], max_parallel_agents=1)
    holder = cli("agent", "spawn", ex, "--task", "A", check=True).out
    idle = cli("agent", "spawn", ex, check=True).out
    ended = cli("agent", "spawn", ex, check=True).out
    cli("agent", "finish", ended, "--status", "completed", check=True)
    cases = [
        (["agent", "spawn", ex, "--task", "A"], exitcodes.CONFLICT, "not pending"),      # held by another agent
        (["agent", "spawn", ex, "--task", "B"], exitcodes.CONFLICT, "wave 1 has not ended"),
        (["agent", "spawn", ex, "--task", "C"], exitcodes.CONFLICT, "max_parallel_agents"),
        (["agent", "spawn", ex, "--next"], exitcodes.NOTHING_YET, "max_parallel_agents"),
        (["agent", "spawn", ex, "--task", "A", "--next"], exitcodes.USAGE, "exclusive"),
        (["agent", "spawn", ex, "--wait"], exitcodes.USAGE, "--wait needs"),
        (["agent", "spawn", ex, "--task", "Z"], exitcodes.NOT_FOUND, "no task 'Z'"),
        (["agent", "claim", idle], exitcodes.NOTHING_YET, "max_parallel_agents"),
        (["agent", "claim", holder], exitcodes.CONFLICT, "still holds A"),
        (["agent", "claim", ended], exitcodes.CONFLICT, "has ended"),
        (["agent", "done", idle, "--status", "completed"], exitcodes.CONFLICT, "holds no task"),
        (["agent", "done", ended, "--status", "failed"], exitcodes.CONFLICT, "has ended"),
        (["agent", "done", holder, "--status", "exploded"], exitcodes.USAGE, None),
        (["agent", "finish", ended, "--status", "completed"], exitcodes.CONFLICT, "already ended"),
        (["agent", "claim", "ag_nope"], exitcodes.NOT_FOUND, None),
        (["agent", "claim", idle, "--wait", "-1s"], exitcodes.USAGE, None),
    ]
    before = snapshot(migrated)
    for argv, code, text in cases:
        assert_refused(cli(*argv), code, text)
        assert snapshot(migrated) == before, argv
    # The run ended: nothing left (10) for --next and claim, a refusal (5) for a named task.
    cli("agent", "finish", holder, "--status", "completed", check=True)
    for name in ("C", "B"):
        ag = cli("agent", "spawn", ex, "--task", name, check=True).out
        cli("agent", "done", ag, "--status", "completed", check=True)
    before = snapshot(migrated)
    assert_refused(cli("agent", "spawn", ex, "--next"), exitcodes.NOTHING_LEFT)
    assert_refused(cli("agent", "claim", idle), exitcodes.NOTHING_LEFT)
    assert_refused(cli("agent", "spawn", ex, "--task", "C"), exitcodes.CONFLICT)
    assert snapshot(migrated) == before


# --------------------------------------------------------------------------- the README's loop, as real scripts

def _script_env(env: dict, extra: dict | None = None) -> dict:
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", **(extra or {})}


def _counted(work: Path, name: str, body: str = "true") -> str:
    """A command that appends one line to counts/NAME each time it starts and, when done, to counts/NAME.done."""
    return f"echo $$ >> counts/{name}; {body} && echo ok >> counts/{name}.done"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_two_copies_of_the_readme_loop_run_one_list_together(cli, migrated, tmp_path, env):
    work = tmp_path / "work"
    (work / "counts").mkdir(parents=True)
    tasks = [
        task("fetch", command=_counted(work, "fetch", "sleep 0.3")),
        task("tools", command=_counted(work, "tools", "sleep 0.3")),
        task("build", deps=["fetch", "tools"], command=_counted(work, "build")),
        # A conflict pair: both update the same file, so never in the same wave.
        task("notes", deps=["fetch"], command=_counted(work, "notes"),
             files=[{"path": "release.txt", "op": "UPDATE", "confidence": 0.9}]),
        task("version", deps=["fetch"], command=_counted(work, "version"),
             files=[{"path": "release.txt", "op": "UPDATE", "confidence": 0.9}]),
        # Fails on its first attempt only.
        task("flaky", command=_counted(work, "flaky", "if [ -e flaky.once ]; then true; else touch flaky.once; false; fi")),
    ]
    ex = _run(cli, tmp_path, tasks, max_parallel_agents=2)
    e = _script_env(env, {"AGENT_CONFIG": '{"heartbeatIntervalMs": 1000, "staleAfterMs": 10000, "retryBackoffMs": [500]}'})
    copies = [subprocess.Popen(["sh", str(AGENT_SH), ex, str(work)], env=e, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in copies]
    assert [p.returncode for p in copies] == [0, 0], results
    show = json.loads(cli("run", "show", ex, "--json", check=True).stdout)
    assert show["status"] == "completed" and show["completed_tasks"] == 6, show
    counts = work / "counts"
    for name in ("fetch", "tools", "build", "notes", "version"):
        assert (_lines(counts / name), _lines(counts / f"{name}.done")) == (1, 1), name
    assert (_lines(counts / "flaky"), _lines(counts / "flaky.done")) == (2, 1)  # failed once, completed on its retry
    # Both copies worked, and the barrier held: nothing of a wave started before the wave before it ended.
    agents = {a["instance_id"] for a in json.loads(cli("agent", "list", ex, "--json", check=True).stdout)
              if a["status"] == "completed"}
    assert len(agents) == 2
    _assert_barrier(cli, ex)
    assert cli("doctor").returncode == 0


def _assert_barrier(cli, ex: str) -> None:
    events = json.loads(cli("log", "tail", ex, "--json", check=True).stdout)
    waves = {t["display_id"]: w["wave_number"] for w in json.loads(cli("run", "show", ex, "--json",
                                                                      check=True).stdout)["waves"] for t in w["tasks"]}
    ends: dict[int, str] = {}
    for e in events:
        if e["event_type"] in ("task_completed", "task_failed") and e["task"]:
            w = waves[e["task"]]
            ends[w] = max(ends.get(w, ""), e["timestamp"])
    for e in events:
        if e["event_type"] == "task_started":
            w = waves[e["task"]]
            if w > 1:
                assert e["timestamp"] >= ends[w - 1], (e["task"], e["timestamp"], ends[w - 1])


@pytest.mark.slow
def test_a_script_killed_mid_task_loses_it_to_the_other_copy(cli, migrated, tmp_path, env):
    work = tmp_path / "work"
    (work / "counts").mkdir(parents=True)
    ex = _run(cli, tmp_path, [task("slow", command=_counted(work, "slow", "sleep 4"))], max_parallel_agents=1)
    e = _script_env(env, {"AGENT_CONFIG": '{"heartbeatIntervalMs": 500, "staleAfterMs": 2500}'})
    first = subprocess.Popen(["sh", str(AGENT_SH), ex, str(work)], env=e, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while _lines(work / "counts" / "slow") == 0:  # the first copy is running the task
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the script, its heartbeat loop and the task, mid-task
    first.wait()
    second = subprocess.run(["sh", str(AGENT_SH), ex, str(work)], env=e, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert (_lines(work / "counts" / "slow"), _lines(work / "counts" / "slow.done")) == (2, 1)
    show = json.loads(cli("run", "show", ex, "--json", check=True).stdout)
    assert show["status"] == "completed"
    stuck = [a for a in json.loads(cli("agent", "list", ex, "--json", check=True).stdout) if a["status"] == "stuck"]
    assert len(stuck) == 1  # the killed copy, marked stuck by the other one's wait (the lease)
    assert cli("doctor").returncode == 0


def test_the_readme_shows_the_example_script_as_it_is():
    """The loop the README shows is examples/script-agent/agent.sh, which the tests above run."""
    script = AGENT_SH.read_text()
    readme = (REPO / "README.md").read_text()
    assert "```sh\n" + script[script.index("set -u"):] + "```" in readme
