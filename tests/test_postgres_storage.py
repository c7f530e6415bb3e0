"""PostgreSQL storage: the connection, the SQL translation, the dialect's
migrations and named queries, and the promises that hold whatever the session says
(time zone, isolation defaults, PgBouncer's transaction mode).

Tests that need a server take ``pg_location`` / ``pg_blank_location`` (tests/engines.py)
and skip without BUILDCTL_TEST_PG_DSN; the translation tests need none.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import seed
from buildctl import dialect, migrations, storage
from buildctl.dialect import POSTGRES, SQLITE, pyformat
from buildctl.errors import ConnectionLost, DatabaseError, DatabaseUnavailable
from conftest import assert_refused, buildctl_executable, snapshot
from test_migrations import APPENDIX_INDEXES, CHECK_ROWS, CHECK_SETUP, CHECKS


def run_buildctl(*args: str, location: str, extra_env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUILDCTL_DB": location, "NO_COLOR": "1", **(extra_env or {})}
    env.pop("BUILDCTL_DEBUG", None)
    return subprocess.run(buildctl_executable() + list(args), capture_output=True, text=True, env=env, timeout=timeout)


def with_password(location: str, password: str, database: str | None = None) -> str:
    """``location`` with user:password@ (and another database name, if given)."""
    parts = urlsplit(location)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc, path="/" + (database or parts.path.lstrip("/"))).geturl()


# --------------------------------------------------------------------------- translation (no server)

@pytest.mark.parametrize("sql, expected", [
    ("SELECT ?", ("SELECT %s", "positional")),
    ("SELECT :a, :b_2, :a", ("SELECT %(a)s, %(b_2)s, %(a)s", "named")),
    ("SELECT '?', ':x', '100%', ?", ("SELECT '?', ':x', '100%%', %s", "positional")),
    ("SELECT x::text, CAST(:v AS text)", ("SELECT x::text, CAST(%(v)s AS text)", "named")),
    ("SELECT 1 -- what? :no 5%\n, ?", ("SELECT 1 -- what? :no 5%%\n, %s", "positional")),
    ("SELECT /* ? :no */ ?", ("SELECT /* ? :no */ %s", "positional")),
    ('SELECT "odd?:name" FROM t WHERE a = :a', ('SELECT "odd?:name" FROM t WHERE a = %(a)s', "named")),
    ("SELECT 'it''s ? :x', ?", ("SELECT 'it''s ? :x', %s", "positional")),
    ("SELECT E'a\\' ? :x', ?", ("SELECT E'a\\' ? :x', %s", "positional")),
    ("SELECT 'a\\', ?", ("SELECT 'a\\', %s", "positional")),  # standard strings: \ is a character
    ("SELECT $$ ? :x ' $$, $tag$ ? $$ $tag$, :y", ("SELECT $$ ? :x ' $$, $tag$ ? $$ $tag$, %(y)s", "named")),
    ("SELECT a % 2 FROM t WHERE b = ?", ("SELECT a %% 2 FROM t WHERE b = %s", "positional")),
    # No placeholder: sent as it is, without parameters (so % stays single).
    ("SELECT '100%' LIKE 'x%'", ("SELECT '100%' LIKE 'x%'", None)),
    ("SELECT $1", ("SELECT $1", None)),
])
def test_pyformat_turns_placeholders_and_leaves_literals_casts_and_comments(sql, expected):
    assert pyformat(sql) == expected


def test_pyformat_refuses_mixed_or_numbered_placeholders():
    with pytest.raises(ValueError, match="mixes"):
        pyformat("SELECT ?, :a")
    with pytest.raises(ValueError, match="numbered"):
        pyformat("SELECT ?1")


def test_pyformat_is_cached_per_statement_text():
    sql = "SELECT :only_in_this_test"
    pyformat(sql)
    hits = pyformat.cache_info().hits
    pyformat(sql)
    assert pyformat.cache_info().hits == hits + 1


def test_both_dialects_have_the_same_migration_and_query_names():
    assert storage.migration_names(POSTGRES) == storage.migration_names(SQLITE)
    sqlite_queries = sorted(p.name for p in (storage.sql_dir() / "queries").glob("*.sql"))
    pg_queries = sorted(p.name for p in (storage.sql_dir() / "postgres" / "queries").glob("*.sql"))
    assert pg_queries == sqlite_queries


def _placeholders(text: str) -> set[str]:
    code = "".join(t for kind, t in dialect._scan(text) if kind == "code")
    return set(re.findall(r"(?<!:):([A-Za-z_]\w*)", code))


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parent.parent / "sql" / "queries").glob("*.sql")))
def test_each_named_query_takes_the_same_parameters_in_both_dialects(name):
    assert _placeholders(storage.query_text(name, POSTGRES)) == _placeholders(storage.query_text(name, SQLITE))


@pytest.mark.parametrize("location, shown", [
    ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgres://u:p%40ss@h/db?sslmode=require&password=x", "postgres://u:***@h/db?sslmode=require&password=***"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://", "postgresql://"),
    ("/var/lib/buildctl.db", "/var/lib/buildctl.db"),
])
def test_a_location_is_shown_without_its_password(location, shown):
    assert storage.redact(location) == shown


def test_missing_extra_is_one_line_naming_the_extra(tmp_path):
    """psycopg made unimportable by an import hook: every path says how to install it."""
    block = (
        "import sys\n"
        "class NoPsycopg:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('psycopg', 'psycopg_binary', 'psycopg_c'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoPsycopg())\n"
        "sys.argv[0] = 'buildctl'\n"
        "from buildctl.entry import main\n"
        "main()\n"
    )
    env = {**os.environ, "BUILDCTL_DB": "postgresql://u:Secr3tPw@127.0.0.1:1/none"}
    env.pop("BUILDCTL_DEBUG", None)
    for args in (["tasks", "list"], ["heartbeat", "ag_x"], ["migrate"]):  # Typer, the lean path, migrate
        p = subprocess.run([sys.executable, "-c", block, *args], capture_output=True, text=True, env=env, timeout=60)
        assert_refused(p, code=7, contains="pip install 'buildctl[postgres]'")
        assert "Secr3tPw" not in p.stderr + p.stdout


# --------------------------------------------------------------------------- schema: the same in meaning as SQLite's

TIMESTAMP_COLUMNS = {"timestamp", "last_heartbeat", "not_before"}


def _is_timestamp(column: str) -> bool:
    return column in TIMESTAMP_COLUMNS or column.endswith("_at")


def _norm(expr: str | None) -> str | None:
    """An expression with the spelling differences of the two engines taken out: PostgreSQL's
    casts and `= ANY (ARRAY[…])` (its IN), one-value IN lists, case, spaces and parentheses."""
    if expr is None:
        return None
    e = expr.lower()
    e = re.sub(r"::(text|bigint|integer|double precision|numeric|timestamp with time zone)", "", e)
    e = re.sub(r"=\s*any\s*\(\s*array\[(.*?)\]\s*\)", r" in (\1)", e)
    e = re.sub(r"\b(\w+)\s+in\s*\(\s*('[^']*'|-?[\d.]+|\(-?[\d.]+\))\s*\)", r"\1 = \2", e)
    e = re.sub(r"datetime\('now'\)|strftime\([^)]*'now'\)|statement_timestamp\(\)", "now()", e)
    return re.sub(r"[\s()\"]", "", e)


def _top_level_split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    return parts + [cur]


def _parenthesized_after(text: str, start: int) -> str:
    """The text inside the parentheses that open at or after ``start``."""
    i = text.index("(", start)
    depth = 0
    for j in range(i, len(text)):
        depth += (text[j] == "(") - (text[j] == ")")
        if depth == 0:
            return text[i + 1:j]
    raise ValueError(text)


def sqlite_schema(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        out: dict = {"tables": {}, "indexes": {}}
        for table, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%'"):
            pk = {r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[5]}
            columns = [(r[1], r[2].upper(), bool(r[3]) or r[1] in pk, _norm(r[4])) for r in conn.execute(f"PRAGMA table_info({table})")]
            uniques = set()
            for _, iname, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                if origin == "u":
                    uniques.add(tuple(r[2] for r in conn.execute(f"PRAGMA index_info({iname})")))
            fks = {(r[3], r[2], r[4]) for r in conn.execute(f"PRAGMA foreign_key_list({table})")}
            named, unnamed = {}, []
            for m in re.finditer(r"(CONSTRAINT\s+(\w+)\s+)?CHECK\s*\(", sql):
                expr = _norm(_parenthesized_after(sql, m.end() - 1))
                if m.group(2):
                    named[m.group(2)] = expr
                else:
                    unnamed.append(expr)
            identity = {c for c in re.findall(r"(\w+)\s+INTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT", sql)}
            out["tables"][table] = {"columns": columns, "pk": pk, "unique": uniques, "fk": fks,
                                    "named_checks": named, "unnamed_checks": sorted(unnamed), "identity": identity}
        for name, table, sql in conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' "
                                             "AND sql IS NOT NULL"):
            keys = [_norm(k) for k in _top_level_split(_parenthesized_after(sql, sql.index(" ON ")))]
            where = sql.split(" WHERE ", 1)[1] if " WHERE " in sql else None
            out["indexes"][name] = (table, keys, _norm(where))
        return out
    finally:
        conn.close()


def postgres_schema(location: str) -> dict:
    db = storage.connect(location, check_schema=False)
    try:
        out: dict = {"tables": {}, "indexes": {}, "collations": set(), "types": {}}
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()]
        for table in tables:
            cols = db.query(
                "SELECT column_name AS name, data_type AS type, is_nullable AS nullable, column_default AS dflt, "
                "is_identity AS identity, collation_name AS collation FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position", (table,))
            cons = db.query(
                "SELECT conname, CAST(contype AS text) AS kind, pg_get_constraintdef(c.oid) AS def, "
                "ARRAY(SELECT CAST(a.attname AS text) FROM unnest(c.conkey) WITH ORDINALITY k(n, i) "
                "      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols, "
                "CASE WHEN c.confrelid <> 0 THEN CAST(CAST(c.confrelid AS regclass) AS text) END AS ref_table, "
                "ARRAY(SELECT CAST(a.attname AS text) FROM unnest(c.confkey) WITH ORDINALITY k(n, i) "
                "      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS ref_cols "
                "FROM pg_constraint c WHERE c.conrelid = CAST(? AS regclass)", (table,))
            checks = {c["conname"]: _norm(c["def"].removeprefix("CHECK ")) for c in cons if c["kind"] == "c"}
            out["tables"][table] = {
                "columns": {(c["name"], c["type"], c["nullable"] == "NO", _norm(c["dflt"])) for c in cols},
                "order": [c["name"] for c in cols],
                "pk": {col for c in cons if c["kind"] == "p" for col in c["cols"]},
                "unique": {tuple(c["cols"]) for c in cons if c["kind"] == "u"},
                "fk": {(c["cols"][0], c["ref_table"], c["ref_cols"][0]) for c in cons if c["kind"] == "f"},
                "checks": checks,
                "identity": {c["name"] for c in cols if c["identity"] == "YES"},
            }
            out["collations"] |= {(table, c["name"], c["collation"]) for c in cols if c["type"] == "text"}
        for r in db.query(
                "SELECT CAST(CAST(i.indexrelid AS regclass) AS text) AS name, CAST(CAST(i.indrelid AS regclass) AS text) AS tbl, "
                "pg_get_indexdef(i.indexrelid) AS def, pg_get_expr(i.indpred, i.indrelid) AS pred "
                "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE t.relnamespace = CAST(current_schema() AS regnamespace) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"):
            keys = [_norm(k) for k in _top_level_split(_parenthesized_after(r["def"], r["def"].index(" USING ")))]
            out["indexes"][r["name"]] = (r["tbl"], keys, _norm(r["pred"]))
        return out
    finally:
        db.close()


EXPECTED_TYPE = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text"}


def test_blank_postgres_database_is_migrated_to_the_sqlite_schema_in_meaning(pg_blank_location, migrated):
    """Every table, column (type, NOT NULL, default), key, CHECK (named ones by name) and
    index (partial ones with their predicate) of the two engines' catalogs, compared."""
    p = run_buildctl("migrate", "--json", location=pg_blank_location)
    assert p.returncode == 0, p.stderr
    lite, pg = sqlite_schema(migrated), postgres_schema(pg_blank_location)
    assert set(pg["tables"]) == set(lite["tables"])
    for table, want in lite["tables"].items():
        got = pg["tables"][table]
        assert got["order"] == [c[0] for c in want["columns"]], table
        assert got["identity"] == want["identity"], table
        expected_columns = set()
        for name, decl, notnull, dflt in want["columns"]:
            if _is_timestamp(name):
                assert decl == "TEXT", (table, name)
                expected = "timestamp with time zone"
            else:
                expected = EXPECTED_TYPE[decl]
            expected_columns.add((name, expected, notnull, dflt))
        assert got["columns"] == expected_columns, table
        assert got["pk"] == want["pk"], table
        assert got["unique"] == want["unique"], table
        assert got["fk"] == want["fk"], table
        # Named CHECKs keep their names; the unnamed ones match by meaning.
        assert {n: e for n, e in got["checks"].items() if n in want["named_checks"]} == want["named_checks"], table
        assert sorted(e for n, e in got["checks"].items() if n not in want["named_checks"]) == want["unnamed_checks"], table
    assert pg["indexes"] == lite["indexes"]
    assert set(APPENDIX_INDEXES) | {"idx_exec_log_lane_task", "idx_build_agents_live_silence"} <= set(pg["indexes"])
    assert sum(1 for _, _, where in pg["indexes"].values() if where) == 6  # the partial ones
    # Text compares byte by byte, as SQLite's BINARY does (the bookkeeping table, made by
    # migrations.py for both engines, is ordered in Python).
    assert {c for t, _, c in pg["collations"] if t != "buildctl_migrations"} == {"C"}


