"""SQL injection attempts in every free-text argument are stored verbatim and harmless
(issue 8): log messages and --context values, ids and prefixes, display ids,
titles, commands, paths and names in imported task lists, checkpoint messages, agent
errors and config. Afterwards the schema is exactly what it was, doctor is clean, and the
text reads back byte-identical through the commands' own --json output.

Most calls run in-process (the console script's two entry paths, see test_fuzz_cli.invoke);
`test_payloads_through_the_real_executable` repeats the log path in real processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import seed
from checkpoint_helpers import git, git_env, init_repo
from conftest import EXAMPLES, git_available, snapshot
from test_fuzz_cli import built_once, invoke  # noqa: F401  (fixture re-exported for this module)

from buildctl import exitcodes

pytestmark = pytest.mark.engines

PWNED = Path("/tmp/buildctl-injection-pwned")

PAYLOADS = [
    "'; DROP TABLE tasks; --",
    "Robert'); DROP TABLE build_agent_instances; --",
    "x' OR '1'='1",
    '" OR 1=1 --',
    "1; DELETE FROM task_execution_log; --",
    f"'; ATTACH DATABASE '{PWNED}' AS pwn; CREATE TABLE pwn.t(x); --",
    "' UNION SELECT sql, sql, sql FROM sqlite_master --",
    "'; PRAGMA writable_schema = 1; UPDATE sqlite_master SET sql = ''; --",
    "%", "_", "%' --", "*", "?", ":execution_id", "@p", "$1",
    "\\'; --", "'", '"', ";", "--", "/*", "*/",
    f"$(touch {PWNED})", f"`touch {PWNED}`",
    "\x1b[31mred\x1b[0m", "tab\tand\nnewline", "é ü 🙂 中文", "\u202eevil",
    "x" * 5000,
]


#: PostgreSQL's schema as a list like sqlite_master's: every column, index, constraint,
#: function and trigger of buildctl's schema, with its definition.
PG_SCHEMA = """
SELECT 'column', table_name || '.' || column_name, data_type || ' ' || COALESCE(column_default, '')
FROM information_schema.columns WHERE table_schema = current_schema()
UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()
UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace = CAST(current_schema() AS regnamespace)
UNION ALL SELECT 'function', proname, prosrc FROM pg_proc WHERE pronamespace = CAST(current_schema() AS regnamespace)
UNION ALL SELECT 'trigger', tgname, CAST(tgrelid AS regclass)::text FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1, 2, 3
"""


def schema(where) -> list[tuple]:
    conn = seed.connect(where)
    try:
        if seed.dialect(conn).name == "sqlite":
            return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        return [tuple(r) for r in conn.execute(PG_SCHEMA).fetchall()]
    finally:
        conn.close()


def run(argv: list[str], ok: bool = True) -> tuple[int, str, str]:
    code, out, err = invoke([str(a) for a in argv])
    assert "Traceback" not in err and code != exitcodes.INTERNAL, (argv, code, err)
    if ok:
        assert code == 0, (argv, code, err)
    return code, out, err


@pytest.fixture
def world(migrated, tmp_path, monkeypatch, built_once):
    monkeypatch.setenv("BUILDCTL_DB", str(migrated))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("BUILDCTL_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    if PWNED.exists():
        PWNED.unlink()
    ex = run(["run", "start", EXAMPLES / "five-tasks.toml"])[1].strip()
    agent = run(["agent", "spawn", ex])[1].strip()
    base = schema(migrated)
    yield {"db": migrated, "ex": ex, "agent": agent, "tmp": tmp_path}
    assert schema(migrated) == base, "the schema changed"
    assert not PWNED.exists(), "a payload ran"
    from buildctl import doctor, storage

    db = storage.connect(str(migrated))
    try:
        findings = {c.name: c.findings for c in doctor.diagnose(db) if not c.ok}
    finally:
        db.close()
    assert findings == {}, findings


def tail(ex: str, n: int) -> list[dict]:
    return json.loads(run(["log", "tail", ex, "-n", str(n), "--json"])[1])


def test_log_messages_and_context_values_are_stored_verbatim(world):
    ex, agent = world["ex"], world["agent"]
    for p in PAYLOADS:
        ctx = {"error": p, p: [p, {"nested": p}]}
        # `--` so that a message such as "--" is a message, as in a shell script.
        run(["log", "add", ex, "error", "--context", json.dumps(ctx), "--agent", agent, "--task", "T-001", "--", p])
        (row,) = tail(ex, 1)
        assert row["message"] == p and row["context"] == ctx and row["event_type"] == "error"
        # And in the table itself, byte for byte.
        conn = seed.connect(world["db"])
        stored = conn.execute("SELECT message FROM task_execution_log ORDER BY id DESC LIMIT 1").fetchone()[0]
        conn.close()
        assert stored.encode() == p.encode()
    # The SIA query reads the same context.error back (no-progress detection works on the text).
    failures = json.loads(run(["log", "failures", ex, "--json"])[1])
    assert failures is not None


def test_payloads_as_ids_are_refused_and_change_nothing(world):
    ex, agent = world["ex"], world["agent"]
    before = snapshot(world["db"])
    for p in PAYLOADS:
        # (options, positionals): the payload as a positional comes after `--`, so that
        # "--" or "-x" is taken as an id the way a careful script passes it.
        for opts, pos in (
            (["run", "show"], [p]), (["run", "pause"], [p]), (["run", "resume"], [p]), (["run", "cancel"], [p]),
            (["waves"], [p]), (["log", "tail"], [p]), (["log", "failures"], [p]), (["log", "add"], [p, "info", "m"]),
            (["log", "add"], [ex, p, "m"]), (["log", "add", "--task", p], [ex, "info", "m"]),
            (["log", "add", "--agent", p], [ex, "info", "m"]), (["log", "tail", "--task", p], [ex]),
            (["log", "tail", "--type", p], [ex]), (["agent", "show"], [p]),
            (["agent", "finish", "--status", "completed"], [p]), (["heartbeat"], [p]),
            (["heartbeat", "--task", p], [agent]), (["heartbeat", "--status", p], [agent]), (["agent", "list"], [p]),
            (["agent", "stale"], [p]), (["agent", "spawn"], [p]), (["agent", "spawn", "--task", p], [ex]),
            (["checkpoint", "list"], [p]), (["checkpoint", "restore"], [p]), (["tasks", "show"], [p]),
            (["run", "list", "--list", p], []), (["run", "list", "--status", p], []),
            (["run", "start", "--triggered-by", p], [ex]),
        ):
            argv = opts + (["--", *pos] if pos else [])
            code, _out, err = run(argv, ok=False)
            assert code != 0, (argv, err)
            assert snapshot(world["db"]) == before, argv


def test_agent_config_and_error_text(world):
    ex = world["ex"]
    before = snapshot(world["db"])
    for p in PAYLOADS:
        for config in (json.dumps({p: 1}), json.dumps({"maxRetries": p}), p):
            code, _out, err = run(["agent", "spawn", ex, "--config", config], ok=False)
            assert code in (exitcodes.USAGE, exitcodes.INVALID_INPUT), (config, code, err)
        assert snapshot(world["db"]) == before
    for p in PAYLOADS[:8] + PAYLOADS[-4:]:
        agent = run(["agent", "spawn", ex, "--config", '{"maxRetries": 2}'])[1].strip()
        run(["agent", "finish", agent, "--status", "failed", "--error", p])
        shown = json.loads(run(["agent", "show", agent, "--json"])[1])
        text = json.dumps(shown, ensure_ascii=False)
        assert json.dumps(p, ensure_ascii=False)[1:-1] in text, (p, shown.get("error_context"))


def test_task_list_text_is_stored_verbatim(world):
    tasks = []
    for i, p in enumerate(PAYLOADS):
        tasks.append({
            # Display ids are free text too, minus whitespace and commas (refused by design).
            "id": "".join(c for c in p[:40] if not c.isspace() and c != ",") + f"#{i}",
            "title": p, "description": p, "command": p, "validate": p,
            "depends_on": [tasks[-1]["id"]] if tasks and i % 3 else [],
            "files": [{"path": f"{p[:60]}/{i}", "op": "UPDATE", "confidence": 0.5}],
        })
    for fmt in ("json", "toml"):
        name = PAYLOADS[0] + " " + fmt
        f = world["tmp"] / f"list.{fmt}"
        doc = {"name": name, "description": PAYLOADS[1], "tasks": tasks}
        if fmt == "json":
            f.write_text(json.dumps(doc))
        else:
            from test_fuzz_cli import to_toml

            f.write_text(to_toml(doc))
        list_id = run(["tasks", "import", f])[1].strip()
        shown = json.loads(run(["tasks", "show", list_id, "--json"])[1])
        assert shown["name"] == name and shown["description"] == PAYLOADS[1]
        by_id = {t["display_id"]: t for t in shown["tasks"]}
        for t in tasks:
            got = by_id[t["id"]]
            assert (got["title"], got["description"], got["command"], got["validate_command"]) == (t["title"],) * 4
            assert got["depends_on"] == t["depends_on"]
            assert [x["path"] for x in got["files"]] == [t["files"][0]["path"]]
        # The list runs: planning, waves and a display-id lookup all take the text as data.
        ex = run(["run", "start", list_id])[1].strip()
        run(["waves", ex, "--json"])
        run(["log", "add", ex, "info", "by display id", "--task", tasks[4]["id"]])
        (row,) = tail(ex, 1)
        assert row["task"] == tasks[4]["id"]


@pytest.mark.skipif(not git_available(), reason="git is not installed")
def test_checkpoint_messages_are_stored_verbatim(world, monkeypatch):
    genv = git_env(world["tmp"] / "home")
    for k, v in genv.items():
        monkeypatch.setenv(k, v)
    repo = init_repo(world["tmp"] / "repo", genv, {"a.txt": "a\n"})
    ex = world["ex"]
    for p in PAYLOADS[:10] + [PAYLOADS[-3]]:
        cp = run(["checkpoint", "create", ex, "--task", "T-001", "--repo", repo, "-m", p])[1].strip()
        (row,) = [r for r in json.loads(run(["checkpoint", "list", ex, "--json"])[1]) if r["id"] == cp]
        assert row["message"] == p
        body = git(repo, "log", "-1", "--format=%B", row["git_ref"], env=genv)
        assert p in body
    # The refs are only buildctl's, named by id.
    refs = git(repo, "for-each-ref", "--format=%(refname)", env=genv).split()
    assert all(r.startswith("refs/buildctl/checkpoints/cp_") or r == "refs/heads/main" for r in refs), refs


def test_payloads_through_the_real_executable(world, cli):
    """The lean hot path and Typer, in real processes (argv as the OS passes it)."""
    ex, agent = world["ex"], world["agent"]
    for p in PAYLOADS[:12]:
        r = cli("log", "add", ex, "warning", "--context", json.dumps({"error": p}), "--agent", agent, "--", p)
        assert r.returncode == 0, r.stderr
        r = cli("heartbeat", "--", p)
        assert r.returncode == exitcodes.NOT_FOUND and "Traceback" not in r.stderr, r.stderr
    r = cli("log", "tail", ex, "-n", "12", "--type", "warning", "--json", check=True)
    assert [row["message"] for row in json.loads(r.stdout)] == PAYLOADS[:12]
