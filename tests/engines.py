"""PostgreSQL databases for the tests, and the fixtures that make a test engine-neutral.

With ``BUILDCTL_TEST_PG_DSN`` set (e.g. ``postgresql://postgres@127.0.0.1:5432/test``: a
role that may CREATE DATABASE), each test session (each xdist worker) makes ONE database
``buildctl_test_<pid>_<random>``, migrated once by the real ``buildctl migrate``; every
test that asks for ``pg_location`` gets a database of its own copied from it
(``CREATE DATABASE … TEMPLATE …``), and the session drops them all when it ends, failed
or not. Without the variable, every PostgreSQL test skips, saying why.

``engine`` names the engine under test: SQLite, unless the test runs on both
(``parametrize_engine``): a test that names ``engine``, ``db_location`` or
``blank_location`` itself, or any test of a module marked ``pytest.mark.engines`` (the
command-level suite, whose ``migrated``/``db``/``env``/``cli`` follow ``engine``), runs
once per engine, except those marked ``sqlite_only(reason=...)`` (file modes, WAL,
PRAGMAs...). ``db_location`` / ``blank_location`` give a test its database on the engine
under test as a location string (a file path or a URL), for ``BUILDCTL_DB``,
``storage.connect``, ``snapshot`` and ``seed.connect``.

Imported by conftest.py, which makes the fixtures below available to every test.
"""

from __future__ import annotations

import inspect
import os
import secrets
import subprocess
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_DSN_VAR = "BUILDCTL_TEST_PG_DSN"
SKIP_REASON = (f"PostgreSQL tests need a server: set {PG_DSN_VAR}, e.g. "
               f"{PG_DSN_VAR}=postgresql://postgres@127.0.0.1:5432/test (a role that may CREATE DATABASE)")

#: Both engines, for @pytest.fixture(params=ENGINES) and pytest.mark.parametrize.
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pg_dsn() -> str | None:
    return os.environ.get(PG_DSN_VAR) or None


def with_database(dsn: str, name: str) -> str:
    """``dsn`` (a postgresql:// URL) naming database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


class PgServer:
    """The databases one test session made on the server of ``BUILDCTL_TEST_PG_DSN``."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        # pid: each xdist worker is a process of its own; random: a pid is reused.
        self.prefix = f"buildctl_test_{os.getpid()}_{secrets.token_hex(3)}"
        self.made: list[str] = []
        self.create_seconds: list[float] = []
        self._template: str | None = None
        self._lock = threading.Lock()

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql)

    def location(self, name: str) -> str:
        return with_database(self.dsn, name)

    def _create(self, template: str) -> str:
        with self._lock:
            name = f"{self.prefix}_{len(self.made)}"
            self.made.append(name)
        started = time.perf_counter()
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.create_seconds.append(time.perf_counter() - started)
        return name

    def template(self) -> str:
        """The session's migrated database (made on first use), never handed to a test."""
        if self._template is None:
            from conftest import buildctl_executable

            name = self.prefix
            self.made.append(name)
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
            env = {**os.environ, "BUILDCTL_DB": self.location(name)}
            p = subprocess.run(buildctl_executable() + ["migrate"], env=env, capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, f"migrating the template failed: {p.stderr}"
            self._template = name
        return self._template

    def copy_of(self, location: str) -> str:
        """A database of its own holding a copy of the one at ``location`` (nobody may be
        connected to that one meanwhile), as a location."""
        return self.location(self._create(urlsplit(location).path.lstrip("/")))

    def fresh(self) -> str:
        """A migrated database of its own (a copy of the template), as a location."""
        return self.location(self._create(self.template()))

    def blank(self) -> str:
        """An empty database of its own (no schema: migrate has not run), as a location."""
        return self.location(self._create("template0"))

    def drop_all(self) -> None:
        """Drop every database of this session. Each DROP DATABASE waits for a checkpoint;
        concurrent drops share one, so they run a few at a time."""
        from concurrent.futures import ThreadPoolExecutor

        names, self.made = self.made, []
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: self._admin(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'), names))


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL databases; skips the test without BUILDCTL_TEST_PG_DSN."""
    dsn = pg_dsn()
    if not dsn:
        pytest.skip(SKIP_REASON)
    server = PgServer(dsn)
    try:
        yield server
    finally:
        server.drop_all()


@pytest.fixture
def pg_location(pg_server) -> str:
    """A migrated PostgreSQL database of this test's own, as a postgresql:// URL."""
    return pg_server.fresh()


@pytest.fixture
def pg_blank_location(pg_server) -> str:
    """An existing, empty PostgreSQL database of this test's own (what migrate starts from)."""
    return pg_server.blank()


#: A test that names one of these itself runs on both engines, wherever it is.
ENGINE_FIXTURES = ("engine", "db_location", "blank_location")


def parametrize_engine(metafunc) -> None:
    """pytest_generate_tests: run the test once per engine when it names an engine fixture
    itself or its module is marked ``engines``, unless it is marked ``sqlite_only``
    (which must say why). Any other test runs on SQLite, with its id unchanged."""
    if "engine" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    only = node.get_closest_marker("sqlite_only")
    if only is not None:
        assert only.kwargs.get("reason"), f"{node.nodeid}: sqlite_only needs reason='why'"
        return
    named = set(inspect.signature(metafunc.function).parameters)
    if node.get_closest_marker("engines") or named & set(ENGINE_FIXTURES):
        metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture
def engine(request) -> str:
    """'sqlite' or 'postgres' (see parametrize_engine); SQLite where not parametrized."""
    name = getattr(request, "param", "sqlite")
    if name == "postgres" and not pg_dsn():
        pytest.skip(SKIP_REASON)
    return name


@pytest.fixture
def copy_database(engine, tmp_path, request):
    """``copy_database(location, name)``: a database of the test's own holding a copy of the
    one at ``location`` on the engine under test (a SQLite file ``name``.db beside the
    test's files, or a PostgreSQL database), as a location string."""
    import shutil

    def copy(location, name: str) -> str:
        if engine == "sqlite":
            path = tmp_path / f"{name}.db"
            shutil.copy2(location, path)
            return str(path)
        return request.getfixturevalue("pg_server").copy_of(str(location))

    return copy


@pytest.fixture
def db_location(migrated) -> str:
    """A migrated database of this test's own on the engine under test, as a location."""
    return str(migrated)


@pytest.fixture
def blank_location(db_path) -> str:
    """A location with no schema on the engine under test: a SQLite path where no file
    exists yet, or an empty PostgreSQL database."""
    return str(db_path)