@pytest.mark.parametrize("table, constraint, column", CHECKS)
def test_postgres_checks_reject_invalid_values(pg_location, table, constraint, column):
    db = storage.connect(pg_location)
    try:
        for sql in CHECK_SETUP:
            db.execute(sql)
        sql, good = CHECK_ROWS[table]
        with pytest.raises(DatabaseError, match=f'check constraint "{constraint}"'):
            db.execute(sql, ("bogus",))
        db.execute(sql, (good,))
    finally:
        db.close()


def test_ids_are_ordered_byte_by_byte_as_in_sqlite(pg_location):
    db = storage.connect(pg_location)
    try:
        ids = ["tk_B", "tk_a", "tk__", "tk-1", "T-10", "T-9"]
        db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_a', 'a')")
        db.executemany("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) VALUES (?, ?, 'tl_a', 't', 'true', 0)",
                       [(i, i) for i in ids])
        assert [r["id"] for r in db.query("SELECT id FROM tasks ORDER BY id")] == sorted(ids)
        a, b = sorted(["tk_B", "tk_a"])  # 'tk_B' < 'tk_a' in bytes, not in most locales
        db.execute("INSERT INTO parallelism_analysis (task_a_id, task_b_id, can_parallel) VALUES (?, ?, 1)", (a, b))
    finally:
        db.close()


