"""One grammar, Click's: buildctl.cli.grammar against Click itself, and the two ways a
command is served (the lean path and the Typer app) against each other.

- Click (the real `click` package) is the oracle: every declared command is rebuilt as a
  plain Click command tree (all values strings, --db on the root, the groups and every
  command), and generated argument vectors — clustered short flags, `--opt=value`, `--`,
  options before and after positionals, --db anywhere — must parse to the same values,
  or be refused by both.
- The lean path (`buildctl.cli.main.run`) and the Typer app (`typer_app.run_app`) must
  reach the same command with the same values and the same exit code. Their effects on
  real databases are compared in tests/test_hotpath.py.
"""

from __future__ import annotations

import contextlib
import io

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildctl import exitcodes
from buildctl.cli import commands, grammar, groups, main

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
COMMANDS = commands()


# --------------------------------------------------------------------------- Click, the oracle

def _click_param(p: grammar.Param):
    if p.positional:
        return click.Argument([p.name], nargs=p.nargs, required=p.required)
    if p.is_flag:
        decl = "/".join((" ".join(p.flags), " ".join(p.off_flags))) if p.off_flags else None
        return click.Option([*([decl] if decl else p.flags), p.name], is_flag=True, default=False)
    if p.flag_value is not None:
        return click.Option([*p.flags, p.name], is_flag=False, flag_value=p.flag_value, required=p.required)
    return click.Option([*p.flags, p.name], multiple=p.multiple, required=p.required)


def _oracle() -> click.Group:
    """The command tree as Click would build it; every callback records what it got."""
    settings_ = {"help_option_names": ["-h", "--help"]}

    def record(*path):
        def callback(**values):
            click.get_current_context().meta["result"] = (path, values)

        return callback

    def db_option():
        return click.Option(["--db", "db"])

    def remember_db(**values):
        if values["db"] is not None:
            click.get_current_context().meta["db"] = values["db"]

    root = click.Group("buildctl", params=[db_option()], callback=remember_db, context_settings=settings_)
    subgroups: dict[str, click.Group] = {}
    for path, cmd in COMMANDS.items():
        params = [_click_param(p) for p in cmd.params] + [db_option()]
        command = click.Command(path[-1], params=params, callback=record(*path), context_settings=settings_)
        if len(path) == 1:
            root.add_command(command)
        else:
            if path[0] not in subgroups:
                subgroups[path[0]] = click.Group(path[0], params=[db_option()], callback=remember_db,
                                                 context_settings=settings_)
                root.add_command(subgroups[path[0]])
            subgroups[path[0]].add_command(command)
    return root


ORACLE = _oracle()


def click_parse(argv: list[str]):
    """('ok', path, values, db) or ('refused', exit code) or ('help',)."""
    ctx_meta = {}
    try:
        with ORACLE.make_context("buildctl", list(argv)) as ctx:
            ctx_meta = ctx.meta
            ORACLE.invoke(ctx)
    except click.exceptions.Exit:
        return ("help",)
    except click.UsageError as exc:
        return ("refused", exc.exit_code)
    path, values = ctx_meta["result"]
    db = values.pop("db") or ctx_meta.get("db")
    return ("ok", path, _normal(values), db)


def _normal(values: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def ours(argv: list[str]):
    """The same answer from buildctl's grammar (what buildctl.cli.main does before running)."""
    inv = grammar.locate(argv, groups())
    if inv.error is not None:
        return ("refused", exitcodes.USAGE)
    if inv.help:
        return ("help",)
    cmd = COMMANDS.get(tuple(inv.words))
    if cmd is None:
        return ("refused", exitcodes.USAGE)  # a bare group: Click shows its usage and exits 2
    try:
        tokens = grammar.tokenize(cmd.params, inv.args)
        if tokens.help:
            return ("help",)
        values = grammar.bind(cmd, tokens, convert=False)
    except grammar.ParseError as exc:
        return ("refused", exc.exit_code)
    # The oracle declares no defaults: compare what the command line gave.
    given_options = {p.name for p in tokens.order}
    values = {p.name: values[p.name] if p.positional or p.name in given_options or p.is_flag else None
              for p in cmd.params}
    return ("ok", cmd.path, _normal(values), tokens.values.get("db") or inv.db)


def _comparable(result):
    """Click gives () for an empty nargs=-1 / multiple, buildctl []; both mean "none given"."""
    if result[0] != "ok":
        return result
    _, path, values, db = result
    return ("ok", path, {k: (v or None) if isinstance(v, list) else v for k, v in values.items()}, db)


# --------------------------------------------------------------------------- generated argument vectors

WORD = st.sampled_from(["ex_1", "ag_2", "T-001", "info", "hello world", "x", "-", "5", "1s", "{}", "a=b", "--",
                        "-5", "running", "completed", "é", ""])


@st.composite
def argv_for(draw, path: tuple):
    cmd = COMMANDS[path]
    options = [p for p in cmd.params if not p.positional]
    short_flags = [f[1] for p in options if p.is_flag for f in p.flags if len(f) == 2]
    short_valued = [f[1] for p in options if not p.is_flag for f in p.flags if len(f) == 2]
    parts: list[list[str]] = [[draw(WORD)] for _ in range(draw(st.integers(0, 4)))]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["opt", "opt=", "cluster", "db", "db=", "unknown", "bare"]))
        if kind in ("opt", "opt=") and options:
            p = draw(st.sampled_from(options))
            flag = draw(st.sampled_from([*p.flags, *p.off_flags]))
            if p.is_flag:
                parts.append([flag] if kind == "opt" else [f"{flag}={draw(WORD)}"])
            elif kind == "opt=":
                parts.append([f"{flag}={draw(WORD)}"])
            else:
                parts.append([flag, draw(WORD)] if draw(st.booleans()) or p.flag_value is None else [flag])
        elif kind == "cluster" and (short_flags or short_valued):
            letters = draw(st.lists(st.sampled_from(short_flags or short_valued), min_size=1, max_size=3))
            tail = draw(st.sampled_from(short_valued)) + draw(WORD) if short_valued and draw(st.booleans()) else ""
            parts.append(["-" + "".join(letters) + tail])
        elif kind == "db":
            parts.append(["--db", draw(st.sampled_from(["a.db", "b.db", "--json"]))])
        elif kind == "db=":
            parts.append([f"--db={draw(st.sampled_from(['a.db', 'c.db', '']))}"])
        elif kind == "unknown":
            parts.append([draw(st.sampled_from(["--bogus", "-Z", "--jso", "--db-x"]))])
        else:
            parts.append([draw(WORD)])
    parts = draw(st.permutations(parts))
    body = [w for part in parts for w in part]
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + ["--"] + body[cut:]
    before = draw(st.sampled_from([[], ["--db", "root.db"], ["--db=root.db"]]))
    between = draw(st.sampled_from([[], ["--db", "group.db"]])) if len(path) == 2 else []
    words = [*before, path[0], *between, *path[1:]]
    return words + body


