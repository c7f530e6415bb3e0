"""`buildctl doctor`: healthy database exits 0; corruptions are reported and exit 1."""

from __future__ import annotations

import json

import pytest

import seed
from conftest import snapshot

pytestmark = pytest.mark.engines


def _seed_consistent_run(path):
    conn = seed.connect(path)
    ids = seed.seed_list(conn, tasks=("T-001", "T-002"))
    seed.seed_run(conn)
    seed.seed_wave(conn, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]])
    return conn, ids


def test_healthy_database_exits_zero(cli, migrated):
    conn, _ = _seed_consistent_run(migrated)
    conn.close()
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"integrity", "foreign_keys", "migrations", "schema", "counters",
                                                      "orphan_assignments", "stale_agents", "malformed_json"}


def test_hand_corrupted_counter_and_orphan_assignment_are_reported(cli, migrated):
    conn, ids = _seed_consistent_run(migrated)
    conn.execute("UPDATE task_list_execution_runs SET completed_tasks = 7 WHERE execution_id = 'ex_seed'")
    # An assignment running for an agent that has ended: nobody will ever finish it.
    seed.seed_agent(conn, "ag_gone", status="completed", heartbeat_ago_s=1)
    conn.execute("UPDATE wave_task_assignments SET status = 'running', instance_id = 'ag_gone' WHERE task_id = ?",
                 (ids["T-002"],))
    conn.close()
    before = snapshot(migrated)
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert any("completed_tasks is 7, recount says 0" in f for f in checks["counters"]["findings"])
    assert any("T-002" in f and "ag_gone is completed" in f for f in checks["orphan_assignments"]["findings"])
    assert checks["integrity"]["ok"] and checks["foreign_keys"]["ok"]
    assert snapshot(migrated) == before  # doctor only reads
    table = cli("doctor")
    assert table.returncode == 1 and "counters" in table.stdout


def test_pending_migration_is_reported(cli, db_path, migrate_upto):
    from buildctl import storage

    db = storage.connect(str(db_path), create=True, check_schema=False)
    migrate_upto(db, "074_build_agent_instances.sql")
    db.close()
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert any("075_execution_runs.sql is not applied" in f for f in checks["migrations"]["findings"])


@pytest.mark.sqlite_only(reason="SQLite leaves foreign keys unchecked in any connection that does not turn them on "
                                 "(the sqlite3 shell); PostgreSQL checks them on every write, and doctor does not look")
def test_broken_foreign_key_is_reported(cli, migrated):
    conn, _ = _seed_consistent_run(migrated)
    seed.without_foreign_keys(conn, lambda: conn.execute(
        "INSERT INTO agent_heartbeats (instance_id, status) VALUES ('ag_nobody', 'running')"))
    conn.close()
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert any("agent_heartbeats" in f for f in checks["foreign_keys"]["findings"])


# --------------------------------------------------------------------------- malformed stored JSON