# --------------------------------------------------------------------------- migrate on PostgreSQL

def test_migrate_twice_is_a_noop_and_status_shows_every_file_applied(pg_location):
    before = snapshot(pg_location)
    again = run_buildctl("migrate", "--json", location=pg_location)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["applied"] == []
    assert snapshot(pg_location) == before
    status = run_buildctl("migrate", "--status", "--json", location=pg_location)
    states = json.loads(status.stdout)
    assert [s["name"] for s in states] == storage.migration_names(POSTGRES)
    assert {s["state"] for s in states} == {"applied"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s["applied_at"]) for s in states), states
    # The recorded checksums are those of the PostgreSQL files' own text.
    assert {s["sha256"] for s in states} == {migrations.digest(migrations.file_text(n, POSTGRES))
                                             for n in storage.migration_names(POSTGRES)}


def test_status_and_applied_on_a_blank_database(pg_blank_location, migrate_upto):
    db = storage.connect(pg_blank_location, check_schema=False)
    try:
        assert {s.state for s in migrations.status(db)} == {"pending"}
        assert migrations.status(db)[0].sql == migrations.file_text("010_task_lists.sql", POSTGRES)
        with pytest.raises(Exception, match="has no schema; run `buildctl migrate`"):
            storage.ensure_current(db)
        migrate_upto(db, "072_grouping_suggestions.sql")
        states = {s.name: s.state for s in migrations.status(db)}
        assert states["072_grouping_suggestions.sql"] == "applied" and states["073_parallel_execution.sql"] == "pending"
        with pytest.raises(Exception, match=r"is behind \(\d+ pending migration\(s\), first 073"):
            storage.ensure_current(db)
    finally:
        db.close()


