"""Shared fixtures: a real database per test and a runner for the real `buildctl` command.

The test's database is on the engine under test (``engine``, tests/engines.py): a SQLite
file by default; in a module marked ``pytest.mark.engines`` (the command-level suite),
each test runs twice, on SQLite and on PostgreSQL, and ``db_path``, ``migrated``, ``db``,
``env`` and ``cli`` all follow it (a test marked ``sqlite_only(reason=...)`` runs on SQLite
alone). PostgreSQL databases (``pg_location``, ``pg_blank_location``) come from
tests/engines.py.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engines import (blank_location, copy_database, db_location, engine,  # noqa: F401  (fixtures)
                     parametrize_engine, pg_blank_location, pg_location, pg_server)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def buildctl_executable() -> list[str]:
    """The installed console script next to this interpreter, else `python -m buildctl`."""
    exe = Path(sys.executable).with_name("buildctl")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "buildctl"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.strip()


def pytest_generate_tests(metafunc):
    parametrize_engine(metafunc)


@pytest.fixture
def db_path(engine, tmp_path, request) -> Path | str:
    """This test's database location on the engine under test: a SQLite file path (not
    created: ``migrated`` copies the template there, or the test runs `migrate`), or a
    PostgreSQL database of its own as a URL (a migrated copy of the template when the
    test asks for ``migrated``, else an empty database, which `migrate` fills)."""
    if engine == "sqlite":
        return tmp_path / "state" / "buildctl.db"
    server = request.getfixturevalue("pg_server")
    return server.fresh() if "migrated" in request.fixturenames else server.blank()


@pytest.fixture
def env(tmp_path, db_path) -> dict:
    e = dict(os.environ)
    e["BUILDCTL_DB"] = str(db_path)
    e["NO_COLOR"] = "1"
    e["COLUMNS"] = "200"
    e["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    e.pop("BUILDCTL_DEBUG", None)
    return e


@pytest.fixture
def cli(env):
    """Run the real `buildctl` in a subprocess: cli("run", "list", check=True)."""

    def run(*args: str, check: bool = False, input: str | None = None, timeout: float = 120, extra_env: dict | None = None,
            cwd: str | Path | None = None) -> Result:
        e = env if not extra_env else {**env, **extra_env}
        p = subprocess.run(buildctl_executable() + [str(a) for a in args], capture_output=True, text=True,
                           env=e, input=input, timeout=timeout, cwd=cwd)
        r = Result(p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError(f"buildctl {' '.join(map(str, args))} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return r

    return run


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory) -> Path:
    """One database migrated by the real `buildctl migrate` per session; tests get copies."""
    path = tmp_path_factory.mktemp("template") / "buildctl.db"
    env = {**os.environ, "BUILDCTL_DB": str(path)}
    subprocess.run(buildctl_executable() + ["migrate"], env=env, check=True, capture_output=True, timeout=120)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, so one copy is whole
    conn.close()
    return path


@pytest.fixture
def migrated(engine, db_path, request) -> Path | str:
    """A migrated database of this test's own (a copy of the session's template): a SQLite
    file path, or a PostgreSQL URL."""
    if engine == "postgres":
        return db_path  # created from the PostgreSQL template already
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(request.getfixturevalue("migrated_template"), db_path)
    return db_path


@pytest.fixture
def db(migrated):
    """A domain-level connection to the migrated test database."""
    from buildctl import storage

    d = storage.connect(str(migrated))
    yield d
    d.close()


def snapshot(where: Path | str) -> dict:
    """Every row of every table, to prove a refused command changed nothing. ``where`` is a
    SQLite file or any location (a postgresql:// URL included)."""
    from buildctl import storage

    if storage.is_postgres(str(where)):
        return _pg_snapshot(str(where))
    conn = sqlite3.connect(where)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


def _pg_snapshot(location: str) -> dict:
    from buildctl import storage

    db = storage.connect(location, check_schema=False)
    try:
        with db.read():  # one snapshot of every table
            tables = [r[0] for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename").fetchall()]
            # No rowid here: rows in a fixed order of their own, which is all a before/after comparison needs.
            return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def assert_refused(result: Result, code: int | None = None, contains: str | None = None) -> None:
    """One `error:` line on stderr, non-zero exit, no traceback."""
    assert result.returncode != 0, f"expected a refusal, got exit 0: {result.stdout}"
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    if contains:
        assert contains in lines[0], lines[0]


def git_available() -> bool:
    return shutil.which("git") is not None


@pytest.fixture
def migrate_upto(tmp_path, monkeypatch):
    """``migrate_upto(db, "072_grouping_suggestions.sql")``: migrate ``db`` only up to and
    including that file, as the buildctl of that time left it (the real ``migrations.apply``,
    pointed at a copy of sql/ without the later files)."""

    def apply(db, last: str) -> None:
        from buildctl import migrations, storage

        copy = tmp_path / f"sql-upto-{last}"
        shutil.copytree(storage.sql_dir(), copy)
        for folder in (copy, copy / "postgres"):
            for f in folder.glob("[0-9][0-9][0-9]_*.sql"):
                if f.name > last:
                    f.unlink()
        with monkeypatch.context() as m:
            m.setattr(storage, "sql_dir", lambda: copy)
            migrations.apply(db)

    return apply

