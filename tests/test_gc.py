"""`buildctl gc`: retention, stale agents, never an active run, batches, lock, dry run."""

from __future__ import annotations

import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import time

import pytest

import seed
from conftest import assert_refused, buildctl_executable, snapshot

pytestmark = pytest.mark.engines

NEVER = 100 * 365 * 86400.0  # a stale threshold nothing reaches


def _heartbeats(conn, instance_id, ages_s):
    conn.executemany(
        f"INSERT INTO agent_heartbeats (instance_id, timestamp, status) VALUES (?, {seed.dialect(conn).ago('?')}, 'running')",
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
    conn = seed.connect(path)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def test_heartbeats_older_than_the_cutoff_go_whatever_their_run_and_dry_run_counts_the_same(cli, migrated):
    conn = _seed_two_runs(migrated)
    ages = [60, 3600, 23 * 3600, 25 * 3600, 48 * 3600, 30 * 86400]
    _heartbeats(conn, "ag_ended", ages)
    _heartbeats(conn, "ag_live", ages)  # an active run: the 24-hour cut-off all the same
    conn.close()
    last_heartbeat = _count(migrated, "SELECT last_heartbeat FROM build_agent_instances WHERE instance_id='ag_live'")
    before = snapshot(migrated)
    dry = cli("gc", "--dry-run", "--json", check=True)
    assert snapshot(migrated) == before
    dry_counts = {s["step"]: s["count"] for s in json.loads(dry.stdout)["steps"]}
    assert dry_counts["heartbeats"] == 6
    real = cli("gc", "--json", "--batch-size", "2", check=True)
    counts = {s["step"]: s["count"] for s in json.loads(real.stdout)["steps"]}
    assert counts["heartbeats"] == dry_counts["heartbeats"] == 6
    conn = seed.connect(migrated)
    for agent in ("ag_ended", "ag_live"):
        ages_s = conn.execute(f"SELECT {seed.dialect(conn).age_s('timestamp')} FROM agent_heartbeats WHERE instance_id=? "
                              "ORDER BY timestamp DESC", (agent,)).fetchall()
        assert [round(a / 3600) for (a,) in ages_s] == [0, 1, 23], agent
    conn.close()
    # Staleness reads the agent's own column, which gc leaves alone: the live agent is not stale.
    assert _count(migrated, "SELECT last_heartbeat FROM build_agent_instances WHERE instance_id='ag_live'") == last_heartbeat
    assert {s["step"]: s["count"] for s in json.loads(real.stdout)["steps"]}["stale_agents"] == 0


@pytest.mark.sqlite_only(reason="only SQLite lets a TEXT PRIMARY KEY hold NULL")
def test_an_agent_row_with_a_null_id_in_an_active_run_does_not_stop_heartbeat_gc(migrated):
    """SQLite lets a TEXT PRIMARY KEY hold NULL; a `NOT IN` over such a column is never true."""
    from buildctl import gc, storage

    conn = _seed_two_runs(migrated)
    conn.execute("INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status) "
                 "VALUES (NULL, 'ex_live', 1, 'idle')")
    _heartbeats(conn, "ag_ended", [25 * 3600, 48 * 3600])
    conn.close()
    with storage.connect(str(migrated)) as db:
        report = gc.collect(db, stale_after_s=NEVER)
    assert {s.name: s.count for s in report.steps}["heartbeats"] == 2
    assert _count(migrated, "SELECT count(*) FROM agent_heartbeats") == 0


@pytest.mark.sqlite_only(reason="SQLite's WAL truncation; on both engines, the heartbeats of an active run go "
                                 "(test_heartbeats_older_than_the_cutoff_go_whatever_their_run...)")
def test_400k_expired_heartbeats_of_an_active_run_are_deleted(migrated):
    """Issue 11's acceptance: the rows of a running run are no exception, and none is kept
    by a rule that each batch would have to re-read."""
    from buildctl import gc, storage

    conn = _seed_two_runs(migrated)
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 399999) "
                 "INSERT INTO agent_heartbeats (instance_id, timestamp, status) "
                 "SELECT 'ag_live', strftime('%Y-%m-%d %H:%M:%f', 'now', '-2 days', printf('+%d seconds', i / 10)), "
                 "'running' FROM n")
    conn.execute("COMMIT")
    _heartbeats(conn, "ag_live", [60, 3600])  # within the 24 hours: kept
    conn.close()
    with storage.connect(str(migrated)) as db:
        report = gc.collect(db, stale_after_s=NEVER)
        # Nobody else was using the database: the WAL ends copied and truncated.
        assert os.path.getsize(str(migrated) + "-wal") == 0
    assert report.ok, report.as_dict()
    assert {s.name: s.count for s in report.steps}["heartbeats"] == 400_000
    assert "wal truncated" in {s.name: s for s in report.steps}["optimize"].details[0]
    assert _count(migrated, "SELECT count(*) FROM agent_heartbeats WHERE instance_id='ag_live'") == 2
    assert _count(migrated, "SELECT status FROM task_list_execution_runs WHERE execution_id='ex_live'") == "running"


