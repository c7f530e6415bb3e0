"""Migrations: a blank database migrated, an older one migrated forward, and the refusals."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildctl import migrations, storage
from conftest import assert_refused, buildctl_executable, snapshot

APPENDIX_TABLES = {
    "build_agent_instances", "agent_heartbeats", "task_execution_log", "parallel_execution_waves",
    "wave_task_assignments", "task_list_execution_runs", "checkpoints",
}
BASE_TABLES = {"task_lists_v2", "tasks", "task_relationships", "task_file_impacts", "parallelism_analysis",
               "grouping_suggestions"}

# Every index of the original schema (migrations 073-076), with its partial WHERE clause where it has one.
APPENDIX_INDEXES = {
    "idx_build_agents_execution": ("build_agent_instances", None),
    "idx_build_agents_status": ("build_agent_instances", None),
    "idx_build_agents_heartbeat": ("build_agent_instances", "status = 'running'"),
    "idx_heartbeats_instance": ("agent_heartbeats", None),
    "idx_heartbeats_timestamp": ("agent_heartbeats", None),
    "idx_exec_log_execution": ("task_execution_log", None),
    "idx_exec_log_task": ("task_execution_log", None),
    "idx_exec_log_timestamp": ("task_execution_log", None),
    "idx_exec_log_errors": ("task_execution_log", "event_type IN ('task_failed', 'error')"),
    "idx_waves_active": ("parallel_execution_waves", "status IN ('pending', 'running')"),
    "idx_wave_tasks": ("wave_task_assignments", None),
    "idx_wave_tasks_instance": ("wave_task_assignments", "instance_id IS NOT NULL"),
    "idx_exec_runs_list": ("task_list_execution_runs", None),
    "idx_exec_runs_active": ("task_list_execution_runs", "status IN ('pending', 'running', 'paused')"),
    "idx_checkpoints_execution": ("checkpoints", None),
    "idx_checkpoints_task": ("checkpoints", None),
}

# (table, a valid row minus the constrained column, the column, an invalid value)
CHECKS = [
    ("build_agent_instances", "valid_status", "status"),
    ("task_execution_log", "valid_event_type", "event_type"),
    ("parallel_execution_waves", "valid_wave_status", "status"),
    ("wave_task_assignments", "valid_assignment_status", "status"),
    ("task_list_execution_runs", "valid_run_status", "status"),
    ("task_lists_v2", "valid_task_list_status", "status"),
    ("tasks", "valid_task_status", "status"),
    ("task_file_impacts", "valid_operation", "operation"),
    ("grouping_suggestions", "valid_suggestion_status", "status"),
]


def schema(path: Path) -> dict[str, dict]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        return {name: {"type": t, "table": tbl, "sql": sql} for t, name, tbl, sql in rows}
    finally:
        conn.close()


def test_blank_database_gets_every_table_index_and_check(migrated):
    objects = schema(migrated)
    tables = {n for n, o in objects.items() if o["type"] == "table"}
    assert APPENDIX_TABLES | BASE_TABLES | {"buildctl_migrations"} <= tables
    for name, (table, where) in APPENDIX_INDEXES.items():
        assert name in objects, name
        assert objects[name]["type"] == "index" and objects[name]["table"] == table
        sql = " ".join(objects[name]["sql"].split())
        if where:
            assert sql.endswith(f"WHERE {where}"), sql
        else:
            assert "WHERE" not in sql, sql
    # The CHECK constraints keep their names (valid_status, ...), inside the real table definitions.
    for table, constraint, _ in CHECKS:
        assert f"CONSTRAINT {constraint} CHECK" in objects[table]["sql"], (table, constraint)
    assert "UNIQUE(execution_id, wave_number)" in objects["parallel_execution_waves"]["sql"]
    assert "UNIQUE(wave_id, task_id)" in objects["wave_task_assignments"]["sql"]
    assert "UNIQUE(task_list_id, run_number)" in objects["task_list_execution_runs"]["sql"]
    assert "CHECK (task_a_id < task_b_id)" in objects["parallelism_analysis"]["sql"]


@pytest.mark.engines
def test_each_engine_builds_the_schema_the_files_define(migrated):
    """Both engines' files build the same tables, columns and index names: SQLite's files
    applied to a scratch database (the reference doctor compares against) and the live
    database read back on its own engine (sqlite-utils on SQLite, the information schema on
    PostgreSQL)."""
    from buildctl import schema

    want = schema.expected()
    assert APPENDIX_TABLES | BASE_TABLES <= set(want)
    assert set(APPENDIX_INDEXES) <= {i for t in want.values() for i in t["indexes"]}
    db = storage.connect(str(migrated))
    try:
        have = schema.live(db)
        assert schema.missing(db) == []
    finally:
        db.close()
    for table, shape in want.items():
        assert have[table]["columns"] == shape["columns"], table
        assert shape["indexes"] <= have[table]["indexes"], table


def test_connection_settings(db):
    assert db.scalar("PRAGMA journal_mode") == "wal"
    assert db.scalar("PRAGMA busy_timeout") >= 5000
    assert db.scalar("PRAGMA foreign_keys") == 1
    assert db.scalar("PRAGMA synchronous") == 1  # NORMAL


def test_database_file_and_folder_are_private(migrated):
    assert (migrated.stat().st_mode & 0o777) == 0o600
    assert (migrated.parent.stat().st_mode & 0o777) == 0o700


# The rows a CHECK test needs first, and for each table a row whose ? is the constrained
# value (portable SQL: tests/test_postgres_storage.py runs them on PostgreSQL too).
CHECK_SETUP = [
    "INSERT INTO task_lists_v2 (id, name) VALUES ('tl_a', 'a')",
    "INSERT INTO tasks (id, display_id, task_list_id, title, command, position) VALUES ('tk_a', 'T-1', 'tl_a', 't', 'true', 0)",
    "INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number) VALUES ('ex_a', 'tl_a', 1)",
    "INSERT INTO parallel_execution_waves (wave_id, execution_id, wave_number, task_count) VALUES ('wv_a', 'ex_a', 1, 1)",
    "INSERT INTO build_agent_instances (instance_id, execution_id, wave_number) VALUES ('ag_a', 'ex_a', 1)",
]
CHECK_ROWS = {  # table: (insert with the value as ?, a valid value)
    "build_agent_instances": ("INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status) VALUES ('ag_b', 'ex_a', 1, ?)", "running"),
    "task_execution_log": ("INSERT INTO task_execution_log (execution_id, event_type, message) VALUES ('ex_a', ?, 'm')", "info"),
    "parallel_execution_waves": ("INSERT INTO parallel_execution_waves (wave_id, execution_id, wave_number, task_count, status) VALUES ('wv_b', 'ex_a', 2, 0, ?)", "running"),
    "wave_task_assignments": ("INSERT INTO wave_task_assignments (wave_id, task_id, status) VALUES ('wv_a', 'tk_a', ?)", "pending"),
    "task_list_execution_runs": ("INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status) VALUES ('ex_b', 'tl_a', 2, ?)", "paused"),
    "task_lists_v2": ("INSERT INTO task_lists_v2 (id, name, status) VALUES ('tl_b', 'b', ?)", "ready"),
    "tasks": ("INSERT INTO tasks (id, display_id, task_list_id, title, command, position, status) VALUES ('tk_b', 'T-2', 'tl_a', 't', 'true', 1, ?)", "skipped"),
    "task_file_impacts": ("INSERT INTO task_file_impacts (task_id, file_path, operation) VALUES ('tk_a', 'a.py', ?)", "UPDATE"),
    "grouping_suggestions": ("INSERT INTO grouping_suggestions (id, suggested_name, suggested_tasks, status) VALUES ('g1', 'n', '[]', ?)", "accepted"),
}


@pytest.mark.parametrize("table, constraint, column", CHECKS)
def test_checks_reject_invalid_values(db, table, constraint, column):
    conn = db.conn
    for sql in CHECK_SETUP:
        conn.execute(sql)
    sql, good = CHECK_ROWS[table]
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute(sql, ("bogus",))
    conn.execute(sql, (good,))  # the same row with a valid value is accepted


def test_confidence_range_is_checked(db):
    db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_a', 'a')")
    db.execute("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) VALUES ('tk_a', 'T-1', 'tl_a', 't', 'true', 0)")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO task_file_impacts (task_id, file_path, operation, confidence) VALUES ('tk_a', 'x', 'READ', 1.5)")


def test_migrate_twice_is_a_noop_and_status_shows_nothing_pending(cli, migrated):
    before = snapshot(migrated)
    again = cli("migrate", "--json", check=True)
    assert '"applied": []' in again.stdout
    assert snapshot(migrated) == before
    status = cli("migrate", "--status", "--json", check=True)
    import json

    states = json.loads(status.stdout)
    assert [s["name"] for s in states] == storage.migration_names()
    assert {s["state"] for s in states} == {"applied"}
    assert all(s["applied_at"].endswith("Z") for s in states)


def test_status_and_dry_run_on_a_missing_database_change_nothing(cli, db_path):
    status = cli("migrate", "--status", check=True)
    assert "pending" in status.stdout
    dry = cli("migrate", "--dry-run", check=True)
    assert "CREATE TABLE IF NOT EXISTS build_agent_instances" in dry.stdout
    assert not db_path.exists()


def test_dry_run_prints_only_pending_sql(cli, tmp_path, db_path, migrate_upto):
    db = storage.connect(str(db_path), create=True, check_schema=False)
    migrate_upto(db, "072_grouping_suggestions.sql")
    db.close()
    before = snapshot(db_path)
    dry = cli("migrate", "--dry-run", check=True).stdout
    assert "-- 073_parallel_execution.sql" in dry and "-- 072_grouping_suggestions.sql" not in dry
    assert snapshot(db_path) == before


def test_older_database_is_migrated_forward_keeping_its_rows(cli, db_path, migrate_upto):
    db = storage.connect(str(db_path), create=True, check_schema=False)
    migrate_upto(db, "071_parallelism_analysis.sql")
    db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_old', 'kept')")
    db.close()
    # Every other command refuses the old database with one line naming migrate.
    r = cli("tasks", "list")
    assert_refused(r, code=6, contains="buildctl migrate")
    cli("migrate", check=True)
    objects = schema(db_path)
    assert APPENDIX_TABLES <= set(objects)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT name FROM task_lists_v2").fetchall() == [("kept",)]
    conn.close()


def test_missing_database_is_refused_naming_migrate(cli, db_path):
    r = cli("tasks", "list")
    assert_refused(r, code=6, contains="buildctl migrate")
    assert not db_path.exists()


def test_edited_applied_file_is_refused_by_name(cli, migrated, tmp_path, monkeypatch):
    # Copy the package's sql/ and point a copy of buildctl at it through an edited file.
    import shutil

    sql_copy = tmp_path / "sqlcopy"
    shutil.copytree(storage.sql_dir(), sql_copy)
    with open(sql_copy / "073_parallel_execution.sql", "a") as f:
        f.write("\n-- an edit after the fact\n")
    code = (
        "import sys, buildctl.storage as s, pathlib;"
        f"s.sql_dir = lambda: pathlib.Path({str(sql_copy)!r});"
        "from buildctl.entry import run as run_app; sys.exit(run_app(['migrate']))"
    )
    env = {**os.environ, "BUILDCTL_DB": str(migrated)}
    before = snapshot(migrated)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 5
    assert p.stderr.startswith("error: applied migration 073_parallel_execution.sql has changed")
    assert len(p.stderr.strip().splitlines()) == 1
    assert snapshot(migrated) == before


def _tables_match_a_whole_number_of_files(path: Path) -> tuple[int, int]:
    """(applied files, files whose tables are all present); a half-applied file breaks equality."""
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','index')")}
        try:
            applied = {r[0] for r in conn.execute("SELECT name FROM buildctl_migrations")}
        except sqlite3.OperationalError:
            applied = set()
    finally:
        conn.close()
    import re

    complete = 0
    for name in storage.migration_names():
        text = (storage.sql_dir() / name).read_text()
        created = set(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", text))
        present = created & names
        if name in applied:
            assert present == created, f"{name} recorded as applied but only partly present"
            complete += 1
        else:
            assert not present, f"{name} not recorded but some of its objects exist: {present}"
    return len(applied), complete


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_during_migrate_leaves_old_or_new_version(tmp_path):
    """Kill real `migrate` processes at spread-out moments; each file is all-or-nothing."""
    for i, delay in enumerate([0.0, 0.005, 0.01, 0.02, 0.04, 0.08]):
        path = tmp_path / f"k{i}" / "b.db"
        env = {**os.environ, "BUILDCTL_DB": str(path)}
        proc = subprocess.Popen(buildctl_executable() + ["migrate"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_for(path)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        applied, complete = _tables_match_a_whole_number_of_files(path)
        assert applied == complete
        # The next migrate completes the job.
        done = subprocess.run(buildctl_executable() + ["migrate"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        applied, complete = _tables_match_a_whole_number_of_files(path)
        assert applied == complete == len(storage.migration_names())


@pytest.mark.slow
def test_sigkill_in_the_middle_of_one_file_rolls_that_file_back(tmp_path):
    """A migration file with a slow statement between two CREATEs, killed during it:
    neither table exists afterwards, the file is not recorded, and a rerun applies it."""
    import shutil

    sql_copy = tmp_path / "sql"
    shutil.copytree(storage.sql_dir(), sql_copy)
    (sql_copy / "900_slow.sql").write_text(
        "CREATE TABLE slow_first (x INTEGER);\n"
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000)\n"
        "INSERT INTO slow_first SELECT x FROM c;\n"
        "CREATE TABLE slow_last (x INTEGER);\n"
    )
    path = tmp_path / "db" / "b.db"
    code = ("import sys, pathlib, buildctl.storage as s;"
            f"s.sql_dir = lambda: pathlib.Path({str(sql_copy)!r});"
            "from buildctl.entry import run as run_app; sys.exit(run_app(['migrate']))")
    env = {**os.environ, "BUILDCTL_DB": str(path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait until every real file is applied: the slow file is then running.
    deadline = time.time() + 60
    while True:
        assert time.time() < deadline and proc.poll() is None, "migrate ended before it could be killed"
        if path.exists():
            conn = sqlite3.connect(path, timeout=0.1)
            try:
                n = conn.execute("SELECT count(*) FROM buildctl_migrations").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            finally:
                conn.close()
            if n == len(storage.migration_names()):
                break
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    recorded = {r[0] for r in conn.execute("SELECT name FROM buildctl_migrations")}
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert "slow_first" not in names and "slow_last" not in names
    assert "900_slow.sql" not in recorded and len(recorded) == len(storage.migration_names())


# --------------------------------------------------------------------------- issue 11: files that break the transaction

def _sql_copy_with(tmp_path: Path, name: str, text: str) -> Path:
    """A copy of sql/ (both dialects) with one more migration ``name`` holding ``text``."""
    import shutil

    sql_copy = tmp_path / "sqlcopy"
    shutil.copytree(storage.sql_dir(), sql_copy)
    (sql_copy / name).write_text(text)
    (sql_copy / "postgres" / name).write_text(text)
    return sql_copy


def _migrate_with(sql_copy: Path, location: str) -> subprocess.CompletedProcess:
    """The real `buildctl migrate`, pointed at ``sql_copy`` instead of the package's sql/."""
    code = ("import sys, pathlib, buildctl.storage as s;"
            f"s.sql_dir = lambda: pathlib.Path({str(sql_copy)!r});"
            "from buildctl.entry import run as run_app; sys.exit(run_app(['migrate']))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BUILDCTL_DB": location})


