"""The execution log: log add, tail (lane isolation, filters), --follow, failures (SIA) — issue 4."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

import seed
from buildctl import execlog, exitcodes
from conftest import assert_refused, buildctl_executable, snapshot

pytestmark = pytest.mark.engines


@pytest.fixture
def lane(db):
    ids = seed.seed_list(db, tasks=("T-001", "T-002", "T-003"))
    seed.seed_run(db)
    seed.seed_run(db, execution_id="ex_other", run_number=2)
    seed.seed_agent(db, "ag_one")
    seed.seed_agent(db, "ag_other", execution_id="ex_other")
    return ids


# --------------------------------------------------------------------------- log add

def test_log_add_prints_the_event_id_and_resolves_task_and_agent(cli, db, lane):
    r = cli("log", "add", "ex_seed", "task_failed", "make: *** [all] Error 2", "--task", "T-002", "--agent", "ag_one",
            "--context", '{"error": "exit 2", "attempt": 1}', check=True)
    eid = int(r.stdout)
    assert r.stdout == f"{eid}\n"
    row = db.one("SELECT * FROM task_execution_log WHERE id = ?", (eid,))
    assert (row["execution_id"], row["event_type"], row["task_id"], row["instance_id"]) == \
        ("ex_seed", "task_failed", lane["T-002"], "ag_one")
    assert json.loads(row["context"]) == {"error": "exit 2", "attempt": 1}
    assert row["message"] == "make: *** [all] Error 2"
    # Prefixes, and a message that starts with a dash after `--`.
    eid2 = int(cli("log", "add", "ex_s", "info", "--", "-x is a message", check=True).stdout)
    assert db.scalar("SELECT message FROM task_execution_log WHERE id = ?", (eid2,)) == "-x is a message"


LOG_ADD_REFUSALS = [
    (["ex_nope", "info", "m"], exitcodes.NOT_FOUND, "no execution matches 'ex_nope'"),
    (["ex_seed", "oops", "m"], exitcodes.INVALID_INPUT, "expected one of: task_started, task_completed"),
    (["ex_seed", "info", "m", "--context", "{not json"], exitcodes.INVALID_INPUT, "--context is not valid JSON"),
    (["ex_seed", "info", "m", "--context", '"a string"'], exitcodes.INVALID_INPUT, "must be a JSON object"),
    (["ex_seed", "info", "m", "--task", "T-404"], exitcodes.NOT_FOUND, "no task 'T-404' in execution ex_seed"),
    (["ex_seed", "info", "m", "--agent", "ag_nope"], exitcodes.NOT_FOUND, "no agent matches"),
    (["ex_seed", "info", "m", "--agent", "ag_other"], exitcodes.CONFLICT, "belongs to execution ex_other"),
    (["ex_seed", "info", "  "], exitcodes.INVALID_INPUT, "message is empty"),
    (["ex_seed", "info"], exitcodes.USAGE, "Missing argument 'MESSAGE'"),
]


def test_log_add_refusals_change_nothing(cli, migrated, lane):
    before = snapshot(migrated)
    for args, code, text in LOG_ADD_REFUSALS:
        assert_refused(cli("log", "add", *args), code=code, contains=text)
    assert snapshot(migrated) == before


# --------------------------------------------------------------------------- tail

def _add(db, ex, typ, msg, task=None, agent=None, **ctx):
    return execlog.add(db, ex, typ, msg, task=task, agent=agent, context_json=json.dumps(ctx) if ctx else None)


def test_tail_is_oldest_first_lane_isolated_and_filtered(cli, db, lane):
    _add(db, "ex_seed", "task_started", "s1", task="T-001")
    _add(db, "ex_other", "info", "not this lane")
    _add(db, "ex_seed", "task_failed", "f1", task="T-001", error="E")
    _add(db, "ex_seed", "warning", "w1", task="T-002")
    _add(db, "ex_seed", "error", "e1")
    _add(db, "ex_seed", "info", "i1", agent="ag_one")
    # Older than the --since window.
    db.execute("INSERT INTO task_execution_log (execution_id, timestamp, event_type, message) "
               f"VALUES ('ex_seed', {db.sql.ago('?')}, 'info', 'ancient')", ("-2 hours",))

    def tail(*args):
        return [e["message"] for e in json.loads(cli("log", "tail", "ex_seed", "--json", *args, check=True).stdout)]

    assert tail() == ["ancient", "s1", "f1", "w1", "e1", "i1"]
    assert tail("-n", "2") == ["e1", "i1"]
    assert tail("--task", "T-001") == ["s1", "f1"]
    assert tail("--type", "warning", "--type", "info") == ["ancient", "w1", "i1"]
    assert tail("--errors") == ["f1", "e1"]
    assert tail("--since", "1h") == ["s1", "f1", "w1", "e1", "i1"]
    assert tail("--errors", "--task", "T-001") == ["f1"]
    one = json.loads(cli("log", "tail", "ex_seed", "--json", "--task", "T-001", check=True).stdout)[1]
    assert one["task"] == "T-001" and one["context"] == {"error": "E"} and one["timestamp"].endswith("Z")
    text = cli("log", "tail", "ex_seed", check=True).stdout
    assert text.index("s1") < text.index("i1") and "not this lane" not in text
    # Ties on timestamp are broken by id (all within the same clock tick still come out in order).
    assert execlog.tail(db, "ex_seed", 3) == sorted(execlog.tail(db, "ex_seed", 3), key=lambda e: (e["timestamp"], e["id"]))
    assert_refused(cli("log", "tail", "ex_seed", "--type", "nope"), code=exitcodes.INVALID_INPUT)
    assert_refused(cli("log", "tail", "ex_nope"), code=exitcodes.NOT_FOUND)
    assert_refused(cli("log", "tail", "ex_seed", "--since", "yesterday"), code=exitcodes.USAGE)


def test_follow_prints_each_new_event_once_in_order_and_exits_when_the_run_ends(env, db, lane):
    proc = subprocess.Popen(buildctl_executable() + ["log", "tail", "ex_seed", "--follow", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The follower says when its starting point is fixed; only then are events written.
        ready = proc.stderr.readline()
        assert ready.startswith("following ex_seed"), ready
        expected = []
        for i in range(30):
            eid = _add(db, "ex_seed", "info" if i % 3 else "task_started", f"event {i}", task="T-001" if i % 2 else None)
            expected.append((eid, f"event {i}"))
            if i % 10 == 0:
                _add(db, "ex_other", "info", f"other lane {i}")
        _add(db, "ex_seed", "task_completed", "last one")
        expected.append((None, "last one"))
        db.execute(f"UPDATE task_list_execution_runs SET status = 'completed', completed_at = {db.sql.now} "
                   "WHERE execution_id = 'ex_seed'")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["message"] for e in events] == [m for _, m in expected]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e["execution_id"] == "ex_seed" for e in events)


def test_follow_drains_events_written_before_the_run_ended(db, lane):
    """The generator reads the run's status before each drain, so nothing written before the end is lost."""
    got = []
    gen = execlog.follow(db, "ex_seed", poll_s=0.01, max_poll_s=0.02)

    def writer():
        from buildctl import storage

        w = storage.connect(db.location)
        try:
            for i in range(50):
                execlog.add(w, "ex_seed", "info", f"m{i}")
            with w.write():
                w.execute("UPDATE task_list_execution_runs SET status = 'cancelled' WHERE execution_id = 'ex_seed'")
        finally:
            w.close()

    t = threading.Thread(target=writer)
    t.start()
    for ev in gen:
        got.append(ev["message"])
    t.join()
    assert got == [f"m{i}" for i in range(50)]


