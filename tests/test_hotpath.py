"""The lean hot path: no Typer/Rich/pydantic/sqlite-utils at run time, one
declaration feeding both paths, the same behaviour on both, and 32 writers at once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import seed
from buildctl import exitcodes
from buildctl.cli import commands, grammar, groups, main
from conftest import assert_refused, buildctl_executable, snapshot

HEAVY = ("typer", "rich", "pydantic", "sqlite_utils", "click")
CONSOLE_SCRIPT = Path(sys.executable).with_name("buildctl")

# Runs the installed console script's code in this process and, when it exits (the lean path ends
# with os._exit, anything else with SystemExit), writes the loaded top-level modules
# to $PROBE_OUT.
PROBE = r"""
import os, sys
out = os.environ["PROBE_OUT"]
def dump():
    loaded = sorted({m.split(".")[0] for m in sys.modules})
    import json
    with open(out, "w") as f:
        json.dump(loaded, f)
real_exit = os._exit
def exit_hook(code):
    dump()
    real_exit(code)
os._exit = exit_hook
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
with open(script) as f:
    code = compile(f.read(), script, "exec")
try:
    exec(code, {"__name__": "__main__", "__file__": script})
except SystemExit:
    dump()
    raise
"""


@pytest.fixture
def lane(db):
    ids = seed.seed_list(db, tasks=("T-001", "T-002"))
    seed.seed_run(db)
    seed.seed_run(db, execution_id="ex_other", run_number=2)
    seed.seed_wave(db, wave_number=1, task_ids=list(ids.values()), status="running")
    seed.seed_agent(db, "ag_par")
    seed.seed_agent(db, "ag_stuck", status="stuck")
    seed.seed_agent(db, "ag_done", status="completed")
    seed.seed_agent(db, "ag_other", execution_id="ex_other")
    return ids


def _probe(env, tmp_path, *args) -> tuple[subprocess.CompletedProcess, set[str]]:
    out = tmp_path / "modules.json"
    p = subprocess.run([sys.executable, "-c", PROBE, str(CONSOLE_SCRIPT), *args], env={**env, "PROBE_OUT": str(out)},
                       capture_output=True, text=True)
    return p, set(json.loads(out.read_text()))


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="needs the installed console script")
def test_hot_commands_load_no_typer_rich_pydantic_or_sqlite_utils(env, tmp_path, lane):
    for args in (["heartbeat", "ag_par", "--progress", "5"],
                 ["log", "add", "ex_seed", "info", "hello", "--context", '{"a": 1}'],
                 ["heartbeat", "ag_done"],  # a refusal takes the lean path too
                 ["agent", "finish", "ag_par", "--status", "completed"]):
        p, modules = _probe(env, tmp_path, *args)
        assert p.returncode == (exitcodes.CONFLICT if args[1] == "ag_done" else 0), p.stderr
        assert not modules & set(HEAVY), (args, sorted(modules & set(HEAVY)))
        # Not even the stdlib modules the budget cannot afford.
        assert not modules & {"pathlib", "typing", "dataclasses", "inspect", "argparse", "secrets"}, (args, modules)
        if args[0] == "heartbeat" or args[:2] == ["agent", "finish"]:
            # Nothing to read or write as JSON here (ag_par holds no task: its config is not
            # needed): json, and the re it imports, would be ~7 ms of the call. (Only json is
            # checked: the console script that pip before 23.1 writes imports re itself.)
            assert "json" not in modules, args
    # The probe does see Typer when a command goes through it (help).
    p, modules = _probe(env, tmp_path, "agent", "spawn", "--help")
    assert p.returncode == 0, p.stderr
    assert "typer" in modules
    # Plain help: not Typer's Rich help, whose markdown support imports markdown-it and
    # pygments (~110 ms of every --help), nor pydantic.
    assert not modules & {"markdown_it", "pygments", "pydantic"}, sorted(modules & {"markdown_it", "pygments", "pydantic"})
    assert "--task" in p.stdout and "╭" not in p.stdout


READ_CASES = [
    ["agent", "list", "--json"],
    ["agent", "list", "ex_seed", "--status", "running", "--json"],
    ["agent", "list"],
    ["agent", "stale", "--threshold", "1h", "--json"],
    ["run", "list", "--json"],
    ["run", "list", "--status", "running"],
    ["run", "show", "ex_seed", "--json"],
    ["run", "show", "ex_seed"],
    ["waves", "ex_seed", "--json"],
    ["waves", "ex_s"],
    ["log", "tail", "ex_seed", "-n", "2", "--json"],
    ["log", "tail", "ex_seed", "-n2", "--type", "info", "--type", "warning", "--json"],
    ["log", "tail", "ex_seed", "--errors", "--since", "1h"],
    ["gc", "--dry-run", "-qq", "--json"],  # a short flag clustered with itself
    ["tasks", "list", "--json"],
    ["agent", "show", "ag_par", "--json"],
    ["log", "failures", "ex_seed", "--min", "1", "--json"],
    ["checkpoint", "list", "ex_seed", "--json"],
    # refused
    ["agent", "stale", "--threshold", "soon"],
    ["agent", "list", "--status", "bogus"],
    ["run", "list", "--status", "bogus"],
    ["run", "show"],
    ["waves", "ex_nope"],
    ["waves", "ex_seed", "--watch", "--interval", "0"],
    ["log", "tail", "ex_seed", "-n", "0"],
    ["log", "tail", "ex_seed", "--json=yes"],
    ["log", "tail", "ex_seed", "-n=2"],  # Click reads the value "=2": not an integer
    ["log", "tail", "ex_seed", "--since", "-5m"],
    ["tasks", "list", "extra"],
    ["agent", "show", "ag_nope"],
    ["log", "failures", "ex_seed", "--min", "0"],
]


def test_read_commands_take_the_lean_path_without_typer_or_pydantic(env, tmp_path, lane):
    for args in (["waves", "ex_seed"], ["run", "show", "ex_seed"], ["log", "tail", "ex_seed", "-n", "5"],
                 ["agent", "stale", "--json"], ["run", "list"], ["agent", "list"], ["tasks", "list"],
                 ["agent", "show", "ag_par"], ["log", "failures", "ex_seed"], ["checkpoint", "list", "ex_seed"],
                 ["tasks", "show", "tl_seed"], ["gc", "--dry-run", "--json"]):
        p, modules = _probe(env, tmp_path, *args)
        assert p.returncode == 0, (args, p.stderr)
        assert not modules & {"typer", "pydantic", "sqlite_utils", "click"}, (args, sorted(modules & set(HEAVY)))
    # doctor reads the schema with sqlite-utils' introspection (which brings click): the
    # one read command that imports it, and only because it uses it; never Typer.
    p, modules = _probe(env, tmp_path, "doctor", "--json")
    assert p.returncode == 0, p.stderr
    assert "sqlite_utils" in modules and not modules & {"typer", "pydantic"}, sorted(modules & set(HEAVY))


def served_lean(argv: list[str]) -> bool:
    """Whether the console script serves argv without Typer (everything but help and bare groups)."""
    inv = grammar.locate(argv, groups())
    return inv.error is None and not inv.help and tuple(inv.words) in commands()


_SECONDS = re.compile(r'("seconds_since_heartbeat": )\d+|(\d+(\.\d+)?(ms|s|m\d\ds)\b)')


@pytest.mark.engines
def test_read_commands_print_and_refuse_the_same_on_both_paths(env, migrated, lane, tmp_path):
    """The lean path and the generated Typer commands: same exit code, same output."""
    bare = {k: v for k, v in env.items() if k != "BUILDCTL_DB"}
    spec, out = tmp_path / "cases.json", tmp_path / "typer.json"
    spec.write_text(json.dumps([[str(migrated), argv] for argv in READ_CASES]))
    before = _normalized(migrated)
    lean_results = []
    for argv in READ_CASES:
        assert served_lean(argv), argv
        p = subprocess.run(buildctl_executable() + ["--db", str(migrated)] + argv, env=bare, capture_output=True, text=True)
        lean_results.append([p.returncode, p.stdout, p.stderr])
    subprocess.run([sys.executable, "-c", TYPER_RUNNER, str(spec), str(out)], env={**bare, "COLUMNS": "200"}, check=True)
    def norm(text: str) -> str:
        # The two runs are a moment apart: ages may differ, and table columns with them.
        text = _SECONDS.sub("<n>", _TS.sub("<ts>", text))
        return re.sub(r"[─━]+", "-", re.sub(r" +", " ", text))
    refused = 0
    for argv, lr, tr in zip(READ_CASES, lean_results, json.loads(out.read_text())):
        assert lr[0] == tr[0], f"{argv}: exit {lr[0]} (lean) != {tr[0]} (typer): {lr[2]} / {tr[2]}"
        assert norm(lr[1]) == norm(tr[1]), f"{argv}: stdout differs\n{lr[1]}\n---\n{tr[1]}"
        assert norm(lr[2]) == norm(tr[2]), f"{argv}: stderr differs: {lr[2]!r} != {tr[2]!r}"
        if lr[0] != 0:
            refused += 1
            assert_refused(type("R", (), {"returncode": lr[0], "stdout": lr[1], "stderr": lr[2]})())
    assert refused == 13
    assert _normalized(migrated) == before  # reading wrote nothing


def test_help_and_unknown_commands_fall_through_to_typer(cli, lane):
    assert main.run(["heartbeat", "--help"]) is None
    assert main.run(["log", "add", "ex", "info", "m", "-h"]) is None
    assert main.run(["--version", "heartbeat", "x"]) is None
    assert main.run(["agent"]) is None and main.run([]) is None
    assert served_lean(["--db", "x.db", "heartbeat", "a", "--", "--help"])  # after --, a value
    r = cli("heartbeat", "--help", check=True)
    for p in commands()[("heartbeat",)].params:
        assert (p.flags[0] if p.flags else p.metavar) in r.stdout
    assert "--status" in cli("agent", "finish", "--help", check=True).stdout
    assert "EXEC" in cli("log", "add", "--help", check=True).stdout


def test_global_db_before_the_command(cli, env, migrated, lane, tmp_path):
    bare = {k: v for k, v in env.items() if k != "BUILDCTL_DB"}
    for args in (["--db", str(migrated), "heartbeat", "ag_par"], [f"--db={migrated}", "heartbeat", "ag_par"]):
        p = subprocess.run(buildctl_executable() + args, env=bare, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    assert sqlite_count(migrated, "agent_heartbeats") == 2
    missing = tmp_path / "nowhere.db"
    p = subprocess.run(buildctl_executable() + ["--db", str(missing), "heartbeat", "ag_par"], env=bare,
                       capture_output=True, text=True)
    assert p.returncode == exitcodes.NEEDS_MIGRATION and "buildctl migrate" in p.stderr


def sqlite_count(path, table):
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_debug_shows_the_traceback_and_driver_errors_are_one_line(cli, db, migrated, lane):
    r = cli("heartbeat", "ag_nope", extra_env={"BUILDCTL_DEBUG": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr and "NotFound" in r.stderr
    # A driver error inside a command (a table gone from under it): one translated line, exit 7.
    db.execute("DROP TABLE agent_heartbeats")
    before = snapshot(migrated)
    assert_refused(cli("heartbeat", "ag_par"), code=exitcodes.DATABASE, contains="no such table: agent_heartbeats")
    assert snapshot(migrated) == before


# --------------------------------------------------------------------------- parity

PARITY_CASES = [
    # accepted
    ["heartbeat", "ag_par"],
    ["heartbeat", "ag_par", "--status", "idle", "--task", "T-002", "--progress", "40", "--memory-mb", "12.5", "--cpu", "3"],
    ["heartbeat", "--progress=100", "ag_par", "--status=running"],
    ["heartbeat", "ag_par", "--progress", "1", "--progress", "2"],
    ["heartbeat", "ag_stuck"],
    ["heartbeat", "ag_pa"],
    ["log", "add", "ex_seed", "info", "hello world", "--task", "T-001", "--agent", "ag_par", "--context", '{"k": [1, 2]}'],
    ["log", "add", "ex_seed", "warning", "--", "-dash message"],
    ["log", "add", "--task", "T-002", "ex_s", "task_failed", "boom", "--context={\"error\": \"x\"}"],
    ["log", "add", "--task=T-001", "--agent=ag_par", "ex_seed", "info", "--", "--looks like an option"],
    ["agent", "finish", "ag_par", "--status", "failed", "--error", "boom"],
    ["agent", "finish", "--status", "completed", "ag_stuck"],
    # refused: usage
    ["heartbeat"],
    ["heartbeat", "ag_par", "--progress", "101"],
    ["heartbeat", "ag_par", "--progress", "abc"],
    ["heartbeat", "ag_par", "--progress", "-1"],
    ["heartbeat", "ag_par", "--cpu", "nan"],
    ["heartbeat", "ag_par", "--status", "stuck"],
    ["heartbeat", "ag_par", "--bogus"],
    ["heartbeat", "ag_par", "--statu", "idle"],
    ["heartbeat", "ag_par", "-x"],
    ["heartbeat", "ag_par", "--status"],
    ["heartbeat", "ag_par", "--progress=5=6"],
    ["heartbeat", "ag_par", "-p5"],
    ["heartbeat", "ag_par", "extra", "more"],
    ["log", "add", "ex_seed", "info"],
    ["agent", "finish", "ag_par"],
    ["agent", "finish", "ag_par", "--status", "running"],
    # refused: domain
    ["heartbeat", "ag_nope"],
    ["heartbeat", "ag_done"],
    ["heartbeat", "ag_", "--progress", "5"],
    ["heartbeat", "ag_par", "--task", "T-999"],
    ["log", "add", "ex_seed", "bogus", "msg"],
    ["log", "add", "ex_seed", "info", "msg", "--context", "{bad"],
    ["log", "add", "ex_seed", "info", "msg", "--context", "[1]"],
    ["log", "add", "ex_nope", "info", "msg"],
    ["log", "add", "ex_seed", "info", "msg", "--agent", "ag_other"],
    ["agent", "finish", "ag_done", "--status", "completed"],
]

# Runs each case through the Typer app (run_app) in one process, capturing its output.
TYPER_RUNNER = r"""
import contextlib, io, json, sys
from buildctl.cli.typer_app import run_app
results = []
for db, argv in json.load(open(sys.argv[1])):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_app(["--db", db] + argv)
    results.append([code, out.getvalue(), err.getvalue()])
