"""Hypothesis-driven fuzzing of the whole command line and of `tasks import` files (issue 8).

Properties, for every generated argument list or file:
- never a traceback, never exit 70 (INTERNAL);
- a refusal (non-zero exit) prints one `error:` line (or, for a bare group, its help and exit 2)
  and leaves the database exactly as it was (every row of every table);
- input that is invalid by construction (unknown command or option, a missing argument or
  option value, an id that does not exist, a task-list file broken in a known way) never exits 0.

Most examples run in-process through the same two entry paths as the console script
(`buildctl.cli.main.run`, then the Typer app for help), stdout/stderr captured, to stay fast on two cores;
`test_spot_checks_in_real_processes` runs a sample through the real `buildctl` executable.

Commands that block or run task commands (`run exec`, `agent work`, `agent spawn … -- CMD`,
`--watch`, `--follow`, `agent claim --wait`) are fuzzed only for their refusals (in real
processes, and `--wait`'s in test_scripts), never with a valid execution id in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES, snapshot

from buildctl import exitcodes

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)


# --------------------------------------------------------------------------- the command tree

def _walk():
    """{command path: [declared params]} for every command."""
    from buildctl.cli import commands

    return {path: list(cmd.params) for path, cmd in commands().items()}


COMMANDS = _walk()
GROUPS = sorted({p[0] for p in COMMANDS if len(p) > 1})
TOP_WORDS = sorted({p[0] for p in COMMANDS})
#: Never run in-process with a real id: they block, or run task commands.
BLOCKING = {("run", "exec"), ("agent", "work")}
#: `--wait` too: `agent claim ID --wait 24h` on a run whose next task cannot start yet waits
#: that long in-process (seen once, while hypothesis shrank a failing example: CI hung).
BLOCKING_FLAGS = {"--watch", "-w", "--follow", "-f", "--wait"}


def test_the_walk_found_every_command():
    assert len(COMMANDS) >= 25, sorted(COMMANDS)
    for path in [("migrate",), ("tasks", "import"), ("run", "start"), ("log", "add"), ("checkpoint", "restore"),
                 ("heartbeat",), ("agent", "finish"), ("gc",), ("doctor",), ("waves",)]:
        assert path in COMMANDS, path


# --------------------------------------------------------------------------- running in-process

def invoke(argv: list[str]) -> tuple[int, str, str]:
    """What the console script does (buildctl.entry.main), in-process: the lean path, else Typer."""
    from buildctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main.run(argv)
        if code is None:
            from buildctl.cli.typer_app import run_app

            code = run_app(argv)
    return code, out.getvalue(), err.getvalue()


def check_outcome(argv, code: int, out: str, err: str, before: dict, db_path: Path, *, invalid: bool) -> None:
    where = f"argv={argv!r} exit={code} stderr={err[-600:]!r}"
    assert "Traceback" not in err and "Traceback" not in out, where
    assert code != exitcodes.INTERNAL, where
    if invalid:
        assert code != 0, "invalid input accepted: " + where
    if code == exitcodes.FAILED and not err and argv[-1:] != ["--help"] and "doctor" in argv:
        # Not a refusal: doctor ran and found something (stale agents under --stale-after 0,
        # say); its report is the output, and it only reads.
        assert snapshot(db_path) == before, "doctor changed the database: " + where
        return
    if code != 0:
        lines = [l for l in err.splitlines() if l.strip()]
        if len(lines) == 1:
            assert lines[0].startswith("error: "), where
        else:
            # A bare group or command with no arguments prints its help (Click's no_args_is_help).
            assert code == exitcodes.USAGE and not lines and "Usage" in out, where
        assert snapshot(db_path) == before, "a refused command changed the database: " + where


@pytest.fixture
def built_once(monkeypatch):
    """Typer rebuilds its Click command tree from the annotations on every call (~150 ms
    here, 95% of an in-process call); build it once per test and reuse it. The tree is
    a pure function of the app, so the commands under test are exactly the same."""
    import typer.main

    real = typer.main.get_command
    cache: dict[int, object] = {}

    def get_command(typer_instance):
        key = id(typer_instance)
        if key not in cache:
            cache[key] = real(typer_instance)
        return cache[key]

    monkeypatch.setattr(typer.main, "get_command", get_command)


@pytest.fixture
def world(migrated, tmp_path, monkeypatch, built_once):
    """The test database with a run, an agent and a log line; cwd outside any git repository."""
    monkeypatch.setenv("BUILDCTL_DB", str(migrated))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("BUILDCTL_DEBUG", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code, ex, err = invoke(["run", "start", str(EXAMPLES / "five-tasks.toml")])
    assert code == 0, err
    ex = ex.strip()
    code, agent, err = invoke(["agent", "spawn", ex])
    assert code == 0, err
    agent = agent.strip()
    assert invoke(["log", "add", ex, "info", "hello", "--agent", agent])[0] == 0
    from buildctl import storage

    db = storage.connect(str(migrated))
    list_id = db.scalar("SELECT task_list_id FROM task_list_execution_runs WHERE execution_id = ?", (ex,))
    db.close()
    return {"db": migrated, "ex": ex, "agent": agent, "list": list_id, "cwd": work}


# --------------------------------------------------------------------------- strategies

JUNK = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=24)
SPECIAL = st.sampled_from([
    "", " ", "-", "--", "-1", "0", "1", "3", "999999999999999999999", "1e309", "nan", "inf", "-inf", "0.5",
    "1s", "0s", "60s", "5m", "24h", "30d", "-3s", "1x", "s", "T-001", "T-999", "completed", "failed", "running",
    "info", "task_failed", "bogus_type", "{", "{}", "[]", "null", '{"a": 1}', '{"error": "x"}', '{"maxRetries": -1}',
    '{"maxRetries": 2}', "'; DROP TABLE tasks; --", "%", "_", "*", "ex_", "ag_", "cp_", "tl_", "/", ".", "..",
    "\udcff", "caf\udce9", "é", "🙂", "a\nb", "\t", "x" * 300,
    # The extremes: non-finite and huge numbers, deep nesting, JSON that is not strict.
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9223372036854775808", "-9223372036854775809",
    "99999999999999999999", "1e-400", "0x10", "1_000", "-0", "[" * 5_000, "{\"a\": " * 3_000 + "1",
    '{"error": NaN}', '{"error": Infinity}', '{"x": 1e999}', '{"a": 1, "a": 2}', '{"maxRetries": 1e999}',
    '{"maxRetries": 99999999999999999999}', '{"heartbeatIntervalMs": NaN}',
])


#: What Linux really hands a program: any bytes but NUL, decoded the way Python decodes argv.
ARGV_BYTES = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape"))


def values(w: dict):
    return st.one_of(SPECIAL, JUNK, ARGV_BYTES,
                     st.sampled_from([w["ex"], w["ex"][:6], w["agent"], w["agent"][:5], w["list"]]))


def _is_flag(p) -> bool:
    return p.is_flag


def _spellings(p) -> list[str]:
    return [*p.flags, *p.off_flags]


@st.composite
def command_argv(draw, w: dict):
    """A known command with random positionals and options (values from the pool), in any order."""
    path = draw(st.sampled_from(sorted(COMMANDS)))
    params = COMMANDS[path]
    blocking = path in BLOCKING
    positionals = [p for p in params if p.positional]
    options = [p for p in params if not p.positional]
    val = values(w)
    if blocking:
        # Only ids that do not exist: the command is refused before it runs anything.
        val = st.one_of(SPECIAL, JUNK, ARGV_BYTES).filter(lambda v: v not in (w["ex"], w["ex"][:6]) and not w["ex"].startswith(v or "\0"))
    n_pos = draw(st.integers(0, len(positionals) + 1))
    if path == ("agent", "spawn"):
        n_pos = min(n_pos, 1)  # a second positional is a command to run
    parts = [[draw(val)] for _ in range(n_pos)]
    for p in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        flag = draw(st.sampled_from(_spellings(p)))
        if flag in BLOCKING_FLAGS:
            continue
        parts.append([flag] if _is_flag(p) else [flag, draw(val)])
    parts = draw(st.permutations(parts))
    argv = list(path) + [a for part in parts for a in part]
    if path == ("agent", "spawn"):
        assume("--" not in argv[2:])
    return argv


def junk_argv(w: dict):
    return st.lists(st.one_of(values(w), st.sampled_from(TOP_WORDS + GROUPS + ["--db", "--json", "--help", "-h"])),
                    max_size=6).filter(lambda a: not _dangerous(a))


def _dangerous(argv: list[str]) -> bool:
    words = set(argv)
    return bool(words & {"work", "exec", "spawn"} or words & BLOCKING_FLAGS)


# --------------------------------------------------------------------------- argv fuzzing

def test_random_argument_lists_for_every_command(world):
    @settings(max_examples=1000, **SETTINGS)
    @given(argv=command_argv(world))
    def prop(argv):
        before = snapshot(world["db"])
        code, out, err = invoke(argv)
        check_outcome(argv, code, out, err, before, world["db"], invalid=False)

    prop()


def test_random_junk_argument_lists(world):
    @settings(max_examples=300, **SETTINGS)
    @given(argv=junk_argv(world))
    def prop(argv):
        before = snapshot(world["db"])
        code, out, err = invoke(argv)
        check_outcome(argv, code, out, err, before, world["db"], invalid=False)

    prop()


@st.composite
def invalid_argv(draw, w: dict):
    """Argument lists that are wrong by construction, and how."""
    kind = draw(st.sampled_from(["unknown-command", "unknown-option", "missing-value", "missing-argument",
                                 "unknown-id"]))
    if kind == "unknown-command":
        word = draw(JUNK.filter(lambda s: s and not s.startswith("-") and s not in TOP_WORDS))
        return kind, [word] + draw(st.lists(values(w), max_size=3))
    path = draw(st.sampled_from(sorted(COMMANDS)))
    params = COMMANDS[path]
    positionals = [p for p in params if p.positional]
    required_pos = [p for p in positionals if p.required]
    valued = [p for p in params if not p.positional and not _is_flag(p) and p.flag_value is None]
    # Plausible positionals: nonexistent ids, so blocking commands stop at the lookup.
    fake = lambda: "zz_" + draw(st.text("abcdef0123456789", min_size=4, max_size=8))  # noqa: E731
    args = [fake() for _ in required_pos]
    if kind == "unknown-option":
        return kind, list(path) + args + ["--zz-" + draw(st.text("abcxyz-", min_size=1, max_size=8))]
    if kind == "missing-value":
        assume(valued)
        p = draw(st.sampled_from(valued))
        return kind, list(path) + args + [p.flags[0]]
    if kind == "missing-argument":
        assume(required_pos)
        return kind, list(path) + args[:-1]
    # unknown-id: every id-like positional is an id that exists nowhere.
    assume(required_pos and path not in {("tasks", "import"), ("run", "start")})
    return kind, list(path) + args


def test_invalid_argument_lists_are_always_refused(world):
    @settings(max_examples=500, **SETTINGS)
    @given(case=invalid_argv(world))
    def prop(case):
        kind, argv = case
        before = snapshot(world["db"])
        code, out, err = invoke(argv)
        check_outcome(argv, code, out, err, before, world["db"], invalid=True)
        if kind in ("unknown-option", "missing-value"):
            assert code == exitcodes.USAGE, (argv, code, err)

    prop()


# --------------------------------------------------------------------------- task-list files

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "nan"
    if isinstance(v, str):
        # A JSON string is a TOML basic string, once astral characters stay raw (JSON would
        # write surrogate pairs) and DEL is escaped (TOML forbids it raw).
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        return '""'
    raise TypeError(v)


def to_toml(doc: dict) -> str:
    lines = [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in doc.items() if k != "tasks"]
    tasks = doc.get("tasks")
    if isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks):
        for t in tasks:
            lines.append("\n[[tasks]]")
            lines += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in t.items()]
    elif "tasks" in doc:
        lines.append(f"tasks = {_toml_value(tasks)}")
    return "\n".join(lines) + "\n"


@st.composite
def task_list_doc(draw):
    """A valid task list (a chain plus independent tasks), then maybe one known-bad mutation."""
    n = draw(st.integers(1, 6))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.sampled_from([f"T-{j:03d}" for j in range(1, i + 1)]), max_size=2, unique=True)) if i else []
        t = {"id": f"T-{i + 1:03d}", "title": draw(JUNK.filter(lambda s: s.strip())), "command": "true",
             "depends_on": deps,
             "files": [{"path": draw(st.sampled_from(["a.py", "b/c.sql", "README.md"])),
                        "op": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "READ"])),
                        "confidence": draw(st.sampled_from([0.1, 0.5, 0.9, 1]))}] if draw(st.booleans()) else []}
        if draw(st.booleans()):
            t["timeout"] = draw(st.sampled_from(["5m", "30s", "1h"]))
        tasks.append(t)
    doc = {"name": draw(JUNK.filter(lambda s: s.strip())), "max_parallel_agents": draw(st.integers(1, 8)), "tasks": tasks}
    mutation = draw(st.sampled_from([
        None, "unknown-top-key", "unknown-task-key", "duplicate-id", "unknown-dependency", "cycle", "self-dependency",
        "bad-op", "confidence-high", "confidence-negative", "confidence-text", "title-number", "tasks-not-list",
        "no-name", "max-parallel-negative", "max-parallel-text", "bad-timeout", "files-not-list", "depends-not-list",
        "id-number",
    ]))
    t0 = tasks[0]
    if mutation == "unknown-top-key":
        doc["colour"] = "blue"
    elif mutation == "unknown-task-key":
        t0["priority"] = 1
    elif mutation == "duplicate-id":
        tasks.append({**t0, "depends_on": []})
    elif mutation == "unknown-dependency":
        t0["depends_on"] = t0["depends_on"] + ["T-404"]
    elif mutation == "cycle":
        tasks.append({"id": "T-900", "title": "a", "command": "true", "depends_on": ["T-901"], "files": []})
        tasks.append({"id": "T-901", "title": "b", "command": "true", "depends_on": ["T-900"], "files": []})
    elif mutation == "self-dependency":
        t0["depends_on"] = [t0["id"]]
    elif mutation == "bad-op":
        t0["files"] = [{"path": "x", "op": draw(st.sampled_from(["WRITE", "", "DROP", "CREATE UPDATE"])), "confidence": 0.5}]
    elif mutation == "confidence-high":
        t0["files"] = [{"path": "x", "op": "READ", "confidence": draw(st.floats(1.0001, 1e9))}]
    elif mutation == "confidence-negative":
        t0["files"] = [{"path": "x", "op": "READ", "confidence": draw(st.floats(-1e9, -0.0001))}]
    elif mutation == "confidence-text":
        t0["files"] = [{"path": "x", "op": "READ", "confidence": "high"}]
    elif mutation == "title-number":
        t0["title"] = 42
    elif mutation == "tasks-not-list":
        doc["tasks"] = draw(st.sampled_from(["T-001", 3]))
    elif mutation == "no-name":
        del doc["name"]
    elif mutation == "max-parallel-negative":
        doc["max_parallel_agents"] = draw(st.integers(-5, 0))
    elif mutation == "max-parallel-text":
        doc["max_parallel_agents"] = "three"
    elif mutation == "bad-timeout":
        t0["timeout"] = draw(st.sampled_from(["5 parsecs", "-1s", "soon", ""]))
    elif mutation == "files-not-list":
        t0["files"] = "a.py"
    elif mutation == "depends-not-list":
        t0["depends_on"] = "T-001"
    elif mutation == "id-number":
        t0["id"] = 7
    return doc, mutation


def _import(world, name: str, data: bytes) -> tuple[list[str], int, str, str, dict]:
    path = world["cwd"] / name
    path.write_bytes(data)
    before = snapshot(world["db"])
    argv = ["tasks", "import", str(path)]
    code, out, err = invoke(argv)
    return argv, code, out, err, before


def test_random_task_list_files(world):
    @settings(max_examples=150, **SETTINGS)
    @given(case=task_list_doc(), fmt=st.sampled_from(["json", "toml"]))
    def prop(case, fmt):
        doc, mutation = case
        data = (json.dumps(doc) if fmt == "json" else to_toml(doc)).encode()
        argv, code, out, err, before = _import(world, f"list.{fmt}", data)
        check_outcome(argv, code, out, err, before, world["db"], invalid=mutation is not None)
        if mutation is None:
            assert code == 0, (doc, err)
        else:
            assert code == exitcodes.INVALID_INPUT, (mutation, err)

    prop()


def test_mutated_and_raw_bytes_task_list_files(world):
    base_json = json.dumps(json.loads(json.dumps({"name": "x", "tasks": [
        {"id": "T-001", "title": "a", "command": "true", "depends_on": [], "files": []},
        {"id": "T-002", "title": "b", "command": "true", "depends_on": ["T-001"], "files": []}]})))
    base_toml = (EXAMPLES / "five-tasks.toml").read_text()

    @settings(max_examples=150, **SETTINGS)
    @given(base=st.sampled_from(["json", "toml", "raw"]), cut=st.integers(0, 10_000), length=st.integers(0, 40),
           insert=st.binary(max_size=16), raw=st.binary(max_size=300), ext=st.sampled_from(["json", "toml", "txt", ""]))
    def prop(base, cut, length, insert, raw, ext):
        if base == "raw":
            data = raw
        else:
            text = (base_json if base == "json" else base_toml).encode()
            cut = cut % (len(text) + 1)
            data = text[:cut] + insert + text[cut + length:]
        name = "list." + ext if ext else "list"
        argv, code, out, err, before = _import(world, name, data)
        # Whether a mutated file is still valid is unknown; raw bytes never are a task list.
        check_outcome(argv, code, out, err, before, world["db"], invalid=(base == "raw"))

    prop()


# --------------------------------------------------------------------------- real processes

@pytest.mark.engines
def test_spot_checks_in_real_processes(world, cli, tmp_path):
    """A sample of refusals through the real executable (lean path and Typer), including the
    commands that block or run tasks, which the in-process fuzzing keeps away from real ids."""
    ex, agent = world["ex"], world["agent"]
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = 'x'\n[[tasks]]\nid = 'T-001'\n\xff\xfe\n")
    cases = [
        (["heartbeat", "\udcff"], None),
        (["log", "add", ex, "info", "caf\udce9"], exitcodes.INVALID_INPUT),
        (["run", "show", "\udcff"], None),
        (["tasks", "import", bad], exitcodes.INVALID_INPUT),
        (["log", "add", ex, "bogus_type", "m"], exitcodes.INVALID_INPUT),
        (["heartbeat", agent, "--progress", "nan"], exitcodes.USAGE),
        (["agent", "finish", agent, "--status", "exploded"], exitcodes.USAGE),
        (["run", "exec", "zz_nope"], exitcodes.NOT_FOUND),
        (["run", "exec", ex, "--jobs", "0"], exitcodes.USAGE),
        (["run", "exec", ex, "--config", "{"], exitcodes.INVALID_INPUT),
        (["agent", "work", "zz_nope"], exitcodes.NOT_FOUND),
        (["agent", "work", ex, "--config", '{"maxRetries": "x"}'], exitcodes.INVALID_INPUT),
        (["agent", "spawn", ex, "--config", "[]"], exitcodes.INVALID_INPUT),
        (["waves", "zz_nope", "--watch"], exitcodes.NOT_FOUND),
        (["log", "tail", "zz_nope", "--follow"], exitcodes.NOT_FOUND),
        (["--db", "postgresql://nowhere/x", "run", "list"], exitcodes.DATABASE),
        (["gc", "--stale-after", "soon"], exitcodes.USAGE),
        (["frobnicate"], exitcodes.USAGE),
    ]
    for argv, code in cases:
        before = snapshot(world["db"])
        r = cli(*argv, cwd=world["cwd"])
        check_outcome(argv, r.returncode, r.stdout, r.stderr, before, world["db"], invalid=True)
        if code is not None:
            assert r.returncode == code, (argv, r.returncode, r.stderr)
