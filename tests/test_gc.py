"""`buildctl gc`: retention, stale agents, never an active run, batches, lock, dry run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import seed
from conftest import assert_refused, buildctl_executable, snapshot


def _heartbeats(conn, instance_id, ages_s):
    conn.executemany(
        "INSERT INTO agent_heartbeats (instance_id, timestamp, status) VALUES (?, strftime('%Y-%m-%d %H:%M:%f','now', ?), 'running')",
        [(instance_id, f"-{a} seconds") for a in ages_s],
    )


def _seed_two_runs(path):
    conn = seed.connect(path)
    seed.seed_list(conn)
    seed.seed_run(conn, "ex_ended", status="completed", completed_at="2000-01-01 00:00:00")
    seed.seed_run(conn, "ex_live", status="running", run_number=2)
    seed.seed_agent(conn, "ag_ended", execution_id="ex_ended", status="completed", spawned_ago_s=10 * 86400, heartbeat_ago_s=5)
    seed.seed_agent(conn, "ag_live", execution_id="ex_live", status="running", spawned_ago_s=10 * 86400, heartbeat_ago_s=5)
    return conn


def _count(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def test_heartbeats_older_than_the_cutoff_go_and_dry_run_counts_the_same(cli, migrated):
    conn = _seed_two_runs(migrated)
    ages = [60, 3600, 23 * 3600, 25 * 3600, 48 * 3600, 30 * 86400]
    _heartbeats(conn, "ag_ended", ages)
    _heartbeats(conn, "ag_live", ages)  # an active run: kept whatever their age
    conn.close()
    before = snapshot(migrated)
    dry = cli("gc", "--dry-run", "--json", check=True)
    assert snapshot(migrated) == before
    dry_counts = {s["step"]: s["count"] for s in json.loads(dry.stdout)["steps"]}
    assert dry_counts["heartbeats"] == 3
    real = cli("gc", "--json", "--batch-size", "2", check=True)
    counts = {s["step"]: s["count"] for s in json.loads(real.stdout)["steps"]}
    assert counts["heartbeats"] == dry_counts["heartbeats"] == 3
    left = _count(migrated, "SELECT group_concat(CAST(round((julianday('now') - julianday(timestamp)) * 86400 / 3600) AS INT)) "
                            "FROM (SELECT timestamp FROM agent_heartbeats WHERE instance_id='ag_ended' ORDER BY timestamp DESC)")
    assert left == "0,1,23"
    assert _count(migrated, "SELECT count(*) FROM agent_heartbeats WHERE instance_id='ag_live'") == len(ages)


def test_custom_retention_durations(cli, migrated):
    conn = _seed_two_runs(migrated)
    _heartbeats(conn, "ag_ended", [30, 100, 1000])
    conn.close()
    out = json.loads(cli("gc", "--keep-heartbeats", "90s", "--json", check=True).stdout)
    assert {s["step"]: s["count"] for s in out["steps"]}["heartbeats"] == 2


def test_logs_of_ended_runs_go_and_a_running_run_keeps_every_row(cli, migrated):
    conn = _seed_two_runs(migrated)
    for ex in ("ex_ended", "ex_live"):
        conn.executemany("INSERT INTO task_execution_log (execution_id, timestamp, event_type, message) "
                         "VALUES (?, datetime('now', '-60 days'), 'info', ?)", [(ex, f"m{i}") for i in range(7)])
    conn.close()
    cli("gc", "--batch-size", "3", check=True)
    assert _count(migrated, "SELECT count(*) FROM task_execution_log WHERE execution_id='ex_ended'") == 0
    assert _count(migrated, "SELECT count(*) FROM task_execution_log WHERE execution_id='ex_live'") == 7


def test_quiet_prints_nothing_when_all_went_well(cli, migrated):
    r = cli("gc", "--quiet", check=True)
    assert r.stdout == "" and r.stderr == ""


@pytest.mark.parametrize("args", [["--keep-heartbeats", "soon"], ["--stale-after", "-5s"], ["--batch-size", "0"],
                                  ["--keep-logs", "10x"]])
def test_bad_options_are_refused_and_change_nothing(cli, migrated, args):
    conn = _seed_two_runs(migrated)
    _heartbeats(conn, "ag_ended", [90000])
    conn.close()
    before = snapshot(migrated)
    assert_refused(cli("gc", *args), code=2)
    assert snapshot(migrated) == before


def test_second_gc_exits_cleanly_while_one_holds_the_lock(cli, migrated, env):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, buildctl.storage as s, buildctl.gc as g\n"
         f"db = s.connect({str(migrated)!r})\n"
         "with g.gc_lock(db):\n    print('locked', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = cli("gc")
        assert r.returncode == 0
        assert "another gc is running" in r.stderr
        assert str(holder.pid) in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # The lock died with its process: the next gc runs.
    r = cli("gc", "--json", check=True)
    assert json.loads(r.stdout)["ok"] is True


@pytest.mark.slow
def test_sigkill_in_the_middle_leaves_a_consistent_database_and_the_next_gc_finishes(migrated):
    conn = _seed_two_runs(migrated)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO agent_heartbeats (instance_id, timestamp, status) VALUES ('ag_ended', '2000-01-01 00:00:00', 'running')",
                     [()] * 200_000)
    conn.execute("COMMIT")
    conn.close()
    env = {**os.environ, "BUILDCTL_DB": str(migrated)}
    proc = subprocess.Popen(buildctl_executable() + ["gc", "--batch-size", "500"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait until gc has deleted something, then kill it mid-way.
    deadline = time.time() + 30
    while time.time() < deadline:
        left = _count(migrated, "SELECT count(*) FROM agent_heartbeats")
        if left < 200_000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _count(migrated, "SELECT count(*) FROM agent_heartbeats")
    assert 0 < left < 200_000, left  # killed part-way
    assert left % 500 == 0  # whole batches only
    assert _count(migrated, "PRAGMA integrity_check") == "ok"
    done = subprocess.run(buildctl_executable() + ["gc", "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert {s["step"]: s["count"] for s in json.loads(done.stdout)["steps"]}["heartbeats"] == left
    assert _count(migrated, "SELECT count(*) FROM agent_heartbeats") == 0


def _run_with_two_held_tasks(cli, migrated, tmp_path):
    """A real run of the five-task example, two agents holding the two wave-1 tasks."""
    from buildctl import agents, assignments, storage

    from conftest import EXAMPLES

    ex = cli("run", "start", str(EXAMPLES / "five-tasks.toml"), check=True).out
    db = storage.connect(str(migrated))
    held = {}
    for name, retries in (("a", 3), ("b", 0)):
        iid = agents.spawn(db, ex, config={"maxRetries": retries})
        claim = assignments.claim_next(db, ex, iid)
        assignments.start(db, claim["assignment_id"], iid)
        held[name] = (iid, claim)
    return db, ex, held


def test_a_silent_agent_becomes_stuck_and_its_task_is_released(cli, migrated, tmp_path):
    from buildctl import assignments

    db, ex, held = _run_with_two_held_tasks(cli, migrated, tmp_path)
    with db.write():
        db.execute("UPDATE build_agent_instances SET last_heartbeat = datetime('now', '-120 seconds')")
    out = json.loads(cli("gc", "--json", check=True).stdout)
    step = {s["step"]: s for s in out["steps"]}["stale_agents"]
    assert step["count"] == 2 and set(step["details"]) == {held["a"][0], held["b"][0]}
    statuses = dict(db.execute("SELECT instance_id, status FROM build_agent_instances").fetchall())
    assert statuses == {held["a"][0]: "stuck", held["b"][0]: "stuck"}
    # Retries left: back to pending, nobody holds it. None left: failed, dependents skipped.
    a_status = db.one("SELECT status, instance_id FROM wave_task_assignments WHERE id = ?", (held["a"][1]["assignment_id"],))
    b_status = db.one("SELECT status FROM wave_task_assignments WHERE id = ?", (held["b"][1]["assignment_id"],))
    assert a_status == {"status": "pending", "instance_id": None}
    assert b_status["status"] == "failed"
    ctx = json.loads(db.scalar("SELECT error_context FROM build_agent_instances WHERE instance_id = ?", (held["a"][0],)))
    assert ctx["message"]
    rc = assignments.recount(db, ex)
    assert rc["ok"], rc
    db.close()
    # The fresh agent of a second gc is left alone: nothing stale now.
    again = json.loads(cli("gc", "--json", check=True).stdout)
    assert {s["step"]: s["count"] for s in again["steps"]}["stale_agents"] == 0


def test_checkpoint_ref_is_deleted_with_its_row(cli, migrated, tmp_path):
    from checkpoint_helpers import git, git_env, init_repo

    genv = git_env(tmp_path / "home")
    repo = init_repo(tmp_path / "repo", genv, files={"a.txt": "one\n"})
    from conftest import EXAMPLES

    ex = cli("run", "start", str(EXAMPLES / "five-tasks.toml"), check=True).out
    extra = {**genv}
    old = cli("checkpoint", "create", ex, "--task", "T-001", "--repo", str(repo), check=True, extra_env=extra).out
    new = cli("checkpoint", "create", ex, "--task", "T-002", "--repo", str(repo), check=True, extra_env=extra).out
    conn = sqlite3.connect(migrated)
    conn.execute("UPDATE checkpoints SET created_at = datetime('now', '-8 days') WHERE id = ?", (old,))
    conn.commit()
    conn.close()
    # While the run is active nothing goes, however old.
    cli("gc", "--repo", str(repo), check=True)
    assert len(git(repo, "for-each-ref", "refs/buildctl", env=genv).splitlines()) == 2
    cli("run", "cancel", ex, check=True)
    out = json.loads(cli("gc", "--json", check=True).stdout)  # no --repo: the recorded repository is used
    step = {s["step"]: s for s in out["steps"]}["checkpoints"]
    assert step["count"] == 1 and step["details"] == [f"refs/buildctl/checkpoints/{old}"]
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/buildctl", env=genv).split()
    assert refs == [f"refs/buildctl/checkpoints/{new}"]
    assert _count(migrated, "SELECT group_concat(id) FROM checkpoints") == new


def test_unreachable_checkpoint_repository_is_reported(cli, migrated, tmp_path):
    import shutil

    from checkpoint_helpers import git_env, init_repo
    from conftest import EXAMPLES

    genv = git_env(tmp_path / "home")
    repo = init_repo(tmp_path / "repo", genv, files={"a.txt": "one\n"})
    ex = cli("run", "start", str(EXAMPLES / "five-tasks.toml"), check=True).out
    cp = cli("checkpoint", "create", ex, "--task", "T-001", "--repo", str(repo), check=True, extra_env=genv).out
    cli("run", "cancel", ex, check=True)
    conn = sqlite3.connect(migrated)
    conn.execute("UPDATE checkpoints SET created_at = datetime('now', '-8 days')")
    conn.commit()
    conn.close()
    shutil.rmtree(repo)
    out = json.loads(cli("gc", "--json", check=True).stdout)
    step = {s["step"]: s for s in out["steps"]}["checkpoints"]
    assert step["count"] == 1
    assert any(cp in d and "could not reach" in d for d in step["details"]), step