def test_malformed_json_rows_are_named_by_table_row_and_column(cli, migrated):
    conn, ids = _seed_consistent_run(migrated)
    seed.seed_agent(conn, "ag_ok", heartbeat_ago_s=1)
    seed.seed_agent(conn, "ag_nan", heartbeat_ago_s=1)
    conn.execute("""UPDATE build_agent_instances SET config = '{"maxRetries": NaN}', error_context = '{"a": 1, "a": 2}'
                    WHERE instance_id = 'ag_nan'""")
    log = [conn.execute("INSERT INTO task_execution_log (execution_id, event_type, message, context) "
                        "VALUES ('ex_seed', 'info', 'm', ?) RETURNING id", (ctx,)).fetchone()[0]
           for ctx in ('{"ok": true}', '{"error": NaN}', "garbage", '{"n": 1e999}', "[" * 70 + "]" * 70)]
    conn.execute("INSERT INTO checkpoints (id, execution_id, task_id, git_ref, files_snapshot, metadata) "
                 "VALUES ('cp_bad', 'ex_seed', ?, 'abc', '[', '{\"kind\": Infinity}')", (ids["T-001"],))
    a, b = sorted(ids.values())
    pair = conn.execute("INSERT INTO parallelism_analysis (task_a_id, task_b_id, can_parallel, conflict_details) "
                        "VALUES (?, ?, 0, '{') RETURNING id", (a, b)).fetchone()[0]
    conn.execute("INSERT INTO grouping_suggestions (id, suggested_name, suggested_tasks) VALUES ('gs_1', 'g', 'nope')")
    conn.close()
    before = snapshot(migrated)
    r = cli("doctor", "--json")
    assert r.returncode == 1, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert [c for c in checks if not checks[c]["ok"]] == ["malformed_json"]
    assert checks["malformed_json"]["findings"] == [
        f"task_execution_log row {log[1]}: context is not valid JSON (NaN is not allowed (JSON has no NaN or "
        "Infinity; use null or a string))",
        f"task_execution_log row {log[2]}: context is not valid JSON (Expecting value: line 1 column 1)",
        f"task_execution_log row {log[3]}: context is not valid JSON (the number '1e999' is out of range (it "
        "overflows to infinity))",
        f"task_execution_log row {log[4]}: context is not valid JSON (nested more than 64 levels deep)",
        "build_agent_instances row ag_nan: config is not valid JSON (NaN is not allowed (JSON has no NaN or "
        "Infinity; use null or a string))",
        "build_agent_instances row ag_nan: error_context is not valid JSON (the key 'a' appears twice in one object)",
        "checkpoints row cp_bad: files_snapshot is not valid JSON (Expecting value: line 1 column 2)",
        "checkpoints row cp_bad: metadata is not valid JSON (Infinity is not allowed (JSON has no NaN or Infinity; "
        "use null or a string))",
        f"parallelism_analysis row {pair}: conflict_details is not valid JSON (Expecting property name enclosed in "
        "double quotes: line 1 column 2)",
        "grouping_suggestions row gs_1: suggested_tasks is not valid JSON (Expecting value: line 1 column 1)",
    ]
    assert snapshot(migrated) == before  # doctor only reads


def test_many_malformed_rows_are_counted_after_the_first_ones(migrated, db):
    from buildctl import doctor

    conn, _ = _seed_consistent_run(migrated)
    conn.executemany("INSERT INTO task_execution_log (execution_id, event_type, message, context) "
                     "VALUES ('ex_seed', 'info', 'm', 'x')", [()] * (doctor.LISTED_PER_COLUMN + 5))
    conn.close()
    findings = {c.name: c.findings for c in doctor.diagnose(db)}["malformed_json"]
    assert len(findings) == doctor.LISTED_PER_COLUMN + 1
    assert findings[-1] == "task_execution_log: 5 more rows with a context that is not valid JSON"


def test_every_json_column_of_the_schema_is_checked():
    """The schema marks its JSON columns with a `-- JSON` comment; doctor checks each of them."""
    import re

    from buildctl import doctor, storage

    marked = set()
    for name in storage.migration_names():
        table = None
        for line in (storage.sql_dir() / name).read_text().splitlines():
            m = re.match(r"\s*CREATE TABLE IF NOT EXISTS (\w+)", line)
            if m:
                table = m.group(1)
            m = re.match(r"\s*(\w+) TEXT.*--\s*JSON", line)
            if m:
                marked.add((table, m.group(1)))
    assert marked and marked == {(t, c) for t, _key, columns in doctor.STORED_JSON for c in columns}


# --------------------------------------------------------------------------- damaged files

def _overwrite_page(path, table):
    """Random bytes over the root page of ``table`` (a real database with a page overwritten)."""
    import os
    import sqlite3

    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(path, "r+b") as f:
        f.seek(page_size * (root - 1))
        f.write(os.urandom(page_size))


@pytest.mark.sqlite_only(reason="a damaged SQLite file")
def test_a_database_with_a_page_overwritten_lists_findings_and_exits_1(cli, migrated):
    """Was: exit 7 ("database disk image is malformed") from the first check that read the table."""
    conn, _ = _seed_consistent_run(migrated)
    conn.executemany("INSERT INTO task_execution_log (execution_id, event_type, message, context) "
                     "VALUES ('ex_seed', 'info', ?, '{}')", [("m" * 200,)] * 500)
    conn.close()
    _overwrite_page(migrated, "task_execution_log")
    r = cli("doctor", "--json")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr == ""
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert not checks["integrity"]["ok"]
    assert checks["malformed_json"]["findings"] == ["the check could not run: database disk image is malformed"]
    table = cli("doctor")
    assert table.returncode == 1 and "integrity" in table.stdout