def test_edited_applied_postgres_file_is_refused_by_name(pg_location, tmp_path):
    import shutil

    sql_copy = tmp_path / "sqlcopy"
    shutil.copytree(storage.sql_dir(), sql_copy)
    with open(sql_copy / "postgres" / "073_parallel_execution.sql", "a") as f:
        f.write("\n-- an edit after the fact\n")
    code = ("import sys, pathlib, buildctl.storage as s;"
            f"s.sql_dir = lambda: pathlib.Path({str(sql_copy)!r});"
            "from buildctl.entry import run; sys.exit(run(['migrate']))")
    before = snapshot(pg_location)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "BUILDCTL_DB": pg_location}, timeout=120)
    assert_refused(p, code=5, contains="applied migration 073_parallel_execution.sql has changed")
    assert snapshot(pg_location) == before


@pytest.mark.slow
def test_concurrent_migrates_apply_each_file_once(pg_server):
    for _ in range(3):  # a race: a few rounds
        location = pg_server.blank()
        procs = [subprocess.Popen(buildctl_executable() + ["migrate", "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "BUILDCTL_DB": location})
                 for _ in range(2)]
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
        for code, out, err in results:
            assert code == 0, err
        applied = [json.loads(out)["applied"] for _, out, _ in results]
        assert sorted(applied[0] + applied[1]) == storage.migration_names(POSTGRES)  # each file by one of them
        db = storage.connect(location)
        assert db.scalar("SELECT COUNT(*) FROM buildctl_migrations") == len(storage.migration_names(POSTGRES))
        db.close()


# --------------------------------------------------------------------------- values and time

def test_timestamps_come_back_as_utc_text_whatever_the_session_time_zone(pg_location):
    code = (
        "import json, sys; from buildctl import storage\n"
        "db = storage.connect(sys.argv[1])\n"
        "db.execute(\"INSERT INTO task_lists_v2 (id, name, created_at) VALUES ('tl_t', 't', '2024-05-06 07:08:09.123456+00')\")\n"
        "with db.read():\n"
        "    now, utc = db.execute(f\"SELECT {db.sql.now}, to_char({db.sql.now} AT TIME ZONE 'UTC', \"\n"
        "                          \"'YYYY-MM-DD HH24:MI:SS.MS')\").fetchone()\n"
        "    out = {'zone': db.scalar('SHOW TimeZone'), 'style': db.scalar('SHOW DateStyle'), 'now': now, 'utc': utc,\n"
        "           'stored': db.scalar(\"SELECT created_at FROM task_lists_v2 WHERE id = 'tl_t'\"),\n"
        "           'default': db.scalar(\"SELECT updated_at FROM task_lists_v2 WHERE id = 'tl_t'\"),\n"
        "           'cutoff': db.scalar('SELECT ' + db.sql.utc('?'), ('2024-05-06 07:08:09.500',))}\n"
        "print(json.dumps(out))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, pg_location], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PGTZ": "Asia/Tokyo", "PGDATESTYLE": "SQL, DMY"})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["zone"] == "Asia/Tokyo" and out["style"] == "SQL, DMY"  # the session really is elsewhere
    assert out["now"] == out["utc"]
    assert out["stored"] == "2024-05-06 07:08:09.123"
    assert out["cutoff"] == "2024-05-06 07:08:09.500"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", out["default"])


def test_values_come_back_as_sqlite3_returns_them(pg_location):
    db = storage.connect(pg_location)
    try:
        row = db.one(
            "SELECT true AS yes, false AS no, 7 AS small, CAST(7 AS bigint) AS big, 2.5 AS num, "
            "CAST(0.25 AS double precision) AS dbl, SUM(v) AS total, AVG(v) AS mean, "
            "EXTRACT(EPOCH FROM interval '1.5 seconds') AS secs, COUNT(*) AS n, "
            "CAST('{\"a\": 1}' AS jsonb) AS doc, CAST('[1]' AS json) AS arr, CAST(NULL AS text) AS nothing "
            "FROM (VALUES (CAST(1 AS bigint)), (2)) t(v)")
        assert row == {"yes": 1, "no": 0, "small": 7, "big": 7, "num": 2.5, "dbl": 0.25, "total": 3, "mean": 1.5,
                       "secs": 1.5, "n": 2, "doc": '{"a": 1}', "arr": "[1]", "nothing": None}
        assert [type(row[k]) for k in ("yes", "total", "mean")] == [int, int, float]
        # A Python bool parameter is 0/1, as sqlite3 sends it.
        assert db.scalar("SELECT CAST(? AS bigint) + 1", (True,)) == 2
    finally:
        db.close()


def test_placeholders_beside_literals_holding_question_marks_colons_and_percents(pg_location):
    db = storage.connect(pg_location)
    try:
        sql = ("SELECT '?' AS q, ':x' AS c, '100%' AS p, 'it''s' AS s, CAST(x AS text)::text AS cast_, ? AS v "
               "FROM (SELECT 1 AS x) t -- trailing ? :y %")
        assert db.one(sql, ("val",)) == {"q": "?", "c": ":x", "p": "100%", "s": "it's", "cast_": "1", "v": "val"}
        named = "SELECT ':x' AS c, '50%' AS p, :v AS v, :v || '?' AS w"
        assert db.one(named, {"v": "a"}) == {"c": ":x", "p": "50%", "v": "a", "w": "a?"}
        assert db.scalar("SELECT '%' || 'x%'") == "%x%"  # no parameters: sent untouched
        db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_p', 'p')")
        db.executemany("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) "
                       "VALUES (:id, :id, 'tl_p', '100% done?', 'echo :x', :pos)",
                       [{"id": "tk_1", "pos": 1}, {"id": "tk_2", "pos": 2}])
        assert db.query("SELECT id, title, command FROM tasks ORDER BY id") == [
            {"id": "tk_1", "title": "100% done?", "command": "echo :x"},
            {"id": "tk_2", "title": "100% done?", "command": "echo :x"}]
    finally:
        db.close()


def test_malformed_json_rows_are_tolerated_by_json_field(pg_location):
    db = storage.connect(pg_location)
    try:
        db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_j', 'j')")
        db.execute("INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number) VALUES ('ex_j', 'tl_j', 1)")
        contexts = ['{"error": "boom"}', "not json", None, '{"error": "\\u0000"}', '[1, 2', '{"error": 1e999}']
        for c in contexts:
            db.execute("INSERT INTO task_execution_log (execution_id, event_type, message, context) VALUES ('ex_j', 'info', 'm', ?)", (c,))
        # buildctl_json_valid (sql/postgres/010) is what json_field guards its cast with.
        got = db.query(f"SELECT {db.sql.json_field('context', 'error')} AS e, buildctl_json_valid(context) AS ok "
                       "FROM task_execution_log ORDER BY id")
        assert [r["e"] for r in got][:3] == ["boom", None, None]
        assert [r["ok"] for r in got][:3] == [1, 0, None]
        assert got[4] == {"e": None, "ok": 0}
    finally:
        db.close()


# --------------------------------------------------------------------------- transactions, PgBouncer-safe

def test_write_is_read_committed_and_read_is_a_read_only_snapshot_whatever_the_defaults(pg_location):
    code = (
        "import json, sys; from buildctl import storage\n"
        "db = storage.connect(sys.argv[1])\n"
        "out = {}\n"
        "with db.write():\n"
        "    out['write'] = [db.scalar('SHOW transaction_isolation'), db.scalar('SHOW transaction_read_only')]\n"
        "    db.execute(\"INSERT INTO task_lists_v2 (id, name) VALUES ('tl_w', 'w')\")\n"
        "with db.read():\n"
        "    out['read'] = [db.scalar('SHOW transaction_isolation'), db.scalar('SHOW transaction_read_only')]\n"
        "    try:\n"
        "        db.execute(\"INSERT INTO task_lists_v2 (id, name) VALUES ('tl_r', 'r')\")\n"
        "    except Exception as exc:\n"
        "        out['refused'] = str(exc)\n"
        "out['rows'] = db.scalar('SELECT COUNT(*) FROM task_lists_v2')\n"
        "print(json.dumps(out))\n"
    )
    opts = "-c default_transaction_isolation=serializable -c default_transaction_read_only=on"
    p = subprocess.run([sys.executable, "-c", code, pg_location], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PGOPTIONS": opts})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["write"] == ["read committed", "off"]
    assert out["read"] == ["repeatable read", "on"]
    assert out["refused"].startswith("the database is read-only")
    assert out["rows"] == 1


def test_write_rolls_back_on_error_and_nested_transactions_are_refused(pg_location):
    db = storage.connect(pg_location)
    try:
        with pytest.raises(RuntimeError):
            with db.write():
                db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_x', 'x')")
                raise RuntimeError("boom")
        assert db.scalar("SELECT COUNT(*) FROM task_lists_v2") == 0
        with db.write():
            db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_y', 'y')")
            # PostgreSQL would only warn, and the inner block's end would end the outer one.
            with pytest.raises(DatabaseError, match="within a transaction"):
                with db.read():
                    pass
        assert db.scalar("SELECT COUNT(*) FROM task_lists_v2") == 1
    finally:
        db.close()


def test_no_session_state_is_left_behind(pg_location):
    """PgBouncer in transaction mode: no prepared statement, no SET outside a transaction,
    no session advisory lock, no temporary table, no LISTEN."""
    db = storage.connect(pg_location)
    try:
        for _ in range(10):
            db.scalar("SELECT COUNT(*) FROM tasks WHERE id = ?", ("x",))
        with db.write():
            db.lock("migrate")
            assert db.scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()") == 1
        assert db.scalar("SELECT COUNT(*) FROM pg_prepared_statements") == 0
        assert db.scalar("SHOW lock_timeout") == "0"  # the write's SET LOCAL ended with it
        assert db.scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()") == 0
        assert db.scalar("SELECT COUNT(*) FROM pg_listening_channels()") == 0
        assert db.scalar("SELECT COUNT(*) FROM pg_class WHERE relpersistence = 't'") == 0
    finally:
        db.close()


def test_a_lock_held_past_the_timeout_is_one_readable_error(pg_location, monkeypatch):
    import psycopg

    monkeypatch.setattr(storage, "BUSY_TIMEOUT_MS", 300)
    holder = psycopg.connect(pg_location)
    try:
        holder.execute("LOCK TABLE task_lists_v2 IN ACCESS EXCLUSIVE MODE")
        db = storage.connect(pg_location, check_schema=False)
        try:
            with pytest.raises(DatabaseError, match="stayed locked for more than 0 s"):
                with db.write():
                    db.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_l', 'l')")
        finally:
            db.close()
    finally:
        holder.rollback()
        holder.close()


def test_the_interface_answers_alike_on_both_engines(db_location):
    db = storage.connect(db_location)
    try:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", db.now())
        assert db.display_location == storage.redact(db_location)
        with db.write():
            db.lock("migrate")
            db.execute("INSERT INTO task_lists_v2 (id, name) VALUES (?, ?)", ("tl_i", "i"))
            db.executemany("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) "
                           "VALUES (?, ?, 'tl_i', 't', 'true', ?)", [("tk_1", "T-1", 1), ("tk_2", "T-2", 2)])
        assert db.query("SELECT id, position FROM tasks ORDER BY id") == [{"id": "tk_1", "position": 1},
                                                                          {"id": "tk_2", "position": 2}]
        assert db.one("SELECT id FROM tasks WHERE id = :id", {"id": "tk_2"}) == {"id": "tk_2"}
        assert db.one("SELECT id FROM tasks WHERE id = 'none'") is None
        assert db.scalar("SELECT COUNT(*) FROM tasks") == 2
        assert db.named("wave_summary", {"execution_id": "ex_none"}) == []
        db.check_writable()
    finally:
        db.close()


def test_data_version_moves_when_another_connection_commits(db_location):
    db = storage.connect(db_location)
    other = storage.connect(db_location)
    try:
        before = db.data_version()
        with other.write():
            other.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_v', 'v')")
        assert db.data_version() != before
        assert db.size_bytes() > 0
    finally:
        db.close()
        other.close()


def test_data_version_moves_when_an_older_transaction_commits_after_a_younger_one(pg_location):
    """A poller that looked after the younger writer committed still sees the older one's
    commit land (SQLite has one writer at a time; PostgreSQL does not)."""
    db, older, younger = (storage.connect(pg_location) for _ in range(3))
    try:
        with older.write():
            older.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_old', 'o')")
            with younger.write():
                younger.execute("INSERT INTO task_lists_v2 (id, name) VALUES ('tl_young', 'y')")
            seen = db.data_version()
            assert db.scalar("SELECT COUNT(*) FROM task_lists_v2") == 1
        assert db.data_version() != seen
        assert db.scalar("SELECT COUNT(*) FROM task_lists_v2") == 2
    finally:
        for c in (db, older, younger):
            c.close()


# --------------------------------------------------------------------------- errors, passwords

def test_errors_name_the_location_without_its_password(pg_location):
    secret = "Sup3rSecretPw"
    missing_db = with_password(pg_location, secret, database="buildctl_no_such_database")
    p = run_buildctl("tasks", "list", location=missing_db)
    assert_refused(p, code=7, contains='database "buildctl_no_such_database" does not exist')
    assert ":***@" in p.stderr and secret not in p.stderr
    # libpq quotes the whole URL when it cannot parse it.
    parts = urlsplit(pg_location)
    broken = f"postgresql://postgres:{secret}@[::1{parts.path}"
    p = run_buildctl("tasks", "list", location=broken)
    assert_refused(p, code=7, contains='in IPv6 host address in URI: "postgresql://postgres:***@[::1/')
    assert secret not in p.stderr
    # A database with no schema: the line names migrate and the location, redacted.
    blank = with_password(pg_location, secret)
    db = storage.connect(pg_location)
    db.execute("DELETE FROM buildctl_migrations WHERE name = '081_live_agents_index.sql'")
    db.close()
    p = run_buildctl("tasks", "list", location=blank)
    assert_refused(p, code=6, contains="run `buildctl migrate`")
    assert ":***@" in p.stderr and secret not in p.stderr
    # Refused connections (nothing listens on port 1) are DatabaseUnavailable, exit 7.
    refused = with_password(pg_location, secret).replace(f":{urlsplit(pg_location).port}/", ":1/")
    p = run_buildctl("heartbeat", "ag_x", location=refused)
    assert_refused(p, code=7, contains="Connection refused (is the server running")
    assert secret not in p.stderr


def test_migrate_output_shows_the_location_without_its_password(pg_blank_location):
    secret = "Sup3rSecretPw"
    p = run_buildctl("migrate", "--json", location=with_password(pg_blank_location, secret))
    assert p.returncode == 0, p.stderr
    assert secret not in p.stdout + p.stderr
    assert json.loads(p.stdout)["database"].startswith("postgresql://postgres:***@")


def test_a_terminated_connection_is_database_unavailable(pg_location):
    db = storage.connect(pg_location)
    killer = storage.connect(pg_location)
    try:
        pid = db.scalar("SELECT pg_backend_pid()")
        assert killer.scalar("SELECT pg_terminate_backend(?, 30000)", (pid,)) == 1  # waits until it is gone
        with pytest.raises(DatabaseUnavailable):
            db.scalar("SELECT 1")
    finally:
        db.close()
        killer.close()


def _terminate(location: str, pid: int) -> None:
    """pg_terminate_backend, waiting until the backend is gone."""
    with storage.connect(location) as killer:
        assert killer.scalar("SELECT pg_terminate_backend(?, 30000)", (pid,)) == 1


def test_a_statement_lost_with_its_connection_is_never_sent_again_the_next_one_reconnects(pg_location):
    import threading

    db = storage.connect(pg_location)
    try:
        pid = db.scalar("SELECT pg_backend_pid()")
        # Terminated while the statement runs: its outcome is unknown to the caller, who hears it.
        killer = threading.Timer(0.5, _terminate, (pg_location, pid))
        killer.start()
        with pytest.raises(ConnectionLost, match="whether the last statement took effect is unknown"):
            db.scalar("SELECT pg_sleep(30)")
        killer.join()
        assert db.scalar("SELECT pg_backend_pid()") != pid and db.reconnects == 1
    finally:
        db.close()


def test_a_write_begun_on_a_connection_that_dropped_while_idle_commits_once_on_a_new_one(pg_location):
    db = storage.connect(pg_location)
    try:
        seed.seed_list(db)
        pid = db.scalar("SELECT pg_backend_pid()")
        _terminate(pg_location, pid)
        with db.write():  # its BEGIN meets the loss, and nothing had been done: begun again
            db.execute("UPDATE task_lists_v2 SET description = COALESCE(description, '') || 'x' WHERE id = 'tl_seed'")
        assert db.scalar("SELECT description FROM task_lists_v2") == "x" and db.reconnects == 1
    finally:
        db.close()


def test_reconnecting_gives_up_after_reconnect_s_with_one_line(pg_location):
    db = storage.connect(pg_location)
    try:
        db.reconnect_s = 1.0
        pid = db.scalar("SELECT pg_backend_pid()")
        db.location = with_password(pg_location, "s3cr3t-pw").replace(f":{urlsplit(pg_location).port or 5432}/", ":1/")
        _terminate(pg_location, pid)  # and the server "stays down": nothing listens on port 1
        with pytest.raises(ConnectionLost):
            db.scalar("SELECT 1")
        with pytest.raises(DatabaseUnavailable, match="could not be opened again within 1 s") as lost:
            db.scalar("SELECT 1")
        assert not isinstance(lost.value, ConnectionLost) and "s3cr3t-pw" not in str(lost.value)
    finally:
        db.close()


def test_driver_errors_escaping_domain_code_are_one_line(pg_location):
    """guarded()'s safety net: a psycopg error that reached it unwrapped is translated too."""
    code = ("import sys, psycopg; from buildctl.cli.main import guarded\n"
            "def body():\n"
            "    with psycopg.connect(sys.argv[1]) as c: c.execute('SELECT * FROM no_such_table')\n"
            "sys.exit(guarded(body))\n")
    p = subprocess.run([sys.executable, "-c", code, pg_location], capture_output=True, text=True, timeout=60)
    assert_refused(p, code=7, contains='relation "no_such_table" does not exist')


# --------------------------------------------------------------------------- libpq's own configuration

def _libpq_env(location: str) -> dict:
    parts = urlsplit(location)
    return {"PGHOST": parts.hostname, "PGPORT": str(parts.port or 5432), "PGUSER": parts.username or "postgres",
            "PGDATABASE": parts.path.lstrip("/")}


def test_pg_environment_variables_complete_a_bare_url(pg_location):
    p = run_buildctl("migrate", "--status", "--json", location="postgresql://", extra_env=_libpq_env(pg_location))
    assert p.returncode == 0, p.stderr
    assert {s["state"] for s in json.loads(p.stdout)} == {"applied"}


def test_a_service_file_names_the_database(pg_location, tmp_path):
    env = _libpq_env(pg_location)
    service = tmp_path / "pg_service.conf"
    service.write_text("[buildctl_test]\n" + "".join(f"{k[2:].lower().replace('database', 'dbname')}={v}\n"
                                                     for k, v in env.items()))
    clean = {k: "" for k in env}  # nothing but the service file says where to go
    p = run_buildctl("migrate", "--status", "--json", location="postgresql://?service=buildctl_test",
                     extra_env={**clean, "PGSERVICEFILE": str(service)})
    assert p.returncode == 0, p.stderr
    assert {s["state"] for s in json.loads(p.stdout)} == {"applied"}


# --------------------------------------------------------------------------- the named queries agree

def _seed_same_world(conn) -> None:
    ids = seed.seed_list(conn, tasks=("T-001", "T-002", "T-003"))
    seed.seed_run(conn)
    seed.seed_run(conn, execution_id="ex_done", run_number=2, status="completed", completed_at="2000-01-01 00:00:00")
    w1 = seed.seed_wave(conn, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]], status="running")
    seed.seed_wave(conn, wave_number=2, task_ids=[ids["T-003"]])
    seed.seed_agent(conn, "ag_old", spawned_ago_s=600, heartbeat_ago_s=120)
    seed.seed_agent(conn, "ag_fresh", spawned_ago_s=600, heartbeat_ago_s=5)
    seed.seed_agent(conn, "ag_silent", status="initializing", spawned_ago_s=300)
    conn.execute("UPDATE wave_task_assignments SET instance_id = 'ag_old', status = 'running' WHERE wave_id = ? AND task_id = ?",
                 (w1, ids["T-001"]))
    events = [("T-001", "task_failed", "boom", '{"error": "E1"}'), ("T-001", "task_failed", "boom", '{"error": "E1"}'),
              ("T-001", "task_failed", "bang", '{"code": 2}'), ("T-002", "task_completed", "ok", None),
              ("T-001", "task_failed", "boom", '{"error": "E1"}'), ("T-002", "error", "50% ? :x", '{"a": 1}')]
    for display, kind, message, context in events:
        conn.execute("INSERT INTO task_execution_log (execution_id, task_id, instance_id, event_type, message, context) "
                     "VALUES ('ex_seed', ?, 'ag_old', ?, ?, ?)", (ids[display], kind, message, context))
    conn.execute("INSERT INTO task_execution_log (execution_id, event_type, message) VALUES ('ex_done', 'info', 'old')")


