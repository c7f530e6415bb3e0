"""The CLI skeleton: help everywhere, --version, --db resolution, the error convention."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer

from buildctl import __version__, exitcodes, storage
from buildctl.cli.typer_app import app
from conftest import assert_refused, buildctl_executable

pytestmark = pytest.mark.engines


def walk(cmd, path=()):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from walk(sub, path + (name,))


def test_every_command_and_option_has_help():
    root = typer.main.get_command(app)
    missing = []
    for path, cmd in walk(root):
        if path and not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for p in cmd.params:
            if p.name == "help":
                continue
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"{' '.join(path) or 'buildctl'} {p.opts[0] if p.opts else p.name}")
    assert not missing, f"no help text: {missing}"


def test_version(cli):
    r = cli("--version", check=True)
    assert r.out == f"buildctl {__version__}"


def test_usage_error_is_one_line_exit_2(cli):
    r = cli("--no-such-flag")
    assert_refused(r, code=exitcodes.USAGE, contains="No such option")
    r = cli("migrate", "--bogus")
    assert_refused(r, code=exitcodes.USAGE, contains="buildctl migrate --help")


def test_db_option_beats_environment_beats_state_folder(cli, tmp_path, env, db_path):
    def migrate_json(*db: str, environ: dict) -> dict:
        p = subprocess.run(buildctl_executable() + [*db, "migrate", "--json"], env=environ, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    # No --db and no BUILDCTL_DB: the XDG state folder.
    bare = {k: v for k, v in env.items() if k != "BUILDCTL_DB"}
    state = tmp_path / "xdg"
    bare["XDG_STATE_HOME"] = str(state)
    assert migrate_json(environ=bare)["database"] == str(state / "buildctl" / "buildctl.db")
    # BUILDCTL_DB (a file, or the PostgreSQL database under test) wins over the state folder.
    assert migrate_json(environ={**bare, "BUILDCTL_DB": str(db_path)})["database"] == str(db_path)
    # --db wins over both, whichever engine each names.
    flag = str(tmp_path / "flag.db")
    assert migrate_json("--db", flag, environ={**bare, "BUILDCTL_DB": str(db_path)})["database"] == flag
    assert migrate_json("--db", str(db_path), environ={**bare, "BUILDCTL_DB": flag})["database"] == str(db_path)


def test_resolve_location_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("BUILDCTL_DB", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert storage.resolve_location(None) == str(tmp_path / ".local" / "state" / "buildctl" / "buildctl.db")
    monkeypatch.setenv("BUILDCTL_DB", "/x/y.db")
    assert storage.resolve_location(None) == "/x/y.db"
    assert storage.resolve_location("/z.db") == "/z.db"


@pytest.mark.sqlite_only(reason="a file that is not a SQLite database")
def test_unreadable_database_is_one_line_not_a_traceback(cli, tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    r = cli("--db", str(bad), "migrate", "--status")
    assert_refused(r, code=exitcodes.DATABASE)


def test_internal_errors_show_a_traceback_only_with_debug(tmp_path):
    code = ("import sys; import buildctl.entry as e; import buildctl.migrations as m;"
            "m.status = lambda db: 1/0;"
            "sys.exit(e.run(['migrate', '--status']))")
    env = {**os.environ, "BUILDCTL_DB": str(tmp_path / "x.db")}
    env.pop("BUILDCTL_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == exitcodes.INTERNAL
    assert p.stderr.startswith("error: internal error: ZeroDivisionError") and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-c", code], env={**env, "BUILDCTL_DEBUG": "1"}, capture_output=True, text=True)
    assert "Traceback" in p.stderr and "ZeroDivisionError" in p.stderr


def test_exit_code_table_in_readme_matches_the_module():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, meaning in exitcodes.TABLE:
        assert f"| {code} | {meaning} |" in readme, f"README exit-code table lacks {code}"


def test_an_unreachable_postgresql_server_is_one_line_on_every_path(cli):
    """Nothing listens on port 1: the lean hot path and a read command both refuse in one line, exit 7,
    with no password shown."""
    for argv in (["run", "list"], ["heartbeat", "ag_x"]):
        r = cli("--db", "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/test", *argv)
        assert_refused(r, code=exitcodes.DATABASE)
        assert "s3cr3t-pw" not in r.stderr
