"""Agents: spawn, heartbeat, finish, list, show, stale (+ --mark) — issue 4.

Runs, waves and agents are seeded with raw SQL (tests/seed.py) so that these tests
do not depend on `run start`.
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

import seed
from buildctl import agents, agentstate, exitcodes
from buildctl.errors import Conflict, DatabaseError
from conftest import assert_refused, snapshot

pytestmark = pytest.mark.engines


@pytest.fixture
def lane(db):
    """A running run with two waves (T-001, T-002 | T-003) and one running agent."""
    ids = seed.seed_list(db, tasks=("T-001", "T-002", "T-003"))
    seed.seed_run(db)
    seed.seed_wave(db, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]], status="running")
    seed.seed_wave(db, wave_number=2, task_ids=[ids["T-003"]])
    seed.seed_agent(db, "ag_one", spawned_ago_s=10, heartbeat_ago_s=5)
    return ids


def agent_row(db, iid):
    return db.one("SELECT * FROM build_agent_instances WHERE instance_id = ?", (iid,))


# --------------------------------------------------------------------------- spawn

def test_spawn_prints_only_the_id_and_merges_config(cli, db, lane):
    r = cli("agent", "spawn", "ex_seed", "--config", '{"maxRetries": 5}', check=True)
    iid = r.stdout.strip()
    assert r.stdout == f"{iid}\n" and iid.startswith("ag_")
    row = agent_row(db, iid)
    assert row["status"] == "initializing"
    assert row["wave_number"] == 1  # the run's current wave
    assert json.loads(row["config"]) == {"maxRetries": 5, "heartbeatIntervalMs": 30000, "taskTimeoutMs": 300000,
                                         "validationTimeoutMs": 120000}
    assert row["last_heartbeat"] is None and row["spawned_at"]
    # With --task, the task is claimed and started for the new agent (issue 16): T-003 waits
    # behind wave 1, T-001 is taken.
    assert cli("agent", "spawn", "ex_seed", "--task", "T-003").returncode == exitcodes.CONFLICT
    claimed = agent_row(db, cli("agent", "spawn", "ex_seed", "--task", "T-001", check=True).stdout.strip())
    assert (claimed["status"], claimed["wave_number"], claimed["current_task_id"]) == ("running", 1, lane["T-001"])


def test_spawn_defaults_to_the_current_wave_and_default_config(db, lane):
    iid = agents.spawn(db, "ex_s")  # a prefix of the execution id
    row = agent_row(db, iid)
    assert row["wave_number"] == 1 and row["current_task_id"] is None
    assert json.loads(row["config"]) == agentstate.DEFAULT_CONFIG
    assert agent_row(db, agents.spawn(db, "ex_seed", wave=2))["wave_number"] == 2


SPAWN_REFUSALS = [
    (["ex_nope"], exitcodes.NOT_FOUND, "no execution matches 'ex_nope'"),
    (["ex_seed", "--wave", "7"], exitcodes.NOT_FOUND, "has no wave 7"),
    (["ex_seed", "--task", "T-999"], exitcodes.NOT_FOUND, "no task 'T-999'"),
    (["ex_seed", "--task", "T-003", "--wave", "1"], exitcodes.CONFLICT, "not wave 1"),
    (["ex_seed", "--config", "{nope"], exitcodes.INVALID_INPUT, "--config is not valid JSON"),
    (["ex_seed", "--config", "[1]"], exitcodes.INVALID_INPUT, "must be a JSON object"),
    (["ex_seed", "--config", '{"maxRetry": 1}'], exitcodes.INVALID_INPUT, "unknown --config key 'maxRetry'"),
    (["ex_completed"], exitcodes.CONFLICT, "is completed"),
    (["ex_failed"], exitcodes.CONFLICT, "is failed"),
    (["ex_cancelled"], exitcodes.CONFLICT, "is cancelled"),
]


def test_spawn_refusals_change_nothing(cli, db, migrated, lane):
    for n, status in enumerate(("completed", "failed", "cancelled"), start=2):
        seed.seed_run(db, execution_id=f"ex_{status}", run_number=n, status=status, completed_at="2026-01-01 00:00:00")
    before = snapshot(migrated)
    for args, code, text in SPAWN_REFUSALS:
        assert_refused(cli("agent", "spawn", *args), code=code, contains=text)
    assert snapshot(migrated) == before


def test_spawn_many_registers_all_or_none(db, migrated, lane):
    # `run exec` registers its workers' agents together, in one transaction.
    agents.spawn_many(db, "ex_seed", ["ag_w1", "ag_w2", "ag_w3"], config={"maxRetries": 1})
    rows = [agent_row(db, a) for a in ("ag_w1", "ag_w2", "ag_w3")]
    assert [(r["status"], r["wave_number"], json.loads(r["config"])["maxRetries"]) for r in rows] == \
        [("initializing", 1, 1)] * 3
    # A refusal part-way (the third id is taken) registers none of them.
    seed.seed_run(db, execution_id="ex_done", run_number=2, status="completed", completed_at="2026-01-01 00:00:00")
    before = snapshot(migrated)
    with pytest.raises(Exception) as refused:
        agents.spawn_many(db, "ex_seed", ["ag_w4", "ag_w5", "ag_w1"])
    assert "unique" in str(refused.value).lower() or "duplicate" in str(refused.value).lower(), refused.value
    assert snapshot(migrated) == before
    with pytest.raises(Conflict, match="is completed"):
        agents.spawn_many(db, "ex_done", ["ag_w6"])
    assert snapshot(migrated) == before


def test_spawn_task_not_in_this_run(db, lane):
    # A task of the list that no wave of this run holds.
    db.execute("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) "
               "VALUES ('tk_extra', 'T-004', 'tl_seed', 'extra', 'true', 9)")
    with pytest.raises(Exception, match="T-004 is not in execution ex_seed"):
        agents.spawn(db, "ex_seed", task="T-004")


# --------------------------------------------------------------------------- heartbeat

def test_heartbeat_writes_one_row_and_updates_the_agent(cli, db, lane):
    cli("heartbeat", "ag_one", "--status", "idle", "--task", "T-002", "--progress", "40", "--memory-mb", "128",
        "--cpu", "12.5", check=True)
    rows = db.query("SELECT * FROM agent_heartbeats WHERE instance_id = 'ag_one'")
    assert len(rows) == 1
    hb = rows[0]
    assert (hb["status"], hb["current_task_id"], hb["progress_percent"], hb["memory_usage_mb"], hb["cpu_percent"]) == \
        ("idle", lane["T-002"], 40, 128, 12.5)
    row = agent_row(db, "ag_one")
    assert row["status"] == "idle" and row["current_task_id"] == lane["T-002"]
    assert row["last_heartbeat"] == hb["timestamp"]  # one clock reading, one transaction


def test_heartbeat_pid_samples_memory_and_cpu(db, lane):
    out = agents.heartbeat(db, "ag_one", pid=os.getpid())
    hb = db.one("SELECT * FROM agent_heartbeats WHERE id = ?", (out["heartbeat_id"],))
    assert hb["memory_usage_mb"] > 1  # this pytest process
    assert hb["cpu_percent"] is not None and hb["cpu_percent"] >= 0
    # Explicit values win over the sample.
    out = agents.heartbeat(db, "ag_one", pid=os.getpid(), memory_mb=7)
    assert db.scalar("SELECT memory_usage_mb FROM agent_heartbeats WHERE id = ?", (out["heartbeat_id"],)) == 7


def test_a_stuck_agent_that_heartbeats_goes_back_to_running_with_a_warning(cli, db, lane):
    db.execute("UPDATE build_agent_instances SET status = 'stuck' WHERE instance_id = 'ag_one'")
    cli("heartbeat", "ag_one", check=True)
    assert agent_row(db, "ag_one")["status"] == "running"
    warn = db.query("SELECT * FROM task_execution_log WHERE event_type = 'warning' AND instance_id = 'ag_one'")
    assert len(warn) == 1 and "was stuck" in warn[0]["message"]
    # A second heartbeat is an ordinary one.
    cli("heartbeat", "ag_one", check=True)
    assert db.scalar("SELECT COUNT(*) FROM task_execution_log WHERE event_type = 'warning'") == 1


HEARTBEAT_REFUSALS = [
    (["ag_nope"], exitcodes.NOT_FOUND, "no agent matches 'ag_nope'"),
    (["ag_done"], exitcodes.CONFLICT, "has ended (completed)"),
    (["ag_one", "--progress", "101"], exitcodes.USAGE, "--progress"),
    (["ag_one", "--progress", "-1"], exitcodes.USAGE, "--progress"),
    (["ag_one", "--progress", "half"], exitcodes.USAGE, "not an integer"),
    (["ag_one", "--status", "completed"], exitcodes.USAGE, "--status"),
    (["ag_one", "--task", "T-999"], exitcodes.NOT_FOUND, "no task 'T-999'"),
    (["ag_one", "--pid", "0"], exitcodes.USAGE, "--pid"),
    (["ag_one", "--cpu", "-3"], exitcodes.USAGE, "--cpu"),
    (["ag_one", "--bogus"], exitcodes.USAGE, "No such option: --bogus"),
]


def test_heartbeat_refusals_change_nothing(cli, db, migrated, lane):
    seed.seed_agent(db, "ag_done", status="completed", spawned_ago_s=100, heartbeat_ago_s=50)
    before = snapshot(migrated)
    for args, code, text in HEARTBEAT_REFUSALS:
        assert_refused(cli("heartbeat", *args), code=code, contains=text)
    assert snapshot(migrated) == before


def test_heartbeat_for_a_process_that_does_not_exist(db, migrated, lane):
    before = snapshot(migrated)
    with pytest.raises(Exception, match="no process with pid"):
        agents.heartbeat(db, "ag_one", pid=2**22 + 12345)
    assert snapshot(migrated) == before


# --------------------------------------------------------------------------- finish

def test_finish_failed_keeps_an_error_context_and_refuses_a_second_finish(cli, db, migrated, lane):
    cli("agent", "finish", "ag_one", "--status", "failed", "--error", "compiler crashed", check=True)
    row = agent_row(db, "ag_one")
    assert row["status"] == "failed" and row["completed_at"]
    ctx = json.loads(row["error_context"])
    assert ctx["message"] == "compiler crashed" and set(ctx) == {"code", "message", "taskId", "timestamp"}
    assert ctx["timestamp"].endswith("Z")
    assert db.scalar("SELECT COUNT(*) FROM task_execution_log WHERE event_type = 'error' AND instance_id = 'ag_one'") == 1
    before = snapshot(migrated)
    assert_refused(cli("agent", "finish", "ag_one", "--status", "completed"), code=exitcodes.CONFLICT,
                   contains="already ended")
    assert_refused(cli("heartbeat", "ag_one"), code=exitcodes.CONFLICT)
    assert_refused(cli("agent", "finish", "ag_one", "--status", "running"), code=exitcodes.USAGE)
    assert_refused(cli("agent", "finish", "ag_one"), code=exitcodes.USAGE, contains="Missing option '--status'")
    assert snapshot(migrated) == before


def test_finish_releases_a_task_the_agent_still_held(db, lane):
    db.execute(f"UPDATE wave_task_assignments SET status = 'running', instance_id = 'ag_one', assigned_at = {db.sql.now} "
               "WHERE task_id = ?", (lane["T-001"],))
    db.execute("UPDATE build_agent_instances SET current_task_id = ? WHERE instance_id = 'ag_one'", (lane["T-001"],))
    out = agents.finish(db, "ag_one", "completed")
    assert [r["outcome"] for r in out["released"]] == ["pending"]
    assert db.scalar("SELECT status FROM wave_task_assignments WHERE task_id = ?", (lane["T-001"],)) == "pending"
    assert agent_row(db, "ag_one")["status"] == "completed"


# --------------------------------------------------------------------------- list / show

def test_list_and_show(cli, db, lane):
    seed.seed_run(db, execution_id="ex_other", run_number=2)
    seed.seed_agent(db, "ag_elsewhere", execution_id="ex_other", status="idle", spawned_ago_s=3)
    agents.heartbeat(db, "ag_one", progress=10)
    agents.heartbeat(db, "ag_one", progress=20)
    everything = json.loads(cli("agent", "list", "--json", check=True).stdout)
    assert [a["instance_id"] for a in everything] == ["ag_one", "ag_elsewhere"]
    mine = json.loads(cli("agent", "list", "ex_seed", "--json", check=True).stdout)
    assert [a["instance_id"] for a in mine] == ["ag_one"]
    assert mine[0]["config"] == {"maxRetries": 3} and mine[0]["spawned_at"].endswith("Z")
    idle = json.loads(cli("agent", "list", "--status", "idle", "--json", check=True).stdout)
    assert [a["instance_id"] for a in idle] == ["ag_elsewhere"]
    shown = json.loads(cli("agent", "show", "ag_o", "--json", check=True).stdout)
    assert shown["instance_id"] == "ag_one" and shown["heartbeat_count"] == 2
    assert [h["progress_percent"] for h in shown["recent_heartbeats"]] == [10, 20]  # oldest first
    table = cli("agent", "show", "ag_one", check=True).stdout
    assert "ag_one" in table and "heartbeats" in table
    assert_refused(cli("agent", "list", "--status", "sleeping"), code=exitcodes.USAGE)
    assert_refused(cli("agent", "show", "ag_nope"), code=exitcodes.NOT_FOUND)


# --------------------------------------------------------------------------- stale

@pytest.fixture
def ages(db):
    ids = seed.seed_list(db)
    seed.seed_run(db)
    seed.seed_wave(db, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]], status="running")
    seed.seed_agent(db, "ag_2min", spawned_ago_s=600, heartbeat_ago_s=120)
    seed.seed_agent(db, "ag_30s", spawned_ago_s=600, heartbeat_ago_s=30)
    seed.seed_agent(db, "ag_silent", status="initializing", spawned_ago_s=120, heartbeat_ago_s=None)
    seed.seed_agent(db, "ag_finished", status="completed", spawned_ago_s=600, heartbeat_ago_s=500)
    return ids


def test_stale_reports_old_and_never_heartbeated_agents(cli, ages):
    rows = json.loads(cli("agent", "stale", "--json", check=True).stdout)
    assert sorted(r["instance_id"] for r in rows) == ["ag_2min", "ag_silent"]
    # ag_silent never sent a heartbeat: it is judged by spawned_at (a query on
    # last_heartbeat alone would miss it).
    # A longer threshold leaves them all alone; a shorter one catches the 30 s agent.
    assert json.loads(cli("agent", "stale", "--threshold", "5m", "--json", check=True).stdout) == []
    short = json.loads(cli("agent", "stale", "--threshold", "20s", "--json", check=True).stdout)
    assert sorted(r["instance_id"] for r in short) == ["ag_2min", "ag_30s", "ag_silent"]
    assert_refused(cli("agent", "stale", "--threshold", "soon"), code=exitcodes.USAGE)


def test_stale_mark_sets_stuck_and_releases_running_assignments(cli, db, ages):
    db.execute(f"UPDATE wave_task_assignments SET status = 'running', instance_id = 'ag_2min', assigned_at = {db.sql.now} "
               "WHERE task_id = ?", (ages["T-001"],))
    db.execute(f"UPDATE wave_task_assignments SET status = 'assigned', instance_id = 'ag_silent', assigned_at = {db.sql.now} "
               "WHERE task_id = ?", (ages["T-002"],))
    db.execute("UPDATE build_agent_instances SET current_task_id = ? WHERE instance_id = 'ag_2min'", (ages["T-001"],))
    db.execute("""UPDATE build_agent_instances SET config = '{"maxRetries": 0}' WHERE instance_id = 'ag_silent'""")
    rows = json.loads(cli("agent", "stale", "--mark", "--json", check=True).stdout)
    assert sorted(r["instance_id"] for r in rows) == ["ag_2min", "ag_silent"]
    for iid in ("ag_2min", "ag_silent"):
        row = agent_row(db, iid)
        assert row["status"] == "stuck"
        ctx = json.loads(row["error_context"])
        assert ctx["code"] == "stale_heartbeat" and set(ctx) == {"code", "message", "taskId", "timestamp"}
    assert json.loads(agent_row(db, "ag_2min")["error_context"])["taskId"] == ages["T-001"]
    assert json.loads(agent_row(db, "ag_silent")["error_context"])["taskId"] == ages["T-002"]  # from its assignment
    # Retries remain for T-001: back to pending; none for T-002 (maxRetries 0): failed.
    status = {r["task_id"]: r["status"] for r in db.query("SELECT task_id, status FROM wave_task_assignments")}
    assert status[ages["T-001"]] == "pending" and status[ages["T-002"]] == "failed"
    assert agent_row(db, "ag_30s")["status"] == "running"
    from buildctl import assignments

    assert assignments.recount(db, "ex_seed")["ok"]
    # Marked agents are no longer stale; a second --mark finds nothing.
    assert json.loads(cli("agent", "stale", "--mark", "--json", check=True).stdout) == []


# --------------------------------------------------------------------------- ending an agent releases what it held (issue 11)

def _hold(db, task_id, instance_id, status="running"):
    db.execute(f"UPDATE wave_task_assignments SET status = ?, instance_id = ?, assigned_at = {db.sql.now} "
               "WHERE task_id = ?", (status, instance_id, task_id))
    db.execute("UPDATE build_agent_instances SET current_task_id = ? WHERE instance_id = ?", (task_id, instance_id))


def _assignment_status(db, task_id):
    return db.scalar("SELECT status FROM wave_task_assignments WHERE task_id = ?", (task_id,))


def _refuse_releases(db):
    """A fault in the middle of a release: any status change of an assignment aborts (a
    trigger: on SQLite a TEMP one, on this connection only)."""
    if db.sql.name == "sqlite":
        db.execute("CREATE TEMP TRIGGER refuse_release BEFORE UPDATE OF status ON wave_task_assignments "
                   "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    else:
        db.executescript("CREATE FUNCTION refuse_release() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; "
                         "CREATE TRIGGER refuse_release BEFORE UPDATE OF status ON wave_task_assignments "
                         "FOR EACH ROW EXECUTE FUNCTION refuse_release()")


def _allow_releases(db):
    db.execute("DROP TRIGGER temp.refuse_release" if db.sql.name == "sqlite"
               else "DROP TRIGGER refuse_release ON wave_task_assignments")


#: What an injected fault raises: the driver's error on SQLite's own connection, buildctl's on PostgreSQL.
INJECTED = (sqlite3.DatabaseError, DatabaseError)


def test_finish_ends_the_agent_and_releases_its_task_in_one_transaction(db, lane):
    _hold(db, lane["T-001"], "ag_one")
    _refuse_releases(db)
    with pytest.raises(INJECTED, match="injected fault"):
        agents.finish(db, "ag_one", "completed")
    # The release failed, so the agent did not end either: it never ends holding a task.
    assert agent_row(db, "ag_one")["status"] == "running"
    assert _assignment_status(db, lane["T-001"]) == "running"
    _allow_releases(db)
    assert [r["outcome"] for r in agents.finish(db, "ag_one", "completed")["released"]] == ["pending"]


def test_marking_a_stale_agent_stuck_and_releasing_its_task_is_one_transaction(db, ages):
    _hold(db, ages["T-001"], "ag_2min")
    _refuse_releases(db)
    with pytest.raises(INJECTED, match="injected fault"):
        agents.mark_stale(db, 60)
    assert agent_row(db, "ag_2min")["status"] == "running"
    assert _assignment_status(db, ages["T-001"]) == "running"


@pytest.fixture
def holders(db):
    """Four running tasks, held by a completed, a failed (maxRetries 0), a stuck and a missing agent."""
    ids = seed.seed_list(db, tasks=("T-001", "T-002", "T-003", "T-004", "T-005"))
    seed.seed_run(db)
    seed.seed_wave(db, wave_number=1, task_ids=[ids[t] for t in ("T-001", "T-002", "T-003", "T-004")], status="running")
    seed.seed_wave(db, wave_number=2, task_ids=[ids["T-005"]])
    db.execute("INSERT INTO task_relationships (source_task_id, target_task_id, relationship_type) "
                 "VALUES (?, ?, 'depends_on')", (ids["T-005"], ids["T-002"]))
    for iid, status in (("ag_done", "completed"), ("ag_failed", "failed"), ("ag_stuck", "stuck")):
        seed.seed_agent(db, iid, status=status, spawned_ago_s=30, heartbeat_ago_s=5)
    db.execute("""UPDATE build_agent_instances SET config = '{"maxRetries": 0}' WHERE instance_id = 'ag_failed'""")
    seed.seed_agent(db, "ag_live", spawned_ago_s=30, heartbeat_ago_s=1)
    for t, iid in (("T-001", "ag_done"), ("T-002", "ag_failed"), ("T-003", "ag_stuck")):
        _hold(db, ids[t], iid)
    # An agent row that is gone (only possible with foreign keys off, by hand).
    seed.without_foreign_keys(db, lambda: _hold(db, ids["T-004"], "ag_gone"))
    return ids


def test_stale_mark_and_gc_release_tasks_held_by_ended_or_missing_agents(cli, db, holders):
    assert json.loads(cli("agent", "stale", "--mark", "--json", check=True).stdout) == []  # nobody is stale
    st = {t: _assignment_status(db, holders[t]) for t in ("T-001", "T-002", "T-003", "T-004", "T-005")}
    # Each release is a failed attempt: a retry remains (back to pending), or not (failed, dependents skipped).
    assert st == {"T-001": "pending", "T-002": "failed", "T-003": "pending", "T-004": "pending", "T-005": "skipped"}
    failed = db.query("SELECT instance_id, message, context FROM task_execution_log WHERE event_type = 'task_failed' "
                      "ORDER BY id")
    assert sorted(f["instance_id"] or "" for f in failed) == ["", "ag_done", "ag_failed", "ag_stuck"]
    assert any("agent ag_gone does not exist" in f["message"] for f in failed)
    assert all(json.loads(f["context"])["released"] for f in failed)
    assert agent_row(db, "ag_stuck")["status"] == "stuck" and agent_row(db, "ag_live")["status"] == "running"
    from buildctl import assignments

    assert assignments.recount(db, "ex_seed")["ok"]


def test_gc_recovers_a_task_held_by_a_finished_agent(cli, db, holders):
    assert cli("gc", "--json").returncode == 0
    assert _assignment_status(db, holders["T-001"]) == "pending"


def test_recover_of_one_run_leaves_other_runs_alone(db, holders):
    seed.seed_list(db, list_id="tl_other", tasks=("X-1",))
    seed.seed_run(db, execution_id="ex_other", list_id="tl_other")
    seed.seed_wave(db, execution_id="ex_other", task_ids=["tk_tl_other_X-1"], status="running")
    seed.seed_agent(db, "ag_other_done", execution_id="ex_other", status="completed")
    _hold(db, "tk_tl_other_X-1", "ag_other_done")
    found = agents.recover(db, 60, "ex_other")
    assert found["marked"] == [] and [(r["instance_id"], r["outcome"]) for r in found["released"]] == \
        [("ag_other_done", "pending")]
    assert _assignment_status(db, holders["T-001"]) == "running"  # ex_seed's turn has not come


# --------------------------------------------------------------------------- cancel reaches every agent (issue 11)

def test_a_cancelled_runs_script_agents_are_refused_so_that_they_stop(cli, db, migrated, lane):
    from buildctl import runs

    agents.heartbeat(db, "ag_one")
    runs.cancel(db, "ex_seed")
    before = snapshot(migrated)
    assert_refused(cli("heartbeat", "ag_one", "--progress", "50"), code=exitcodes.CONFLICT,
                   contains="run ex_seed was cancelled")
    assert_refused(cli("log", "add", "ex_seed", "info", "still working", "--agent", "ag_one"), code=exitcodes.CONFLICT,
                   contains="run ex_seed was cancelled")
    assert snapshot(migrated) == before
    # The lane stays open to notes that no agent writes, and the agent can still be ended.
    cli("log", "add", "ex_seed", "info", "post-mortem: cancelled for the release freeze", check=True)
    cli("agent", "finish", "ag_one", "--status", "failed", "--error", "run cancelled", check=True)


def test_spawn_and_claim_registers_nothing_when_the_task_cannot_be_taken(db, migrated, lane):
    claim = agents.spawn_and_claim(db, "ex_seed", task="T-001", context={"command": ["true"]})
    assert claim["display_id"] == "T-001" and agent_row(db, claim["instance_id"])["status"] == "running"
    before = snapshot(migrated)
    for task, why in (("T-001", "not pending"), ("T-003", "wave 1 has not ended")):
        with pytest.raises(Conflict, match=why):
            agents.spawn_and_claim(db, "ex_seed", task=task)
    assert snapshot(migrated) == before