# --------------------------------------------------------------------------- failures (SIA)

def test_failures_same_error_is_no_progress_and_different_errors_are_progress(cli, db, lane):
    for _ in range(3):
        _add(db, "ex_seed", "task_failed", "build failed", task="T-001", error="undefined symbol foo")
    for err in ("E1", "E2", "E3"):
        _add(db, "ex_seed", "task_failed", "build failed", task="T-002", error=err)
    for err in ("X", "X"):
        _add(db, "ex_seed", "task_failed", "two only", task="T-003", error=err)
    for _ in range(3):
        _add(db, "ex_other", "task_failed", "other lane", task="T-003", error="X")
    rows = json.loads(cli("log", "failures", "ex_seed", "--json", check=True).stdout)
    by_task = {r["task"]: r for r in rows}
    assert set(by_task) == {"T-001", "T-002"}  # T-003 failed twice here; its other-lane failures do not count
    assert by_task["T-001"]["sia_triggered"] and by_task["T-001"]["no_progress"] is True
    assert by_task["T-001"]["failure_count"] == 3 and by_task["T-001"]["last_error"] == "undefined symbol foo"
    assert by_task["T-002"]["sia_triggered"] and by_task["T-002"]["no_progress"] is False
    assert by_task["T-002"]["error_changes"] == 2
    assert [a["error_changed"] for a in by_task["T-002"]["attempts"]] == [1, 1]
    only = json.loads(cli("log", "failures", "ex_seed", "--task", "T-003", "--min", "2", "--json", check=True).stdout)
    assert [(r["task"], r["no_progress"]) for r in only] == [("T-003", True)]
    table = cli("log", "failures", "ex_seed", check=True).stdout
    assert "no progress" in table and "T-002" in table


def test_a_success_resets_the_consecutive_count(db, lane):
    for _ in range(2):
        _add(db, "ex_seed", "task_failed", "f", task="T-001", error="same")
    _add(db, "ex_seed", "task_completed", "ok", task="T-001")
    _add(db, "ex_seed", "task_failed", "f", task="T-001", error="same")
    assert execlog.failures(db, "ex_seed") == []
    # Failures without a context.error are compared by their message.
    for msg in ("m1", "m1", "m1"):
        _add(db, "ex_seed", "task_failed", msg, task="T-002")
    [hit] = execlog.failures(db, "ex_seed")
    assert hit["task"] == "T-002" and hit["no_progress"] is True and hit["last_error"] == "m1"