json.dump(results, open(sys.argv[2], "w"))
"""

_TS = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?")


def _normalized(path: Path) -> dict:
    """Every row of every table, timestamps (even inside JSON text) replaced: the two paths ran at different times."""
    return {t: [tuple(_TS.sub("<ts>", v) if isinstance(v, str) else v for v in row) for row in rows]
            for t, rows in snapshot(path).items()}


@pytest.mark.engines
def test_lean_and_typer_paths_accept_and_refuse_the_same_argument_lists(env, db, migrated, lane, engine, copy_database,
                                                                       tmp_path):
    if engine == "sqlite":  # make the seeded file self-contained (no WAL beside it) before copying it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()  # PostgreSQL copies a database nobody is connected to
    cases = []
    for i, argv in enumerate(PARITY_CASES):
        assert served_lean(argv), argv  # every case is one the lean path serves
        cases.append((argv, *(copy_database(migrated, f"{side}-{i}") for side in ("lean", "typer"))))
    bare = {k: v for k, v in env.items() if k != "BUILDCTL_DB"}
    lean_results = []
    for argv, lean_db, _ in cases:
        p = subprocess.run(buildctl_executable() + ["--db", str(lean_db)] + argv, env=bare, capture_output=True, text=True)
        lean_results.append([p.returncode, p.stdout, p.stderr])
    spec, out = tmp_path / "cases.json", tmp_path / "typer.json"
    spec.write_text(json.dumps([[str(typer_db), argv] for argv, _, typer_db in cases]))
    subprocess.run([sys.executable, "-c", TYPER_RUNNER, str(spec), str(out)], env=bare, check=True)
    typer_results = json.loads(out.read_text())
    accepted = refused = 0
    for (argv, lean_db, typer_db), lr, tr in zip(cases, lean_results, typer_results):
        assert lr == tr, f"{argv}: lean {lr} != typer {tr}"
        assert _normalized(lean_db) == _normalized(typer_db), argv
        if lr[0] == 0:
            accepted += 1
            assert _normalized(lean_db) != _normalized(migrated), f"{argv} was accepted but wrote nothing"
        else:
            refused += 1
            assert_refused(type("R", (), {"returncode": lr[0], "stdout": lr[1], "stderr": lr[2]})())
            assert _normalized(lean_db) == _normalized(migrated), f"{argv} was refused but wrote something"
    assert accepted == 12 and refused == len(PARITY_CASES) - 12


def test_every_typer_command_is_generated_from_the_declaration():
    import typer

    from buildctl.cli.typer_app import app

    root = typer.main.get_command(app)
    for cmd in commands().values():
        node = root
        for word in cmd.path:
            node = node.commands[word]
        params = [p for p in node.params if p.name not in ("help", "db")]
        assert sorted(p.name for p in params) == sorted(p.name for p in cmd.params)
        for p in params:
            decl = next(d for d in cmd.params if d.name == p.name)
            assert p.help and decl.help in p.help
            assert tuple(getattr(p, "opts", ())) == decl.flags or not decl.flags
            assert p.required == decl.required


# --------------------------------------------------------------------------- 32 writers

WORKER = r"""
import sys
from buildctl import agents, execlog, storage
db_path, execution_id, instance_id, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.stdin.read()  # start together
db = storage.connect(db_path)
for i in range(n):
    agents.heartbeat(db, instance_id, status="running", progress=i % 101)
    execlog.add(db, execution_id, "info", f"{instance_id} event {i}", agent=instance_id,
                context_json='{"i": %d}' % i)