@pytest.mark.sqlite_only(reason="reads SQLite's EXPLAIN QUERY PLAN")
@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "after-analyze"])
def test_each_delete_batch_reaches_its_rows_through_an_index_and_reads_no_kept_row(migrated, analyzed):
    """Constant cost per batch, read from EXPLAIN QUERY PLAN before and after ANALYZE (gc's
    PRAGMA optimize may run it): the batch's rows are a range of a covering index — every
    entry read is deleted, none is fetched to be tested and kept — then each is deleted by
    its rowid; no full scan, no temporary b-tree, no other table read row by row."""
    from buildctl import storage
    from buildctl.storage import query_text

    conn = _seed_two_runs(migrated)
    conn.execute("BEGIN")
    _heartbeats(conn, "ag_ended", range(0, 200_000, 100))
    _heartbeats(conn, "ag_live", range(0, 200_000, 100))
    conn.executemany("INSERT INTO task_execution_log (execution_id, timestamp, event_type, message) "
                     "VALUES (?, datetime('now', '-60 days'), 'info', 'm')", [(ex,) for ex in ("ex_ended", "ex_live") * 500])
    conn.execute("COMMIT")
    if analyzed:
        conn.execute("ANALYZE")
    conn.close()
    runs_by_key = "SEARCH r USING INDEX sqlite_autoindex_task_list_execution_runs_1 (execution_id=?)"
    cases = {
        "gc_delete_heartbeats": ({"cutoff_offset": "-86400.000 seconds", "batch_size": 100}, "agent_heartbeats",
                                 {"idx_heartbeats_timestamp (timestamp<?)"}),
        "gc_delete_logs": ({"execution_id": "ex_ended", "batch_size": 100}, "task_execution_log",
                           {"idx_exec_log_execution (execution_id=?)", "idx_exec_log_lane_task (execution_id=?)"}),
    }
    with storage.connect(str(migrated)) as db:
        for name, (params, table, ranges) in cases.items():
            plan = [r["detail"] for r in db.query("EXPLAIN QUERY PLAN " + query_text(name), params)]
            reads = [d for d in plan if d.startswith(("SCAN", "SEARCH"))]
            by_rowid = f"SEARCH {table} USING INTEGER PRIMARY KEY (rowid=?)"
            inner = [d for d in reads if d not in (by_rowid, runs_by_key)]
            assert by_rowid in reads, (name, plan)
            assert len(inner) == 1 and " USING COVERING INDEX " in inner[0] \
                and inner[0].split(" USING COVERING INDEX ")[1] in ranges, (name, plan)
            assert not [d for d in plan if "TEMP B-TREE" in d], (name, plan)


@pytest.mark.sqlite_only(reason="the database's files and the lock file beside them")
def test_dry_run_takes_no_lock_and_leaves_the_disk_as_it_was(migrated):
    from buildctl import gc, storage

    conn = _seed_two_runs(migrated)
    _heartbeats(conn, "ag_ended", [90000])
    conn.close()

    def disk():
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in migrated.parent.iterdir()}

    before, rows = disk(), snapshot(migrated)
    db = storage.connect(str(migrated))
    with gc.gc_lock(db, dry_run=True):
        report = gc.collect(db, dry_run=True)
    db.close()
    assert {s.name: s.count for s in report.steps}["heartbeats"] == 1
    assert disk() == before
    assert snapshot(migrated) == rows
    # A real gc takes the lock beside the database file.
    db = storage.connect(str(migrated))
    with gc.gc_lock(db):
        assert os.path.exists(str(migrated) + ".gc.lock")
    db.close()


def test_custom_retention_durations(cli, migrated):
    conn = _seed_two_runs(migrated)
    _heartbeats(conn, "ag_ended", [30, 100, 1000])
    conn.close()
    out = json.loads(cli("gc", "--keep-heartbeats", "90s", "--json", check=True).stdout)
    assert {s["step"]: s["count"] for s in out["steps"]}["heartbeats"] == 2


def test_logs_of_ended_runs_go_and_a_running_run_keeps_every_row(cli, migrated):
    conn = _seed_two_runs(migrated)
    seed.seed_run(conn, "ex_recent", status="failed", run_number=3)
    for ex in ("ex_ended", "ex_live", "ex_recent"):
        conn.executemany("INSERT INTO task_execution_log (execution_id, timestamp, event_type, message) "
                         f"VALUES (?, {seed.dialect(conn).ago('?')}, 'info', ?)", [(ex, "-60 days", f"m{i}") for i in range(7)])
    # ended 10 days ago: its log is kept (30 days)
    conn.execute(f"UPDATE task_list_execution_runs SET completed_at = {seed.dialect(conn).ago('?')} "
                 "WHERE execution_id = 'ex_recent'", ("-10 days",))
    conn.close()
    out = json.loads(cli("gc", "--batch-size", "3", "--json", check=True).stdout)
    assert {s["step"]: s["count"] for s in out["steps"]}["logs"] == 7
    assert _count(migrated, "SELECT count(*) FROM task_execution_log WHERE execution_id='ex_ended'") == 0
    assert _count(migrated, "SELECT count(*) FROM task_execution_log WHERE execution_id='ex_live'") == 7
    assert _count(migrated, "SELECT count(*) FROM task_execution_log WHERE execution_id='ex_recent'") == 7


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


