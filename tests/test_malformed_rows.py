"""Readers tolerate a malformed stored row (issue 11 item 5): JSON text that is not
strict JSON (NaN written by an old version, garbage written by hand) and non-finite REALs
break no read command; JSON output stays strict and shows such a value raw, as a string.

The rows are written by raw SQL into a migrated database, then read through the domain
functions and through the real `buildctl` command (table and --json)."""

from __future__ import annotations

import math

import pytest

import seed

from buildctl import agents, agentstate, checkpoints, execlog, jsonstrict, render, runs, tasklists

NAN_CONTEXT = '{"error": NaN}'
GARBAGE = "not json {"


@pytest.fixture
def damaged(migrated):
    """A run whose every JSON column holds a value that is not strict JSON."""
    conn = seed.connect(migrated)
    ids = seed.seed_list(conn, tasks=("T-001", "T-002"))
    seed.seed_run(conn)
    seed.seed_wave(conn, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]])
    seed.seed_agent(conn, "ag_bad", heartbeat_ago_s=1)
    conn.execute("UPDATE build_agent_instances SET config = ?, error_context = ? WHERE instance_id = 'ag_bad'",
                 ('{"maxRetries": NaN}', GARBAGE))
    conn.execute("UPDATE wave_task_assignments SET status = 'running', instance_id = 'ag_bad', "
                 "assigned_at = datetime('now') WHERE task_id = ?", (ids["T-001"],))
    conn.execute("INSERT INTO agent_heartbeats (instance_id, status, cpu_percent, memory_usage_mb) "
                 "VALUES ('ag_bad', 'running', 9e999, 12)")
    # Three task_failed rows as an old `log add --context '{"error": NaN}'` wrote them, then
    # one with a number that overflows and one of plain garbage.
    for _ in range(3):
        conn.execute("INSERT INTO task_execution_log (execution_id, task_id, event_type, message, context) "
                     "VALUES ('ex_seed', ?, 'task_failed', 'boom', ?)", (ids["T-001"], NAN_CONTEXT))
    conn.execute("INSERT INTO task_execution_log (execution_id, task_id, event_type, message, context) "
                 "VALUES ('ex_seed', ?, 'warning', 'overflow', '{\"error\": 1e999}')", (ids["T-001"],))
    conn.execute("INSERT INTO task_execution_log (execution_id, event_type, message, context) "
                 "VALUES ('ex_seed', 'info', 'hand-written', ?)", (GARBAGE,))
    conn.execute("INSERT INTO checkpoints (id, execution_id, task_id, instance_id, git_ref, files_snapshot, metadata) "
                 "VALUES ('cp_bad', 'ex_seed', ?, 'ag_bad', 'deadbeef', '[{\"path\": \"a\"', '{\"kind\": Infinity}')",
                 (ids["T-001"],))
    a, b = sorted(ids.values())
    conn.execute("INSERT INTO parallelism_analysis (task_a_id, task_b_id, can_parallel, conflict_type, conflict_details) "
                 "VALUES (?, ?, 0, 'file_conflict', ?)", (a, b, NAN_CONTEXT))
    # An infinite timeout passes the CHECK (timeout_s > 0).
    conn.execute("UPDATE tasks SET timeout_s = 9e999 WHERE id = ?", (ids["T-002"],))
    conn.close()
    return migrated


def _strict(text: str):
    """The document, parsed strictly: no NaN/Infinity anywhere in what we printed."""
    return jsonstrict.loads(text, what="the output", max_chars=None)


# --------------------------------------------------------------------------- domain functions

def test_log_failures_tolerates_contexts_that_are_not_json(db, damaged):
    """Was: sqlite3.OperationalError 'malformed JSON' from json_extract, exit 7 for good."""
    [hit] = execlog.failures(db, "ex_seed")
    assert hit["task"] == "T-001" and hit["failure_count"] == 3
    # A malformed context compares by message: the same message each time is no progress.
    assert hit["no_progress"] is True and hit["error_changes"] == 0
    assert hit["last_error"] == "boom"
    document = _strict(render.json_text(hit))
    assert document["attempts"][0]["attempt_1_context"] == NAN_CONTEXT  # shown raw