def test_the_oracle_sees_every_command():
    assert {c.name for c in ORACLE.commands.values()} >= {"waves", "heartbeat", "run", "agent", "log", "gc"}
    assert click_parse(["heartbeat", "ag_1", "--progress", "5"])[0] == "ok"
    assert click_parse(["heartbeat", "ag_1", "--bogus"]) == ("refused", 2)


@settings(max_examples=1200, **SETTINGS)
@given(data=st.data())
def test_every_command_line_parses_as_click_parses_it(data):
    path = data.draw(st.sampled_from(sorted(COMMANDS)))
    argv = data.draw(argv_for(path))
    assert _comparable(ours(argv)) == _comparable(click_parse(argv)), argv


@pytest.mark.parametrize("argv", [
    ["log", "tail", "ex_1", "-fn2"],              # clustered: -f -n 2
    ["log", "tail", "ex_1", "-n=2"],              # Click reads the value "=2"
    ["log", "tail", "ex_1", "-n2", "--json"],
    ["gc", "--dry-run", "-qq"],                   # a flag repeated
    ["waves", "ex_1", "--db", "x.db"],            # --db after the command
    ["--db", "x.db", "waves", "ex_1", "--db=y.db"],
    ["log", "add", "ex_1", "info", "--", "--not-an-option"],
    ["log", "add", "--task", "T-1", "ex_1", "info", "msg"],
    ["agent", "spawn", "ex_1", "--task", "T-1", "--", "sh", "-c", "exit 3"],
    ["agent", "spawn", "ex_1", "sh", "-c", "x"],  # without --, -c is an option: refused
    ["heartbeat", "ag", "--progress"],            # an option without its value
    ["heartbeat", "ag", "--json=yes"],
    ["run", "--db", "g.db", "show", "ex_1"],      # --db between a group and its command
    ["agent", "work", "ex_1", "--no-checkpoints", "--checkpoints"],
])
def test_known_cases_parse_as_click_parses_them(argv):
    assert _comparable(ours(argv)) == _comparable(click_parse(argv)), argv


def test_the_cases_the_issue_names():
    assert ours(["log", "tail", "ex_1", "-fn2"])[2]["lines"] == "2"
    assert ours(["log", "tail", "ex_1", "-fn2"])[2]["follow"] is True
    assert ours(["log", "tail", "ex_1", "-n=2"])[2]["lines"] == "=2"  # and conversion refuses it (exit 2)
    assert ours(["gc", "--dry-run", "-qq"])[0] == "ok"
    assert ours(["waves", "ex_1", "--db", "x.db"])[3] == "x.db"


# --------------------------------------------------------------------------- the lean path and the Typer app

def _served(monkeypatch, runner, argv):
    """Run argv through one path; return (exit code, the command and values it reached)."""
    reached = []

    def capture(cmd, values, location):
        reached.append((cmd.path, values, location))
        return 0

    monkeypatch.setattr(main, "execute", capture)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = runner(argv)
    return code, reached, err.getvalue()


def _lean(argv):
    code = main.run(argv)
    return -1 if code is None else code  # -1: the lean path hands it to Typer (help)


def _typer(argv):
    from buildctl.cli.typer_app import run_app

    return run_app(argv)


@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_the_lean_path_and_the_typer_app_reach_the_same_command_with_the_same_values(data, monkeypatch):
    path = data.draw(st.sampled_from(sorted(COMMANDS)))
    argv = [a for a in data.draw(argv_for(path)) if a not in ("-h", "--help")]
    lean_code, lean_reached, lean_err = _served(monkeypatch, _lean, argv)
    typer_code, typer_reached, typer_err = _served(monkeypatch, _typer, argv)
    if lean_code == -1:  # a bare group: Typer prints its usage
        assert typer_code == exitcodes.USAGE and not typer_reached, argv
        return
    assert (lean_code, lean_reached) == (typer_code, typer_reached), (argv, lean_err, typer_err)
    assert lean_err == typer_err, argv


def test_global_db_anywhere_reaches_the_command(monkeypatch):
    for argv in (["--db", "a.db", "waves", "ex_1"], ["waves", "--db", "a.db", "ex_1"], ["waves", "ex_1", "--db=a.db"],
                 ["run", "--db", "a.db", "show", "ex_1"]):
        for runner in (_lean, _typer):
            code, reached, err = _served(monkeypatch, runner, argv)
            assert code == 0 and reached and reached[0][2] == "a.db", (argv, runner, err)
