"""The assignment state machine: claims, the wave barrier, the agent limit, retries,
failure isolation, and counters that always equal a recount — also under 8 concurrent processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest

from buildctl import assignments, runs
from buildctl.errors import Conflict, NotFound
from conftest import REPO, snapshot
from runhelpers import FIVE_TASKS, add_agent, assignment_of, task, write_list  # noqa: F401

pytestmark = pytest.mark.engines


def counters(db, execution_id):
    return db.one("SELECT status, total_tasks, completed_tasks, failed_tasks, skipped_tasks FROM task_list_execution_runs "
                  "WHERE execution_id = ?", (execution_id,))


def statuses(db, execution_id):
    return {r["display_id"]: r["status"] for r in db.query(
        "SELECT t.display_id, a.status FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
        "JOIN tasks t ON t.id = a.task_id WHERE w.execution_id = ?", (execution_id,))}


def events(db, execution_id, event_type):
    return db.query("SELECT l.*, t.display_id FROM task_execution_log l LEFT JOIN tasks t ON t.id = l.task_id "
                    "WHERE l.execution_id = ? AND l.event_type = ? ORDER BY l.id", (execution_id, event_type))


def assert_recount(db, execution_id):
    rc = assignments.recount(db, execution_id)
    assert rc["ok"], rc
    return rc


def test_five_task_scenario_t001_fails_for_good(db):
    ex = runs.start_run(db, str(FIVE_TASKS))["execution_id"]
    a1, a2 = add_agent(db, ex, "ag_one"), add_agent(db, ex, "ag_two")
    assert assignments.run_state(db, ex) == "work"

    c1 = assignments.claim_next(db, ex, a1, start=True)
    c2 = assignments.claim_next(db, ex, a2, start=True)
    assert (c1["display_id"], c2["display_id"]) == ("T-001", "T-002")
    assert c1["wave_number"] == 1 and c1["attempt"] == 1 and c1["command"].startswith("echo")
    assert c1["validate_command"] == "true" and c1["timeout_s"] == 120
    assert db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)) == "running"
    agent = db.one("SELECT * FROM build_agent_instances WHERE instance_id = ?", (a1,))
    assert (agent["status"], agent["current_task_id"], agent["wave_number"]) == ("running", c1["task_id"], 1)
    assert assignments.claim_next(db, ex, a1) is None  # max_parallel_agents = 2
    assert assignments.run_state(db, ex) == "wait"

    assert assignments.fail(db, c1["assignment_id"], error="schema.sql: syntax error", max_retries=0, instance_id=a1) == "failed"
    # Failure isolation: T-003 and T-005 depend on T-001 (T-005 through T-003), T-004 does not.
    assert statuses(db, ex) == {"T-001": "failed", "T-002": "running", "T-003": "skipped", "T-004": "pending",
                                "T-005": "skipped"}
    assert [e["display_id"] for e in events(db, ex, "task_skipped")] == ["T-003", "T-005"]
    assert assignments.claim_next(db, ex, a1) is None  # the barrier: T-002 of wave 1 still runs
    assert assignments.run_state(db, ex) == "wait"
    assert_recount(db, ex)

    assignments.complete(db, c2["assignment_id"], instance_id=a2)
    c4 = assignments.claim_next(db, ex, a1, start=True)
    assert c4["display_id"] == "T-004" and c4["wave_number"] == 2
    assignments.complete(db, c4["assignment_id"], instance_id=a1, context={"exit_code": 0})
    assert assignments.claim_next(db, ex, a1) is None
    assert assignments.run_state(db, ex) == "done"

    run = counters(db, ex)
    assert run == {"status": "failed", "total_tasks": 5, "completed_tasks": 2, "failed_tasks": 1, "skipped_tasks": 2}
    rc = assert_recount(db, ex)
    assert rc["recounted"]["run"] == {"total_tasks": 5, "completed_tasks": 2, "failed_tasks": 1, "skipped_tasks": 2}
    waves = db.query("SELECT wave_number, status, completed_at FROM parallel_execution_waves WHERE execution_id = ? "
                     "ORDER BY wave_number", (ex,))
    assert [w["status"] for w in waves] == ["failed", "completed", "completed"]
    assert all(w["completed_at"] for w in waves)
    assert db.scalar("SELECT completed_at FROM task_list_execution_runs WHERE execution_id = ?", (ex,))
    failed = events(db, ex, "task_failed")
    assert len(failed) == 1 and json.loads(failed[0]["context"])["error"] == "schema.sql: syntax error"
    assert json.loads(failed[0]["context"])["attempt"] == 1
    assert [e["display_id"] for e in events(db, ex, "task_completed")] == ["T-002", "T-004"]
    assert [e["display_id"] for e in events(db, ex, "task_started")] == ["T-001", "T-002", "T-004"]
    tasks = {r["display_id"]: r["status"] for r in db.query("SELECT display_id, status FROM tasks")}
    assert tasks == {"T-001": "failed", "T-002": "completed", "T-003": "skipped", "T-004": "completed", "T-005": "skipped"}
    agent = db.one("SELECT status, current_task_id FROM build_agent_instances WHERE instance_id = ?", (a1,))
    assert agent == {"status": "idle", "current_task_id": None}


def test_retries_count_attempts_from_the_log_then_fail_for_good(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B", deps=["A"])])
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_retry")
    outcomes = []
    for attempt in (1, 2, 3):
        c = assignments.claim_next(db, ex, ag, start=True)
        assert (c["display_id"], c["attempt"]) == ("A", attempt)
        outcomes.append(assignments.fail(db, c["assignment_id"], error="exit 1", max_retries=2, instance_id=ag))
        assert_recount(db, ex)
    assert outcomes == ["retry", "retry", "failed"]
    ctx = [json.loads(e["context"]) for e in events(db, ex, "task_failed")]
    assert [(c["attempt"], c["error"], c["will_retry"]) for c in ctx] == [(1, "exit 1", True), (2, "exit 1", True),
                                                                        (3, "exit 1", False)]
    assert statuses(db, ex) == {"A": "failed", "B": "skipped"}
    assert counters(db, ex)["status"] == "failed"
    # While a retry was pending, the assignment had no holder.
    a = assignment_of(db, ex, "A")
    assert a["instance_id"] == ag and a["status"] == "failed"


def test_a_retry_then_success_completes_the_run(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A")])
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_x")
    c = assignments.claim_next(db, ex, ag)
    assert assignments.fail(db, c["assignment_id"], error="flaky", max_retries=1) == "retry"
    a = assignment_of(db, ex, "A")
    assert (a["status"], a["instance_id"], a["assigned_at"]) == ("pending", None, None)
    c = assignments.claim_next(db, ex, ag)
    assert c["attempt"] == 2
    assignments.complete(db, c["assignment_id"])
    assert counters(db, ex) == {"status": "completed", "total_tasks": 1, "completed_tasks": 1, "failed_tasks": 0,
                                "skipped_tasks": 0}
    assert json.loads(events(db, ex, "task_completed")[0]["context"])["attempt"] == 2
    assert db.scalar("SELECT status FROM task_lists_v2") == "completed"


def test_retry_in_place_keeps_the_assignment_and_counts_the_attempt(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A")])
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_ip")
    c = assignments.claim_next(db, ex, ag, start=True)
    r = assignments.retry_in_place(db, c["assignment_id"], instance_id=ag, error="exit 2", max_retries=2)
    assert (r["attempt"], r["next_attempt"]) == (1, 2)
    a = assignment_of(db, ex, "A")
    assert (a["status"], a["instance_id"]) == ("running", ag)
    assert_recount(db, ex)
    assignments.retry_in_place(db, c["assignment_id"], instance_id=ag, error="exit 2")
    with pytest.raises(Conflict, match="is the last"):
        assignments.retry_in_place(db, c["assignment_id"], instance_id=ag, error="exit 2", max_retries=2)
    with pytest.raises(Conflict, match="held by agent"):
        assignments.retry_in_place(db, c["assignment_id"], instance_id="ag_other", error="x")
    assert assignments.fail(db, c["assignment_id"], error="exit 2", max_retries=2, instance_id=ag) == "failed"
    ctx = [json.loads(e["context"]) for e in events(db, ex, "task_failed")]
    assert [(x["attempt"], x["error"]) for x in ctx] == [(1, "exit 2"), (2, "exit 2"), (3, "exit 2")]
    assert counters(db, ex)["failed_tasks"] == 1
    assert_recount(db, ex)


def agent_of(db, instance_id):
    row = db.one("SELECT status, current_task_id, error_context FROM build_agent_instances WHERE instance_id = ?",
                 (instance_id,))
    return {**row, "error_context": json.loads(row["error_context"]) if row["error_context"] else None}


def test_the_third_same_error_failure_in_place_marks_the_agent_stuck_and_hands_the_task_back(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B", deps=["A"])])
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_loop")  # maxRetries 3: four attempts
    c = assignments.claim_next(db, ex, ag, start=True)
    for _ in range(2):
        r = assignments.retry_in_place(db, c["assignment_id"], instance_id=ag, error="disk quota exceeded")
        assert (r["status"], r["agent_stuck"]) == ("running", None)
    r = assignments.retry_in_place(db, c["assignment_id"], instance_id=ag, error="disk quota exceeded")
    assert r["status"] == "pending" and "3 consecutive failed attempts of A" in r["agent_stuck"]
    agent = agent_of(db, ag)
    assert (agent["status"], agent["current_task_id"]) == ("stuck", None)
    assert agent["error_context"]["code"] == "no_progress"
    assert agent["error_context"]["message"].endswith("with the same error: disk quota exceeded")
    a = assignment_of(db, ex, "A")
    assert (a["status"], a["instance_id"]) == ("pending", None)
    assert [json.loads(e["context"])["will_retry"] for e in events(db, ex, "task_failed")] == [True, True, True]
    assert any("marked stuck" in w["message"] for w in events(db, ex, "warning"))
    assert_recount(db, ex)
    # The task goes on elsewhere: attempt 4 is the last; failing it the same way fails the
    # task for good (B skipped) and marks that agent stuck too.
    other = add_agent(db, ex, "ag_next")
    c = assignments.claim_next(db, ex, other, start=True)
    assert c["attempt"] == 4
    assert assignments.fail(db, c["assignment_id"], error="disk quota exceeded", max_retries=3,
                            instance_id=other) == "failed"
    assert statuses(db, ex) == {"A": "failed", "B": "skipped"}
    assert agent_of(db, other)["status"] == "stuck"
    assert_recount(db, ex)


def test_the_same_error_rule_counts_consecutive_failures_across_agents_and_a_new_error_is_progress(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A")])
    ex = runs.start_run(db, str(f))["execution_id"]
    errors = ["exit 1", "exit 2", "exit 2", "exit 2"]
    agents_ = [add_agent(db, ex, f"ag_{i}") for i in range(len(errors))]
    for ag, error in zip(agents_, errors):
        c = assignments.claim_next(db, ex, ag, start=True)
        assert assignments.fail(db, c["assignment_id"], error=error, max_retries=5, instance_id=ag) == "retry"
    # Only the failure that made three "exit 2" in a row is no progress.
    assert [agent_of(db, ag)["status"] for ag in agents_] == ["idle", "idle", "idle", "stuck"]
    # A release (the agent lost the task) is not the task failing: it never counts.
    ag = add_agent(db, ex, "ag_released")
    c = assignments.claim_next(db, ex, ag, start=True)
    assert assignments.release(db, c["assignment_id"], reason="exit 2", max_retries=5) == "pending"
    assert agent_of(db, ag)["status"] == "idle"
    assert_recount(db, ex)


def test_a_task_handed_back_after_the_run_was_cancelled_is_skipped(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B")])
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_c")
    c = assignments.claim_next(db, ex, ag, start=True)
    runs.cancel(db, ex)
    assert assignments.release(db, c["assignment_id"], reason="stopped: the run was cancelled", max_retries=3) == "skipped"
    assert statuses(db, ex) == {"A": "skipped", "B": "skipped"}
    assert counters(db, ex) == {"status": "cancelled", "total_tasks": 2, "completed_tasks": 0, "failed_tasks": 0,
                                "skipped_tasks": 2}
    assert_recount(db, ex)


def test_double_reports_and_foreign_agents_are_refused_without_a_write(db, migrated, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B")])
    ex = runs.start_run(db, str(f))["execution_id"]
    a1, a2 = add_agent(db, ex, "ag_1"), add_agent(db, ex, "ag_2")
    c = assignments.claim_next(db, ex, a1)
    before = snapshot(migrated)
    with pytest.raises(Conflict, match="held by agent ag_1, not ag_2"):
        assignments.complete(db, c["assignment_id"], instance_id=a2)
    with pytest.raises(NotFound):
        assignments.complete(db, 999_999)
    assert snapshot(migrated) == before
    assignments.complete(db, c["assignment_id"], instance_id=a1)
    after = snapshot(migrated)
    with pytest.raises(Conflict, match="it is completed, not assigned or running"):
        assignments.complete(db, c["assignment_id"], instance_id=a1)
    with pytest.raises(Conflict, match="it is completed"):
        assignments.fail(db, c["assignment_id"], error="late", max_retries=3)
    with pytest.raises(Conflict, match="it is completed"):
        assignments.release(db, c["assignment_id"], reason="stale", max_retries=3)
    pending = assignment_of(db, ex, "B")
    with pytest.raises(Conflict, match="it is pending"):
        assignments.complete(db, pending["id"])
    assert snapshot(migrated) == after
    assert_recount(db, ex)


def test_max_parallel_agents_limits_held_assignments(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task(x) for x in "ABCDE"], max_parallel_agents=2)
    ex = runs.start_run(db, str(f))["execution_id"]
    ags = [add_agent(db, ex, f"ag_{i}") for i in range(3)]
    c1 = assignments.claim_next(db, ex, ags[0])
    c2 = assignments.claim_next(db, ex, ags[1])
    assert (c1["display_id"], c2["display_id"]) == ("A", "B")
    assert assignments.claim_next(db, ex, ags[2]) is None
    assert assignments.run_state(db, ex) == "wait"
    assignments.complete(db, c1["assignment_id"])
    assert assignments.run_state(db, ex) == "work"
    assert assignments.claim_next(db, ex, ags[2])["display_id"] == "C"
    assert assignments.claim_next(db, ex, ags[0]) is None


def test_claims_check_the_agent(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A")])
    ex = runs.start_run(db, str(f))["execution_id"]
    other = runs.start_run(db, str(write_list(tmp_path / "m.json", [task("X")], name="other")))["execution_id"]
    add_agent(db, other, "ag_other")
    add_agent(db, ex, "ag_done", status="completed")
    add_agent(db, ex, "ag_stuck", status="stuck")
    with pytest.raises(NotFound):
        assignments.claim_next(db, ex, "ag_missing")
    with pytest.raises(Conflict, match="belongs to execution"):
        assignments.claim_next(db, ex, "ag_other")
    with pytest.raises(Conflict, match="is completed"):
        assignments.claim_next(db, ex, "ag_done")
    with pytest.raises(Conflict, match="is stuck"):
        assignments.claim_next(db, ex, "ag_stuck")
    assert statuses(db, ex) == {"A": "pending"}


def test_pause_holds_claims_and_cancel_ends_them(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B"), task("C", deps=["A"])], max_parallel_agents=3)
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_p")
    c = assignments.claim_next(db, ex, ag)
    runs.pause(db, ex)
    assert assignments.claim_next(db, ex, ag) is None
    assert assignments.run_state(db, ex) == "wait"
    # A running task still finishes while paused.
    assignments.complete(db, c["assignment_id"])
    runs.resume(db, ex)
    assert assignments.run_state(db, ex) == "work"
    c = assignments.claim_next(db, ex, ag)
    assert c["display_id"] == "B"
    runs.cancel(db, ex)
    assert assignments.run_state(db, ex) == "done"
    assert assignments.claim_next(db, ex, ag) is None
    assert statuses(db, ex) == {"A": "completed", "B": "assigned", "C": "skipped"}
    # The agent still holding B reports; it is recorded, the run stays cancelled.
    assignments.complete(db, c["assignment_id"], instance_id=ag)
    run = counters(db, ex)
    assert run == {"status": "cancelled", "total_tasks": 3, "completed_tasks": 2, "failed_tasks": 0, "skipped_tasks": 1}
    assert_recount(db, ex)
    assert [w["status"] for w in db.query("SELECT status FROM parallel_execution_waves WHERE execution_id = ? "
                                          "ORDER BY wave_number", (ex,))] == ["cancelled", "cancelled"]


def test_release_of_a_stuck_agents_task(db, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B", deps=["A"])])
    ex = runs.start_run(db, str(f))["execution_id"]
    ag = add_agent(db, ex, "ag_s")
    c = assignments.claim_next(db, ex, ag, start=True)
    with db.write():
        db.execute("UPDATE build_agent_instances SET status = 'stuck' WHERE instance_id = ?", (ag,))
    assert assignments.release(db, c["assignment_id"], reason="heartbeat stale", max_retries=1) == "pending"
    agent = db.one("SELECT status, current_task_id FROM build_agent_instances WHERE instance_id = ?", (ag,))
    assert agent == {"status": "stuck", "current_task_id": None}
    ag2 = add_agent(db, ex, "ag_s2")
    c = assignments.claim_next(db, ex, ag2)
    assert c["attempt"] == 2
    assert assignments.release(db, c["assignment_id"], reason="heartbeat stale", max_retries=1,
                               instance_id=ag2) == "failed"
    assert statuses(db, ex) == {"A": "failed", "B": "skipped"}
    ctx = json.loads(events(db, ex, "task_failed")[-1]["context"])
    assert ctx["error"] == "heartbeat stale" and ctx["released"] is True
    assert_recount(db, ex)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_walks_keep_every_counter_equal_to_a_recount(db, tmp_path, seed):
    rng = random.Random(seed)
    n = 14
    tasks = [task(f"T{i:02d}", deps=sorted({f"T{rng.randrange(i):02d}" for _ in range(rng.randrange(3))}) if i else [])
             for i in range(n)]
    f = write_list(tmp_path / "l.json", tasks, max_parallel_agents=3)
    ex = runs.start_run(db, str(f))["execution_id"]
    agents = [add_agent(db, ex, f"ag_{i}") for i in range(4)]
    held: list[tuple[dict, str]] = []
    for _ in range(200):
        state = assignments.run_state(db, ex)
        if state == "done":
            break
        move = rng.random()
        if state == "work" and (move < 0.5 or not held):
            ag = rng.choice([a for a in agents])
            c = assignments.claim_next(db, ex, ag)
            if c is not None:
                held.append((c, ag))
        elif held:
            c, ag = held.pop(rng.randrange(len(held)))
            r = rng.random()
            if r < 0.6:
                assignments.complete(db, c["assignment_id"], instance_id=ag)
            elif r < 0.9:
                assignments.fail(db, c["assignment_id"], error="boom", max_retries=1, instance_id=ag)
            else:
                assignments.release(db, c["assignment_id"], reason="stale", max_retries=1)
        assert_recount(db, ex)
        # The barrier, checked from the tables: held work sits only in the lowest unfinished wave.
        active = db.query(
            "SELECT DISTINCT w.wave_number, a.status FROM wave_task_assignments a JOIN parallel_execution_waves w "
            "ON w.wave_id = a.wave_id WHERE w.execution_id = ? AND a.status IN ('pending','assigned','running')", (ex,))
        if active:
            lowest = min(r["wave_number"] for r in active)
            assert all(r["wave_number"] == lowest for r in active if r["status"] != "pending")
    assert assignments.run_state(db, ex) == "done"
    run = counters(db, ex)
    assert run["status"] in ("completed", "failed")
    assert run["completed_tasks"] + run["failed_tasks"] + run["skipped_tasks"] == n
    assert (run["status"] == "failed") == (run["failed_tasks"] > 0)


WORKER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    from buildctl import assignments, storage
    db = storage.connect(sys.argv[1])
    ex, me, limit = sys.argv[2], sys.argv[3], int(sys.argv[5])
    got, violations = [], []
    while True:
        c = assignments.claim_next(db, ex, me, start=True)
        if c is None:
            if assignments.run_state(db, ex) == "done":
                break
            time.sleep(0.002)
            continue
        got.append([c["assignment_id"], c["wave_number"], c["attempt"]])
        # Lower waves that have ended never become active again, so this check is sound.
        lower = db.scalar(
            "SELECT COUNT(*) FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
            "WHERE w.execution_id = ? AND w.wave_number < ? AND a.status IN ('pending','assigned','running')",
            (ex, c["wave_number"]))
        if lower:
            violations.append(["barrier", c["assignment_id"], c["wave_number"], lower])
        held = db.scalar(
            "SELECT COUNT(*) FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
            "WHERE w.execution_id = ? AND a.status IN ('assigned','running')", (ex,))
        if held > limit:
            violations.append(["limit", held])
        time.sleep(0.005)  # hold the task a moment, so that the agent limit is really tested
        if c["attempt"] == 1 and c["display_id"].endswith("3"):
            assignments.fail(db, c["assignment_id"], error="first try fails", max_retries=1, instance_id=me)
        else:
            assignments.complete(db, c["assignment_id"], instance_id=me)
    print(json.dumps({"got": got, "violations": violations}))
""")