def test_log_tail_json_shows_a_malformed_context_raw(db, damaged):
    events = execlog.tail(db, "ex_seed")
    document = _strict(render.json_text(events))
    contexts = [e["context"] for e in document]
    assert contexts == [NAN_CONTEXT] * 3 + ['{"error": 1e999}', GARBAGE]


def test_agent_show_and_list_tolerate_a_malformed_config(db, damaged):
    agent = agents.show(db, "ag_bad")
    document = _strict(render.json_text(agent))
    assert document["config"] == '{"maxRetries": NaN}' and document["error_context"] == GARBAGE
    assert document["recent_heartbeats"][0]["cpu_percent"] == "Infinity"
    listed = _strict(render.json_text(agents.list_agents(db, "ex_seed")))
    assert [a["config"] for a in listed] == ['{"maxRetries": NaN}']
    # The worker's view of it: the defaults.
    assert agentstate.config_of(db, "ag_bad") == agentstate.DEFAULT_CONFIG


def test_a_stored_config_value_out_of_range_falls_back_to_its_default(db, damaged):
    db.execute("UPDATE build_agent_instances SET config = ? WHERE instance_id = 'ag_bad'",
               ('{"maxRetries": "x", "killGraceMs": -5, "taskTimeoutMs": 1000, "colour": 1}',))
    assert agentstate.config_of(db, "ag_bad") == {**agentstate.DEFAULT_CONFIG, "taskTimeoutMs": 1000}


def test_finishing_an_agent_with_a_malformed_config_releases_its_task(db, damaged):
    """Was: int(nan) in the release, exit 70, the task held for good."""
    result = agents.finish(db, "ag_bad", "failed", error="gone")
    # The default maxRetries (3) applies; the three task_failed rows make this the fourth attempt.
    assert [r["outcome"] for r in result["released"]] == ["failed"]


def test_checkpoint_list_tolerates_malformed_snapshot_and_metadata(db, damaged):
    """Was: json_array_length raised 'malformed JSON'."""
    [row] = checkpoints.list_checkpoints(db, "ex_seed")
    assert row["file_count"] is None and row["kind"] == "manual"
    document = _strict(render.json_text([row]))
    assert document[0]["metadata"] == '{"kind": Infinity}'


def test_run_show_and_tasks_show_tolerate_damaged_rows(db, damaged):
    run = _strict(render.json_text(runs.show_run(db, "ex_seed")))
    assert run["execution_id"] == "ex_seed"
    shown = _strict(render.json_text(tasklists.show_list(db, "tl_seed")))
    assert [t["timeout_s"] for t in shown["tasks"]] == [None, "Infinity"]


def test_render_never_prints_nan_or_infinity():
    text = render.json_text({"a": math.nan, "b": [math.inf, -math.inf], "context": NAN_CONTEXT, "config": '{"x": 1}'},
                            indent=None)
    assert text == ('{"a": "NaN", "b": ["Infinity", "-Infinity"], "context": "{\\"error\\": NaN}", '
                    '"config": {"x": 1}}')


# --------------------------------------------------------------------------- the real command

READS = [
    ("log", "tail", "ex_seed"),
    ("log", "failures", "ex_seed"),
    ("agent", "show", "ag_bad"),
    ("agent", "list"),
    ("checkpoint", "list", "ex_seed"),
    ("run", "show", "ex_seed"),
    ("tasks", "show", "tl_seed"),
    ("waves", "ex_seed"),
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_read_commands_succeed_on_damaged_rows_with_strict_json(cli, damaged, args):
    table = cli(*args)
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    as_json = cli(*args, "--json")
    assert as_json.returncode == 0, as_json.stderr
    _strict(as_json.stdout)  # no NaN or Infinity token anywhere: malformed values are strings


def test_log_failures_command_reports_the_task(cli, damaged):
    r = cli("log", "failures", "ex_seed", "--json")
    assert r.returncode == 0, r.stderr
    [hit] = _strict(r.stdout)
    assert hit["task"] == "T-001" and hit["failure_count"] == 3 and hit["no_progress"] is True