def test_second_gc_exits_cleanly_while_one_holds_the_lock(cli, migrated, engine):
    # SQLite: gc's lock file, held for the whole gc; PostgreSQL: the advisory lock each batch takes.
    hold = "with g.gc_lock(db):" if engine == "sqlite" else "with db.write():\n    db.lock('gc')"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, buildctl.storage as s, buildctl.gc as g\n"
         f"db = s.connect({str(migrated)!r})\n"
         f"{hold}\n    print('locked', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = cli("gc")
        assert r.returncode == 0
        assert "another gc is running" in r.stderr
        if engine == "sqlite":
            assert str(holder.pid) in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # The lock died with its process: the next gc runs.
    r = cli("gc", "--json", check=True)
    assert json.loads(r.stdout)["ok"] is True


@pytest.mark.slow
def test_sigkill_in_the_middle_leaves_a_consistent_database_and_the_next_gc_finishes(migrated, engine):
    conn = _seed_two_runs(migrated)
    long_ago = seed.dialect(conn).utc("'2000-01-01 00:00:00'")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
                 f"INSERT INTO agent_heartbeats (instance_id, timestamp, status) SELECT 'ag_ended', {long_ago}, 'running' FROM n")
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
    if engine == "sqlite":
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
        claim = assignments.claim_next(db, ex, iid, start=True)
        held[name] = (iid, claim)
    return db, ex, held


def test_a_silent_agent_becomes_stuck_and_its_task_is_released(cli, migrated, tmp_path):
    from buildctl import assignments

    db, ex, held = _run_with_two_held_tasks(cli, migrated, tmp_path)
    with db.write():
        db.execute(f"UPDATE build_agent_instances SET last_heartbeat = {db.sql.ago('?')}", ("-120 seconds",))
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
    conn = seed.connect(migrated)
    conn.execute(f"UPDATE checkpoints SET created_at = {seed.dialect(conn).ago('?')} WHERE id = ?", ("-8 days", old))
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
    assert _count(migrated, "SELECT COUNT(*) FROM checkpoints") == 1
    assert _count(migrated, "SELECT id FROM checkpoints") == new


def test_unreachable_checkpoint_refs_fail_the_step_and_gc_exits_1(cli, migrated, tmp_path):
    import shutil

    from checkpoint_helpers import git_env, init_repo
    from conftest import EXAMPLES

    genv = git_env(tmp_path / "home")
    repo = init_repo(tmp_path / "repo", genv, files={"a.txt": "one\n"})
    ex = cli("run", "start", str(EXAMPLES / "five-tasks.toml"), check=True).out
    cp = cli("checkpoint", "create", ex, "--task", "T-001", "--repo", str(repo), check=True, extra_env=genv).out
    cli("run", "cancel", ex, check=True)
    conn = seed.connect(migrated)
    conn.execute(f"UPDATE checkpoints SET created_at = {seed.dialect(conn).ago('?')}", ("-8 days",))
    conn.close()
    shutil.rmtree(repo)
    r = cli("gc", "--json")
    # The step fails (so does gc: exit 1), naming the ref; the other steps still ran.
    assert r.returncode == 1, (r.returncode, r.stderr)
    out = json.loads(r.stdout)
    steps = {s["step"]: s for s in out["steps"]}
    assert out["ok"] is False
    assert steps["checkpoints"]["ok"] is False and steps["checkpoints"]["count"] == 1
    assert "could not be deleted" in steps["checkpoints"]["error"]
    assert any(f"refs/buildctl/checkpoints/{cp}" in d for d in steps["checkpoints"]["details"]), steps["checkpoints"]
    assert all(steps[name]["ok"] for name in ("heartbeats", "stale_agents", "logs", "optimize"))
    assert "gc step checkpoints failed" in r.stderr
    # The rows are gone, so the next gc has nothing left to fail on.
    assert cli("gc", "--json").returncode == 0


def test_gc_cli_dry_run_leaves_no_lock_file_and_the_default_batch_is_10000(cli, migrated):
    from buildctl import gc

    assert cli("gc", "--dry-run", "--json").returncode == 0
    assert not Path(str(migrated) + ".gc.lock").exists()
    assert gc.DEFAULT_BATCH_SIZE == 10_000
    assert "default 10,000" in cli("gc", "--help", check=True).stdout