db.close()
"""


@pytest.mark.slow
@pytest.mark.engines
def test_32_processes_writing_heartbeats_and_log_events_at_once(env, db, migrated, lane):
    writers, per_writer = 32, 200
    ids = [f"ag_w{i:02d}" for i in range(writers)]
    for iid in ids:
        seed.seed_agent(db, iid)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(migrated), "ex_seed", iid, str(per_writer)],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for iid in ids]
    for p in procs:  # all imported and waiting: release them together
        p.stdin.close()
    results = [(p.wait(timeout=240), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    for code, out, err in results:
        assert code == 0 and err == "", err
        assert "locked" not in err
    hb = dict(db.execute("SELECT instance_id, COUNT(*) FROM agent_heartbeats GROUP BY instance_id").fetchall())
    ev = dict(db.execute("SELECT instance_id, COUNT(*) FROM task_execution_log WHERE instance_id LIKE 'ag_w%' "
                         "GROUP BY instance_id").fetchall())
    assert hb == {iid: per_writer for iid in ids}
    assert ev == {iid: per_writer for iid in ids}
    # Each writer's events arrived in its own order.
    for iid in ids[:4]:
        seq = [json.loads(c)["i"] for (c,) in db.execute(
            "SELECT context FROM task_execution_log WHERE instance_id = ? ORDER BY id", (iid,)).fetchall()]
        assert seq == list(range(per_writer))