def _comparable(rows: list[dict]) -> list[dict]:
    """Rows without what depends on the moment they were read (timestamps, seconds ago)."""
    drop = {"seconds_since_heartbeat"}
    return [{k: v for k, v in r.items() if not (k in drop or _is_timestamp(k) or k.endswith("_time"))} for r in rows]


def test_named_queries_answer_the_same_on_both_engines(migrated, pg_location):
    lite, pg = seed.connect(migrated), seed.connect(pg_location)
    for conn in (lite, pg):
        _seed_same_world(conn)
    lite.close()
    cases = [
        ("consecutive_failures", {"execution_id": "ex_seed", "task_id": None, "min_failures": 2}),
        ("consecutive_failures", {"execution_id": "ex_seed", "task_id": "tk_tl_seed_T-001", "min_failures": 3}),
        ("progress_between_attempts", {"execution_id": "ex_seed", "task_id": "tk_tl_seed_T-001"}),
        ("execution_log_tail", {"execution_id": "ex_seed", "limit": 4}),
        ("execution_log_filtered", {"execution_id": "ex_seed", "task_id": None, "types": '["task_failed", "error"]',
                                    "errors_only": 0, "since": "-900.000 seconds", "limit": 10}),
        ("execution_log_filtered", {"execution_id": "ex_seed", "task_id": "tk_tl_seed_T-002", "types": None,
                                    "errors_only": 1, "since": None, "limit": 10}),
        ("execution_log_after", {"execution_id": "ex_seed", "after_id": 2, "task_id": None, "types": None,
                                 "errors_only": 0, "since": None}),
        ("stale_agents", {"threshold": "-60.000 seconds", "execution_id": None}),
        ("stale_agents", {"threshold": "-60.000 seconds", "execution_id": "ex_other"}),
        ("wave_summary", {"execution_id": "ex_seed"}),
    ]
    sqlite_db = storage.connect(str(migrated))
    try:
        for name, params in cases:
            assert _comparable(pg.named(name, params)) == _comparable(sqlite_db.named(name, params)), (name, params)
        for name in ("gc_count_heartbeats", "gc_count_logs", "gc_count_checkpoints", "gc_expired_log_runs"):
            params = {"cutoff_offset": "-3600.000 seconds"}
            assert pg.query(storage.query_text(name, POSTGRES), params) == \
                sqlite_db.query(storage.query_text(name, SQLITE), params), name
        assert pg.named("stale_agents", {"threshold": "-60.000 seconds", "execution_id": None})[0]["seconds_since_heartbeat"] >= 119
    finally:
        sqlite_db.close()
        pg.close()
