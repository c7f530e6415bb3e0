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
