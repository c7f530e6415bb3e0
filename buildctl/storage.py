"""The one place database connections are made.

Stdlib only: the lean hot path (SPEC §7) imports this module, so nothing here may
import Typer, Rich, pydantic or sqlite-utils.

Every SQL-dialect concern lives here and in ``sql/``. Domain code writes SQLite-
flavoured SQL with named ``:params`` and the ``NOW`` timestamp expression; a
PostgreSQL backend plugs in below ``Database`` without the domain code changing.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import contextmanager

from buildctl.dialect import SQLITE
from buildctl.errors import DatabaseError, NeedsMigration

# pathlib (~8 ms) and typing (~4 ms) are kept off the import path: the hot path
# (SPEC §7) opens a connection on every call and has ~30 ms in all.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any, Iterator

#: SQLite waits this long for a competing writer before giving up (SPEC §2: ≥ 5 s).
#: Generous, because 32 processes writing at once is the normal case.
BUSY_TIMEOUT_MS = 30_000

#: The database clock, with milliseconds: text in SQLite's datetime('now') form, so
#: comparisons with datetime('now', '-60 seconds') keep working unchanged.
NOW = "strftime('%Y-%m-%d %H:%M:%f','now')"

MIGRATIONS_TABLE = "buildctl_migrations"


# --------------------------------------------------------------------------- location

def _default_db_file() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "buildctl", "buildctl.db")


def default_db_path() -> Path:
    from pathlib import Path

    return Path(_default_db_file())


def resolve_location(cli_value: str | None = None) -> str:
    """--db > BUILDCTL_DB > the user's state folder."""
    if cli_value:
        return cli_value
    env = os.environ.get("BUILDCTL_DB")
    if env:
        return env
    return _default_db_file()


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


# --------------------------------------------------------------------------- sql files

_sql_root_cache: list[str] = []


def _sql_root() -> str:
    """sql/ inside the installed package, or at the top of a source checkout (a plain str)."""
    if not _sql_root_cache:
        here = os.path.dirname(os.path.realpath(__file__))
        for candidate in (os.path.join(here, "sql"), os.path.join(os.path.dirname(here), "sql")):
            if os.path.isdir(candidate):
                _sql_root_cache.append(candidate)
                break
        else:
            raise DatabaseError(f"buildctl's sql/ folder is missing (looked in {os.path.join(here, 'sql')} "
                                f"and {os.path.join(os.path.dirname(here), 'sql')})")
    return _sql_root_cache[0]


def sql_dir() -> Path:
    """sql/ inside the installed package, or at the top of a source checkout."""
    from pathlib import Path

    return Path(_sql_root())


def _sql_folder() -> str:
    # sql_dir may be replaced (a test points buildctl at a copy of sql/); the
    # default answer needs no pathlib.
    return _sql_root() if sql_dir is _default_sql_dir else str(sql_dir())


def _is_migration_file(name: str) -> bool:
    # The glob [0-9][0-9][0-9]_*.sql, without fnmatch/re.
    return len(name) > 8 and name[:3].isascii() and name[:3].isdigit() and name[3] == "_" and name.endswith(".sql")


def migration_names() -> list[str]:
    return sorted(n for n in os.listdir(_sql_folder()) if _is_migration_file(n))


_query_cache: dict[str, str] = {}


def query_text(name: str) -> str:
    """A named query from sql/queries/NAME.sql: the SQL a reader sees is the SQL that runs."""
    text = _query_cache.get(name)
    if text is None:
        with open(os.path.join(_sql_folder(), "queries", f"{name}.sql"), encoding="utf-8") as f:
            text = f.read()
        _query_cache[name] = text
    return text


_default_sql_dir = sql_dir


# --------------------------------------------------------------------------- connection