def test_a_file_that_is_not_a_database_gets_findings_not_an_error(tmp_path):
    import os

    from buildctl import doctor, storage

    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(100_000))
    db = storage.open_existing(str(junk))
    checks = doctor.diagnose(db)
    db.close()
    assert [(c.name, c.findings) for c in checks] == [
        (name, ["the check could not run: file is not a database"])
        for name in ("integrity", "foreign_keys", "migrations")
    ]
    assert junk.stat().st_size == 100_000 and not (tmp_path / "junk.db-wal").exists()  # nothing written


@pytest.mark.sqlite_only(reason="a damaged SQLite file")
def test_a_database_that_cannot_be_opened_at_all_is_one_line(cli, tmp_path):
    import pytest

    from buildctl import exitcodes, storage
    from buildctl.errors import DatabaseError, NeedsMigration
    from conftest import assert_refused

    with pytest.raises(NeedsMigration, match="no database at"):
        storage.open_existing(str(tmp_path / "missing.db"))
    with pytest.raises(DatabaseError, match="it is a folder"):
        storage.open_existing(str(tmp_path))
    assert_refused(cli("doctor", extra_env={"BUILDCTL_DB": str(tmp_path)}), exitcodes.DATABASE)


@pytest.mark.sqlite_only(reason="a damaged SQLite file")
def test_doctor_on_a_file_that_is_not_a_database_lists_findings_and_exits_1(cli, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(bytes(range(256)) * 64)
    r = cli("--db", junk, "doctor", "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is False
    integrity = next(c for c in report["checks"] if c["name"] == "integrity")
    assert integrity["findings"] and "Traceback" not in r.stderr
    assert junk.read_bytes() == bytes(range(256)) * 64  # looked at, not changed


def test_doctor_fix_hands_back_a_task_held_by_an_ended_agent(cli, db, migrated, tmp_path):
    """An agent that ended without handing back its task (an older buildctl, a kill between two
    transactions): doctor finds it, `doctor --fix` hands the task back, and the run goes on."""
    from runhelpers import task, write_list

    ex = cli("run", "start", write_list(tmp_path / "l.json", [task("A"), task("B", deps=["A"])]), check=True).out
    ag = cli("agent", "spawn", ex, "--task", "A", check=True).out
    db.execute("UPDATE build_agent_instances SET status = 'completed' WHERE instance_id = ?", (ag,))
    r = cli("doctor", "--json")
    assert r.returncode == 1
    findings = {c["name"]: c["findings"] for c in json.loads(r.stdout)["checks"]}
    assert findings["orphan_assignments"] and ag in findings["orphan_assignments"][0]
    fixed = cli("doctor", "--fix", "--json")
    assert fixed.returncode == 0, fixed.stdout
    assert [r["instance_id"] for r in json.loads(fixed.stdout)["fixed"]["released"]] == [ag]
    claim = json.loads(cli("agent", "spawn", ex, "--next", "--json", check=True).stdout)
    assert claim["task"] == "A" and claim["attempt"] == 2


def test_an_index_or_column_lost_outside_migrate_is_named(cli, migrated):
    """The bookkeeping says every file was applied; the schema check sees what a hand-made
    change took away since (an index dropped, a table rebuilt without a column)."""
    conn = seed.connect(migrated)
    conn.execute("DROP INDEX idx_wave_tasks")
    conn.execute("ALTER TABLE checkpoints DROP COLUMN metadata")
    conn.close()
    before = snapshot(migrated)
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["migrations"]["ok"]
    assert checks["schema"]["findings"] == [
        "column checkpoints.metadata is missing",
        "index idx_wave_tasks on wave_task_assignments is missing (queries that use it scan the table instead)",
    ]
    assert snapshot(migrated) == before  # doctor only reads