def test_a_migration_holding_commit_is_refused_before_any_of_it_runs(engine, db_location, tmp_path):
    # Before: the first half committed, the rest ran outside any transaction, and the
    # half-applied file then blocked every later migrate.
    sql_copy = _sql_copy_with(tmp_path, "900_split.sql",
                              "CREATE TABLE split_first (x INTEGER);\nCOMMIT;\nCREATE TABLE split_last (x INTEGER);\n")
    before = snapshot(db_location)
    p = _migrate_with(sql_copy, db_location)
    assert p.returncode == 3, p.stderr
    assert p.stderr.startswith("error: migration 900_split.sql contains a COMMIT statement (line 2)"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert snapshot(db_location) == before
    # Fixed file, next migrate: applied, whole.
    (sql_copy / "900_split.sql").write_text("CREATE TABLE split_first (x INTEGER);\nCREATE TABLE split_last (x INTEGER);\n")
    (sql_copy / "postgres" / "900_split.sql").write_text((sql_copy / "900_split.sql").read_text())
    p = _migrate_with(sql_copy, db_location)
    assert p.returncode == 0, p.stderr
    after = snapshot(db_location)
    assert {"split_first", "split_last"} <= set(after)


def test_a_failed_migration_names_its_file_and_applies_nothing_of_it(engine, db_location, tmp_path):
    sql_copy = _sql_copy_with(tmp_path, "900_bad.sql",
                              "CREATE TABLE bad_first (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    before = snapshot(db_location)
    p = _migrate_with(sql_copy, db_location)
    assert p.returncode == 7, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: migration 900_bad.sql failed: "), p.stderr
    assert "no_such_table" in lines[0] and lines[0].endswith("; nothing of it was applied"), lines[0]
    assert snapshot(db_location) == before


@pytest.mark.parametrize("text, expected", [
    ("CREATE TABLE a (x INTEGER);\nCOMMIT;\n", [("COMMIT", 2)]),
    ("BEGIN;\nCREATE TABLE a (x INTEGER);\n", [("BEGIN", 1)]),
    ("BEGIN TRANSACTION; CREATE TABLE a (x INTEGER); END TRANSACTION;", [("BEGIN", 1), ("END", 1)]),
    ("CREATE TABLE a (x INTEGER);\n  rollback;", [("ROLLBACK", 2)]),
    ("SAVEPOINT s1;\nCREATE TABLE a (x INTEGER);\nRELEASE s1;\n", [("SAVEPOINT", 1), ("RELEASE", 3)]),
    ("START TRANSACTION;", [("START", 1)]),
    ("ABORT;", [("ABORT", 1)]),
    ("PREPARE TRANSACTION 'x';", [("PREPARE", 1)]),
    ("-- COMMIT; in a comment\n/* ROLLBACK; */ CREATE TABLE a (x TEXT DEFAULT 'COMMIT;');", []),
    ('CREATE TABLE "commit" (x INTEGER);', []),
    # A trigger's BEGIN … END body (SQLite), CASE … END inside it included.
    ("CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = CASE WHEN x > 0 THEN 1 END;\n  DELETE FROM b;\nEND;\n"
     "COMMIT;", [("COMMIT", 5)]),
    # PostgreSQL: a dollar-quoted body, and a BEGIN ATOMIC one.
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN COMMIT; RETURN 1; END $$;", []),
    ("CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\nEND;", [("END", 2)]),
])
def test_transaction_statements_are_found_where_they_are_statements(text, expected):
    from buildctl.dialect import transaction_statements

    assert transaction_statements(text) == expected


def test_shipped_migrations_hold_no_transaction_statement():
    from buildctl.dialect import POSTGRES, SQLITE, transaction_statements

    for d in (SQLITE, POSTGRES):
        for name in storage.migration_names(d):
            assert transaction_statements(migrations.file_text(name, d)) == [], (d.name, name)
