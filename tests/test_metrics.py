"""`buildctl metrics` (issue 13): the exposition parses with prometheus_client's own parser and
every value equals a recount in plain SQL; label values are escaped; the textfile is written
atomically."""

from __future__ import annotations

import os
import sqlite3

import pytest

import seed
from buildctl import metrics, states
from buildctl.errors import UsageError

NASTY_NAME = 'say "hi" \\ back\nslash'


def parse(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation, family.name
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


@pytest.fixture
def busy(db):
    """Three lists and five runs in several states, tasks in every assignment state, agents of every
    status (stale and fresh, one never heartbeated), and log events of several types."""
    conn = db.conn
    a = seed.seed_list(conn, "tl_a", tasks=("T-001", "T-002", "T-003", "T-004", "T-005", "T-006"))
    b = seed.seed_list(conn, "tl_b", tasks=("T-001", "T-002"))
    seed.seed_list(conn, "tl_c", tasks=("T-001",))
    conn.execute("UPDATE task_lists_v2 SET name = ? WHERE id = 'tl_b'", (NASTY_NAME,))
    seed.seed_run(conn, "ex_a1", "tl_a", status="failed", run_number=1, completed_at="2026-11-01 10:00:00")
    seed.seed_run(conn, "ex_a2", "tl_a", status="running", run_number=2)
    seed.seed_run(conn, "ex_b1", "tl_b", status="completed", run_number=1, completed_at="2026-11-02 10:00:00")
    seed.seed_run(conn, "ex_b2", "tl_b", status="paused", run_number=2)
    seed.seed_run(conn, "ex_c1", "tl_c", status="cancelled", run_number=1, completed_at="2026-11-03 10:00:00")
    seed.seed_wave(conn, "ex_a1", 1, list(a.values()))
    seed.seed_wave(conn, "ex_a2", 1, [a["T-001"], a["T-002"], a["T-003"]])
    seed.seed_wave(conn, "ex_a2", 2, [a["T-004"], a["T-005"], a["T-006"]])
    seed.seed_wave(conn, "ex_b1", 1, list(b.values()))
    seed.seed_wave(conn, "ex_b2", 1, list(b.values()))
    for task_id, status in ((a["T-001"], "completed"), (a["T-002"], "running"), (a["T-003"], "assigned"),
                            (a["T-004"], "failed"), (a["T-005"], "skipped")):
        conn.execute("UPDATE wave_task_assignments SET status = ? WHERE task_id = ? AND wave_id LIKE 'wv_ex_a2_%'",
                     (status, task_id))
    conn.execute("UPDATE wave_task_assignments SET status = 'completed' WHERE wave_id = 'wv_ex_b1_1'")
    agents = [("ag_fresh", "ex_a2", "running", 5, 2), ("ag_silent", "ex_a2", "running", 600, 300),
              ("ag_never", "ex_a2", "initializing", 120, None), ("ag_young", "ex_b2", "initializing", 3, None),
              ("ag_idle", "ex_b2", "idle", 400, 90), ("ag_done", "ex_a1", "completed", 9000, 8000),
              ("ag_bad", "ex_a1", "failed", 9000, 8500), ("ag_stuck", "ex_a1", "stuck", 9000, 7000)]
    for iid, ex, status, spawned, beat in agents:
        seed.seed_agent(conn, iid, ex, status=status, spawned_ago_s=spawned, heartbeat_ago_s=beat)
    for ex, kind, n in (("ex_a2", "task_started", 4), ("ex_a2", "task_failed", 2), ("ex_a1", "info", 3),
                        ("ex_b1", "warning", 1), ("ex_a2", "checkpoint_created", 5)):
        for _ in range(n):
            conn.execute("INSERT INTO task_execution_log (execution_id, event_type, message) VALUES (?, ?, 'x')",
                         (ex, kind))
    return db


def recount(db, stale_after_s=60.0) -> dict:
    """The same figures, counted again with plain SQL."""
    q = db.conn.execute
    expected = {}
    for status in states.RUN_STATUSES:
        expected[("buildctl_runs", (("status", status),))] = q(
            "SELECT COUNT(*) FROM task_list_execution_runs WHERE status = ?", (status,)).fetchone()[0]
    for status in states.AGENT_STATUSES:
        expected[("buildctl_agents", (("status", status),))] = q(
            "SELECT COUNT(*) FROM build_agent_instances WHERE status = ?", (status,)).fetchone()[0]
    for kind in states.EVENT_TYPES:
        expected[("buildctl_log_events", (("type", kind),))] = q(
            "SELECT COUNT(*) FROM task_execution_log WHERE event_type = ?", (kind,)).fetchone()[0]
    shown = q("SELECT r.execution_id, l.name, r.run_number FROM task_list_execution_runs r "
              "JOIN task_lists_v2 l ON l.id = r.task_list_id WHERE r.status IN ('pending', 'running', 'paused') "
              "OR r.run_number = (SELECT MAX(run_number) FROM task_list_execution_runs x "
              "WHERE x.task_list_id = r.task_list_id)").fetchall()
    for ex, name, number in shown:
        for status in states.ASSIGNMENT_STATUSES:
            labels = (("execution_id", ex), ("run_number", str(number)), ("status", status), ("task_list", name))
            expected[("buildctl_run_tasks", labels)] = q(
                "SELECT COUNT(*) FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id "
                "WHERE w.execution_id = ? AND a.status = ?", (ex, status)).fetchone()[0]
    expected[("buildctl_stale_agents", ())] = q(
        "SELECT COUNT(*) FROM build_agent_instances WHERE status IN ('initializing', 'running', 'idle') "
        "AND COALESCE(last_heartbeat, spawned_at) < datetime('now', ?)", (f"-{stale_after_s} seconds",)).fetchone()[0]
    expected[("buildctl_stale_threshold_seconds", ())] = stale_after_s
    return expected


def test_the_exposition_parses_and_equals_a_recount(busy):
    text = metrics.exposition(busy)
    got = parse(text)
    expected = recount(busy)
    for key, value in expected.items():
        assert got.get(key) == value, (key, got.get(key), value)
    # Everything else is the age and the size, checked below; no series beyond these.
    rest = {k for k in got if k not in expected}
    assert rest == {("buildctl_oldest_heartbeat_age_seconds", ()), ("buildctl_database_size_bytes", ())}
    # Ended runs that are not their list's newest (ex_a1, ex_b1) are left out; ex_c1 (cancelled, the newest
    # of tl_c) is in, with no tasks.
    runs_shown = {dict(k[1])["execution_id"] for k in got if k[0] == "buildctl_run_tasks"}
    assert runs_shown == {"ex_a2", "ex_b2", "ex_c1"}
    assert got[("buildctl_stale_agents", ())] == 3  # ag_silent, ag_never (judged by its spawn), ag_idle
    assert got[("buildctl_runs", (("status", "running"),))] == 1
    nasty = {dict(k[1])["task_list"] for k in got if k[0] == "buildctl_run_tasks"}
    assert NASTY_NAME in nasty, nasty  # quotes, a backslash and a newline survive the escaping
    for line in text.splitlines():
        assert line.startswith(("# HELP buildctl_", "# TYPE buildctl_", "buildctl_")), line


def test_the_oldest_heartbeat_age_and_the_database_size(busy, migrated):
    got = parse(metrics.exposition(busy))
    age = got[("buildctl_oldest_heartbeat_age_seconds", ())]
    # ag_silent (300 s) is the oldest live one; ended agents (ag_done, 8000 s) do not count.
    assert 300 <= age < 300 + 60
    busy.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = got[("buildctl_database_size_bytes", ())]
    assert size == os.path.getsize(migrated) and size > 0


def test_the_stale_threshold_is_a_parameter(busy):
    got = parse(metrics.exposition(busy, stale_after_s=100))
    assert got[("buildctl_stale_agents", ())] == recount(busy, 100)[("buildctl_stale_agents", ())] == 2
    assert got[("buildctl_stale_threshold_seconds", ())] == 100.0
    with pytest.raises(UsageError, match="stale threshold"):
        metrics.collect(busy, stale_after_s=-1)


def test_an_empty_database_has_every_series_at_zero(db):
    got = parse(metrics.exposition(db))
    assert got[("buildctl_runs", (("status", "pending"),))] == 0
    assert got[("buildctl_oldest_heartbeat_age_seconds", ())] == 0
    assert not any(k[0] == "buildctl_run_tasks" for k in got)
    assert len([k for k in got if k[0] == "buildctl_agents"]) == len(states.AGENT_STATUSES)


# --------------------------------------------------------------------------- the textfile

def test_write_textfile_replaces_the_file_atomically_with_a_readable_mode(tmp_path, busy):
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "buildctl.prom"
    target.write_text("old\n")
    old_umask = os.umask(0o022)
    try:
        metrics.write_textfile(str(target), metrics.exposition(busy))
    finally:
        os.umask(old_umask)
    assert parse(target.read_text())  # whole and parseable
    assert [p.name for p in folder.iterdir()] == ["buildctl.prom"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_write_textfile_refuses_a_path_it_cannot_write_and_leaves_nothing(tmp_path):
    with pytest.raises(UsageError, match="cannot write .*missing"):
        metrics.write_textfile(str(tmp_path / "missing" / "x.prom"), "x 1\n")
    (tmp_path / "dir.prom").mkdir()
    with pytest.raises(UsageError, match="cannot write .*dir.prom"):
        metrics.write_textfile(str(tmp_path / "dir.prom"), "x 1\n")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.prom"]  # no temporary file left behind


def test_label_values_are_escaped_per_the_format():
    text = metrics.text_format([{"name": "buildctl_x", "type": "gauge", "help": "a \\ help\nline",
                                 "samples": [({"v": 'a"b\\c\nd'}, 1.5), ({}, float("nan"))]}])
    assert 'buildctl_x{v="a\\"b\\\\c\\nd"} 1.5' in text and "# HELP buildctl_x a \\\\ help\\nline" in text
    got = parse(text)
    assert got[("buildctl_x", (("v", 'a"b\\c\nd'),))] == 1.5


def test_database_size_is_page_count_times_page_size(db, migrated):
    conn = sqlite3.connect(migrated)
    expected = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert db.size_bytes() == expected