class Database:
    """A configured connection plus the few operations domain code needs.

    Rows come back as plain dicts. Writes go through ``write()``, which opens the
    transaction with BEGIN IMMEDIATE so that a read-then-write transaction waits
    for the lock instead of failing with SQLITE_BUSY half-way.
    """

    dialect = "sqlite"
    #: The SQL vocabulary that differs between engines (buildctl.dialect).
    sql = SQLITE

    def __init__(self, conn: sqlite3.Connection, location: str):
        self.conn = conn
        self.location = location

    # reads ------------------------------------------------------------------
    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Any = ()) -> list[dict]:
        cur = self.conn.execute(sql, params)
        cols = [d[0] for d in cur.description] if cur.description else []
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def one(self, sql: str, params: Any = ()) -> dict | None:
        cur = self.conn.execute(sql, params)
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row))

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def named(self, name: str, params: Any = ()) -> list[dict]:
        """Run sql/queries/NAME.sql."""
        return self.query(query_text(name), params)

    def now(self) -> str:
        return self.scalar(f"SELECT {NOW}")

    # transactions -------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator["Database"]:
        """One short write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def check_writable(self) -> None:
        """Raise DatabaseError now when the file cannot be written (read-only file or file
        system); writes nothing. ``BEGIN IMMEDIATE`` alone succeeds on a read-only file:
        SQLite refuses only the first statement that changes a page, so make one and roll back."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(f"UPDATE {MIGRATIONS_TABLE} SET name = name "
                                  f"WHERE rowid = (SELECT min(rowid) FROM {MIGRATIONS_TABLE})")
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise translate(exc, self.location) from exc

    @contextmanager
    def read(self) -> Iterator["Database"]:
        """A consistent snapshot across several SELECTs (WAL readers never block writers)."""
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def configure(conn: sqlite3.Connection) -> None:
    """The SQLite settings of SPEC §2, applied to every connection."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise DatabaseError(f"could not switch the database to WAL mode (it is in {mode!r} mode)")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")


def _file_path(location: str | None) -> str:
    """The SQLite file ``location`` names (resolved as SPEC §2 says)."""
    location = resolve_location(location)
    if is_postgres(location):
        raise DatabaseError("PostgreSQL URLs are not supported by this build yet; use a SQLite file path")
    return os.path.expanduser(location)


def _no_database(path: str) -> NeedsMigration:
    return NeedsMigration(f"no database at {path}; run `buildctl migrate` to create it")


def connect(location: str | None = None, *, create: bool = False, check_schema: bool = True) -> Database:
    """Open the database at ``location`` (resolved as SPEC §2 says).

    ``create`` is for ``migrate`` only: it makes the folder (0700) and the file (0600).
    Every other command refuses a missing database, and (``check_schema``) one that is
    behind the newest migration, with one line naming ``buildctl migrate``.
    """
    path = _file_path(location)
    if not os.path.exists(path):
        if not create:
            raise _no_database(path)
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        # Created 0600 before SQLite opens it; SQLite gives -wal/-shm the same mode.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, stat.S_IRUSR | stat.S_IWUSR)
        os.close(fd)
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode=rw" if not create else str(path),
            uri=not create,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
            check_same_thread=False,
        )
        configure(conn)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    db = Database(conn, str(path))
    if check_schema:
        try:
            ensure_current(db)
        except BaseException:
            db.close()
            raise
    return db


def open_existing(location: str | None = None) -> Database:
    """Open the database file as it is, for ``doctor``: no WAL switch and no schema check,
    so a damaged file (or one that is not a database at all) opens and its checks report
    the damage. Refuses, with one line, only a file that is missing or cannot be opened."""
    path = _file_path(location)
    if not os.path.exists(path):
        raise _no_database(path)
    if os.path.isdir(path):
        raise DatabaseError(f"cannot open the database ({path}): it is a folder, not a file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    return Database(conn, str(path))


def applied_migrations(db: Database) -> dict[str, dict]:
    exists = db.scalar("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (MIGRATIONS_TABLE,))
    if not exists:
        return {}
    return {r["name"]: r for r in db.query(f"SELECT name, sha256, applied_at FROM {MIGRATIONS_TABLE} ORDER BY name")}


def ensure_current(db: Database) -> None:
    applied = applied_migrations(db)
    pending = [n for n in migration_names() if n not in applied]
    if pending:
        if not applied:
            raise NeedsMigration(f"database {db.location} has no schema; run `buildctl migrate`")
        raise NeedsMigration(
            f"database {db.location} is behind ({len(pending)} pending migration(s), first {pending[0]}); run `buildctl migrate`"
        )


def translate(exc: BaseException, where: Any = None) -> DatabaseError:
    """Turn a driver error into one readable line."""
    text = str(exc)
    low = text.lower()
    suffix = f" ({where})" if where else ""
    if where and ("unable to open" in low or "disk i/o error" in low):
        # SQLite names neither cause when it cannot create the -wal/-shm files: look.
        why = _filesystem_problem(str(where))
        if why == "read-only":
            return DatabaseError(f"the database is read-only{suffix}: its file system is mounted read-only")
        if why == "full":
            return DatabaseError(f"the disk is full; nothing was written{suffix}")
    if "readonly" in low or "read-only" in low:
        return DatabaseError(f"the database is read-only{suffix}: {text}")
    if "disk is full" in low or "database or disk is full" in low:
        return DatabaseError(f"the disk is full; nothing was written{suffix}")
    if "locked" in low or "busy" in low:
        return DatabaseError(f"the database stayed locked for more than {BUSY_TIMEOUT_MS // 1000} s{suffix}: {text}")
    if "unable to open" in low:
        return DatabaseError(f"cannot open the database{suffix}: {text}")
    if "not a database" in low or "malformed" in low:
        return DatabaseError(f"the file is not a healthy buildctl database{suffix}: {text}")
    return DatabaseError(f"database error{suffix}: {text}")


def _filesystem_problem(path: str) -> str | None:
    """'read-only' or 'full' when the file system holding ``path`` is, else None."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail == 0:
        return "full"
    return None