@pytest.mark.slow
def test_eight_concurrent_processes_never_share_an_assignment_nor_cross_the_barrier(db, migrated, tmp_path):
    waves, width = 4, 10
    tasks = []
    for w in range(waves):
        for i in range(width):
            deps = [f"W{w - 1}-{j}" for j in range(width) if (i + j) % 3 == 0] if w else []
            tasks.append(task(f"W{w}-{i}", deps=deps))
    limit = 4
    f = write_list(tmp_path / "l.json", tasks, max_parallel_agents=limit)
    ex = runs.start_run(db, str(f))["execution_id"]
    agents = [add_agent(db, ex, f"ag_{i}") for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(migrated), ex, ag, str(REPO), str(limit)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ag in agents]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert all(not r["violations"] for r in results), [r["violations"] for r in results]
    claims = [tuple(c) for r in results for c in r["got"]]
    # Each assignment handed out once per attempt, never twice for the same attempt.
    assert len(claims) == len(set(claims))
    retried = [t for t in tasks if t["id"].endswith("3")]
    assert len(claims) == len(tasks) + len(retried)
    assert sum(1 for r in results if r["got"]) >= 2  # the work really was shared
    # From the log: per task, starts and ends alternate (never two holders at once), and wave k+1
    # starts only after every task of wave k ended.
    log = db.query(
        "SELECT l.id, l.event_type, t.display_id FROM task_execution_log l JOIN tasks t ON t.id = l.task_id "
        "WHERE l.execution_id = ? AND l.event_type IN ('task_started','task_completed','task_failed') ORDER BY l.id", (ex,))
    open_by_task: dict[str, bool] = {}
    for e in log:
        started = e["event_type"] == "task_started"
        assert open_by_task.get(e["display_id"], False) != started, e
        open_by_task[e["display_id"]] = started
    last_end = {w: max(e["id"] for e in log if e["event_type"] == "task_completed" and e["display_id"].startswith(f"W{w}-"))
                for w in range(waves)}
    first_start = {w: min(e["id"] for e in log if e["event_type"] == "task_started" and e["display_id"].startswith(f"W{w}-"))
                   for w in range(waves)}
    for w in range(1, waves):
        assert first_start[w] > last_end[w - 1]
    assert counters(db, ex) == {"status": "completed", "total_tasks": 40, "completed_tasks": 40, "failed_tasks": 0,
                                "skipped_tasks": 0}
    assert_recount(db, ex)


