"""The named queries, run from sql/queries/ against seeded rows."""

from __future__ import annotations

import json

import seed


def _log(conn, execution_id, task_id, event_type, message, error=None, ago_s=0):
    ctx = json.dumps({"error": error}) if error is not None else None
    conn.execute(
        "INSERT INTO task_execution_log (execution_id, task_id, timestamp, event_type, message, context) "
        "VALUES (?, ?, datetime('now', ?), ?, ?, ?)",
        (execution_id, task_id, f"-{ago_s} seconds", event_type, message, ctx),
    )


def test_stale_agents_judges_never_heartbeated_agents_by_spawned_at(db):
    conn = db.conn
    seed.seed_list(conn)
    seed.seed_run(conn)
    seed.seed_agent(conn, "ag_old", spawned_ago_s=600, heartbeat_ago_s=120)
    seed.seed_agent(conn, "ag_fresh", spawned_ago_s=600, heartbeat_ago_s=30)
    seed.seed_agent(conn, "ag_silent", status="initializing", spawned_ago_s=120, heartbeat_ago_s=None)
    seed.seed_agent(conn, "ag_newborn", status="initializing", spawned_ago_s=5, heartbeat_ago_s=None)
    seed.seed_agent(conn, "ag_idle", status="idle", spawned_ago_s=600, heartbeat_ago_s=300)
    seed.seed_agent(conn, "ag_done", status="completed", spawned_ago_s=600, heartbeat_ago_s=500)
    rows = db.named("stale_agents", {"threshold": "-60 seconds", "execution_id": None})
    assert [r["instance_id"] for r in rows] == ["ag_idle", "ag_old", "ag_silent"]
    by_id = {r["instance_id"]: r for r in rows}
    assert 115 <= by_id["ag_silent"]["seconds_since_heartbeat"] <= 125
    assert 115 <= by_id["ag_old"]["seconds_since_heartbeat"] <= 125
    # Lane filter.
    assert db.named("stale_agents", {"threshold": "-60 seconds", "execution_id": "ex_other"}) == []


def test_wave_summary_counts_running_agents_per_wave(db):
    conn = db.conn
    ids = seed.seed_list(conn, tasks=("T-001", "T-002", "T-003"))
    seed.seed_run(conn)
    w1 = seed.seed_wave(conn, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]], status="running")
    seed.seed_wave(conn, wave_number=2, task_ids=[ids["T-003"]])
    seed.seed_agent(conn, "ag_1")
    seed.seed_agent(conn, "ag_2")
    seed.seed_agent(conn, "ag_3", status="completed")
    conn.execute("UPDATE wave_task_assignments SET instance_id='ag_1', status='running' WHERE task_id=?", (ids["T-001"],))
    conn.execute("UPDATE wave_task_assignments SET instance_id='ag_3', status='completed' WHERE task_id=?", (ids["T-002"],))
    conn.execute("UPDATE parallel_execution_waves SET completed_count=1 WHERE wave_id=?", (w1,))
    rows = db.named("wave_summary", {"execution_id": "ex_seed"})
    assert [(r["wave_number"], r["status"], r["task_count"], r["completed_count"], r["failed_count"], r["active_agents"])
            for r in rows] == [(1, "running", 2, 1, 0, 1), (2, "pending", 1, 0, 0, 0)]


def test_consecutive_failures_counts_only_failures_since_the_last_success(db):
    conn = db.conn
    ids = seed.seed_list(conn, tasks=("T-001", "T-002", "T-003"))
    seed.seed_run(conn)
    seed.seed_run(conn, execution_id="ex_other", run_number=2)
    t1, t2, t3 = ids["T-001"], ids["T-002"], ids["T-003"]
    for _ in range(3):
        _log(conn, "ex_seed", t1, "task_failed", "boom", error="same")
    # T-002: two failures, a success, one failure -> not consecutive enough.
    _log(conn, "ex_seed", t2, "task_failed", "x1", error="a")
    _log(conn, "ex_seed", t2, "task_failed", "x2", error="b")
    _log(conn, "ex_seed", t2, "task_completed", "ok")
    _log(conn, "ex_seed", t2, "task_failed", "x3", error="c")
    # T-003 fails 3 times, but in another lane.
    for _ in range(3):
        _log(conn, "ex_other", t3, "task_failed", "elsewhere", error="e")
    rows = db.named("consecutive_failures", {"execution_id": "ex_seed", "task_id": None, "min_failures": 3})
    assert [(r["display_id"], r["failure_count"], r["error_messages"]) for r in rows] == [("T-001", 3, "boom | boom | boom")]
    one = db.named("consecutive_failures", {"execution_id": "ex_seed", "task_id": t2, "min_failures": 1})
    assert [(r["display_id"], r["failure_count"]) for r in one] == [("T-002", 1)]


def test_progress_between_attempts_compares_each_attempt_with_the_next(db):
    conn = db.conn
    ids = seed.seed_list(conn, tasks=("T-001", "T-002"))
    seed.seed_run(conn)
    t1, t2 = ids["T-001"], ids["T-002"]
    # Same second for all three: pairing by `tel2.timestamp > tel1.timestamp` alone would pair none.
    for err in ("disk full", "disk full", "disk full"):
        _log(conn, "ex_seed", t1, "task_failed", "failed", error=err)
    for err in ("E1", "E2", "E2"):
        _log(conn, "ex_seed", t2, "task_failed", "failed", error=err)
    same = db.named("progress_between_attempts", {"execution_id": "ex_seed", "task_id": t1})
    assert [r["error_changed"] for r in same] == [0, 0]
    changed = db.named("progress_between_attempts", {"execution_id": "ex_seed", "task_id": t2})
    assert [r["error_changed"] for r in changed] == [1, 0]
    assert json.loads(changed[0]["attempt_1_context"]) == {"error": "E1"}


def test_execution_log_tail_is_lane_isolated_newest_first_with_ties_by_id(db):
    conn = db.conn
    ids = seed.seed_list(conn)
    seed.seed_run(conn)
    seed.seed_run(conn, execution_id="ex_other", run_number=2)
    for i in range(5):
        _log(conn, "ex_seed", ids["T-001"], "info", f"m{i}")
    _log(conn, "ex_other", None, "info", "not mine")
    rows = db.named("execution_log_tail", {"execution_id": "ex_seed", "limit": 3})
    assert [r["message"] for r in rows] == ["m4", "m3", "m2"]
    assert rows[0]["display_id"] == "T-001" and rows[0]["title"] == "task T-001"