# --------------------------------------------------------------------------- complete_and_claim

def test_complete_and_claim_hands_the_next_task_under_every_claim_rule(db):
    """A worker's completion claims its next task in the same transaction, and that claim
    obeys the barrier as claim_next does: wave 2 only once wave 1 has ended."""
    ex = runs.start_run(db, str(FIVE_TASKS))["execution_id"]  # max_parallel_agents = 2
    a1, a2 = add_agent(db, ex, "ag_one"), add_agent(db, ex, "ag_two")
    c1 = assignments.claim_next(db, ex, a1, start=True)
    c2 = assignments.claim_next(db, ex, a2, start=True)

    # T-002 still runs: wave 2 may not start, so the completion claims nothing.
    done, nxt = assignments.complete_and_claim(db, c1["assignment_id"], instance_id=a1, context={"exit_code": 0})
    assert done["status"] == "completed" and nxt is None
    agent = db.one("SELECT status, current_task_id FROM build_agent_instances WHERE instance_id = ?", (a1,))
    assert (agent["status"], agent["current_task_id"]) == ("idle", None)

    # The last task of wave 1 ends: its completion claims the first of wave 2, started.
    done, nxt = assignments.complete_and_claim(db, c2["assignment_id"], instance_id=a2)
    assert nxt["display_id"] == "T-003" and nxt["wave_number"] == 2 and nxt["attempt"] == 1
    assert statuses(db, ex)["T-003"] == "running"
    agent = db.one("SELECT status, current_task_id FROM build_agent_instances WHERE instance_id = ?", (a2,))
    assert (agent["status"], agent["current_task_id"]) == ("running", nxt["task_id"])
    started = [e["display_id"] for e in events(db, ex, "task_started")]
    assert started == ["T-001", "T-002", "T-003"]
    waves = {w["wave_number"]: w["status"] for w in db.query(
        "SELECT wave_number, status FROM parallel_execution_waves WHERE execution_id = ?", (ex,))}
    assert waves == {1: "completed", 2: "running", 3: "pending"}
    assert_recount(db, ex)

    assert_recount(db, ex)


def test_complete_and_claim_respects_the_agent_limit_and_a_pause(db, tmp_path):
    path = write_list(tmp_path / "flat.json", [task(f"T-{i}") for i in range(1, 6)], max_parallel_agents=2)
    ex = runs.start_run(db, str(path))["execution_id"]
    a1, a2, a3 = (add_agent(db, ex, f"ag_{n}") for n in ("one", "two", "three"))
    c1 = assignments.claim_next(db, ex, a1, start=True)
    c2 = assignments.claim_next(db, ex, a2, start=True)
    assert assignments.claim_next(db, ex, a3) is None  # two held: the limit
    # Completing one frees a place, which the completing agent takes at once.
    _, nxt = assignments.complete_and_claim(db, c1["assignment_id"], instance_id=a1)
    assert nxt["display_id"] == "T-3"
    held = db.scalar("SELECT COUNT(*) FROM wave_task_assignments WHERE status IN ('assigned', 'running')")
    assert held == 2
    # An agent marked stuck while it ran still completes its task, but takes no new one
    # (T-4 is free to take).
    with db.write():
        db.execute("UPDATE build_agent_instances SET status = 'stuck' WHERE instance_id = ?", (a2,))
    done, nxt = assignments.complete_and_claim(db, c2["assignment_id"], instance_id=a2)
    assert done["status"] == "completed" and nxt is None
    assert db.scalar("SELECT status FROM build_agent_instances WHERE instance_id = ?", (a2,)) == "stuck"
    c4 = assignments.claim_next(db, ex, a3, start=True)
    assert c4["display_id"] == "T-4"
    runs.pause(db, ex)
    c3 = assignment_of(db, ex, "T-3")
    _, nxt = assignments.complete_and_claim(db, c3["id"], instance_id=a1)
    assert nxt is None  # paused: nothing is handed out
    assert statuses(db, ex) == {"T-1": "completed", "T-2": "completed", "T-3": "completed", "T-4": "running",
                                "T-5": "pending"}
    assert db.scalar("SELECT status FROM build_agent_instances WHERE instance_id = ?", (a1,)) == "idle"
    assert_recount(db, ex)


def test_complete_and_claim_of_a_task_not_held_is_refused_and_writes_nothing(db, migrated):
    ex = runs.start_run(db, str(FIVE_TASKS))["execution_id"]
    a1, a2 = add_agent(db, ex, "ag_one"), add_agent(db, ex, "ag_two")
    c1 = assignments.claim_next(db, ex, a1, start=True)
    before = snapshot(migrated)
    with pytest.raises(Conflict, match="held by agent ag_one, not ag_two"):
        assignments.complete_and_claim(db, c1["assignment_id"], instance_id=a2)
    assignments.complete(db, c1["assignment_id"], instance_id=a1)
    after_complete = snapshot(migrated)
    assert after_complete != before
    with pytest.raises(Conflict, match="it is completed"):
        assignments.complete_and_claim(db, c1["assignment_id"], instance_id=a1)
    assert snapshot(migrated) == after_complete
    with pytest.raises(NotFound):
        assignments.complete_and_claim(db, 999999, instance_id=a1)
    assert snapshot(migrated) == after_complete
