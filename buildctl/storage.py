"""The one place database connections are made: a SQLite file, or PostgreSQL.

Stdlib only at import time: the lean hot path (``heartbeat``, ``log add``, ``agent
finish``: a process per call, where start-up is most of the cost) imports this module,
so nothing here may import Typer, Rich, pydantic or sqlite-utils at module level, and
psycopg is imported only when a ``postgresql://`` location is opened.

Both engines answer through one ``Database`` interface (``execute``, ``query``,
``one``, ``scalar``, ``named``, ``executemany``, ``executescript``, ``write()``,
``read()``, ``lock``, ``check_writable``, ``data_version``, ``size_bytes``, ``now``,
``close``, ``location``, ``display_location``, ``sql``). Domain code writes portable
SQL with ``?`` or ``:name`` placeholders and takes what differs from ``db.sql``
(buildctl.dialect); rows come back alike from both: timestamps as UTC text
``YYYY-MM-DD HH:MM:SS.fff``, booleans as 0/1, whole numbers as int, others as float,
JSON as text.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from contextlib import contextmanager

from buildctl.dialect import POSTGRES, SQLITE, pyformat
from buildctl.errors import ConnectionLost, DatabaseError, DatabaseUnavailable, NeedsMigration, hide

# pathlib (~8 ms) and typing (~4 ms) are kept off the import path: the hot path
# opens a connection on every call and has ~30 ms in all.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any, Iterable, Iterator

    from buildctl.dialect import Postgres, SQLite

#: SQLite waits this long for a competing writer before giving up (at least 5 s).
#: Generous, because 32 processes writing at once is the normal case.
BUSY_TIMEOUT_MS = 30_000

MIGRATIONS_TABLE = "buildctl_migrations"

#: Rows per index that SQLite's ANALYZE (run by PRAGMA optimize) samples: SQLite's advice
#: for PRAGMA optimize. Unbounded, ANALYZE read every row of a 1 M-row log while holding
#: the write lock: a 0.4-1.7 s stall for writers.
ANALYSIS_LIMIT = 400

#: Namespace and keys of buildctl's PostgreSQL advisory locks (``Database.lock``):
#: ('bctl', n), so that they cannot collide with another application's single-key locks.
LOCK_NAMESPACE = 0x6263746C
LOCK_KEYS = {"migrate": 1, "gc": 2}

#: Reconnecting to PostgreSQL after a lost connection: the first pause, doubled after
#: each failed attempt up to the last one (a server restart takes a few seconds).
RECONNECT_FIRST_PAUSE_S = 0.05
RECONNECT_MAX_PAUSE_S = 2.0


# --------------------------------------------------------------------------- location

def _default_db_file() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "buildctl", "buildctl.db")


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


def load_driver(location: str | None) -> None:
    """Import what a connection to ``location`` needs, connecting to nothing (a process
    that forks workers does it once, before the forks)."""
    if is_postgres(resolve_location(location)):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pass  # connect() says so, in each worker


def _userinfo_end(rest: str) -> int:
    """Index of the '@' that ends a URL's user:password part (the last one before any '?'), or -1."""
    query = rest.find("?")
    return rest.rfind("@", 0, query if query >= 0 else len(rest))


def redact(location: str) -> str:
    """``location`` with any password replaced by ``***`` (in user:password@ and in
    ?password=…): the only form in which a location is ever shown."""
    if not is_postgres(location):
        return location
    scheme, rest = location.split("://", 1)
    at = _userinfo_end(rest)
    if at >= 0 and ":" in rest[:at]:
        rest = rest[:rest.index(":")] + ":***" + rest[at:]
    if "?" in rest:
        head, query = rest.split("?", 1)
        rest = head + "?" + "&".join("password=***" if p.lower().startswith("password=") else p for p in query.split("&"))
    return f"{scheme}://{rest}"


def _url_passwords(location: str) -> set[str]:
    """Every string of ``location`` that libpq may read as its password: in user:password@
    (libpq ends the user part at the first '@', a reader may take the last), in ?password=,
    each as written and percent-decoded."""
    from urllib.parse import unquote

    rest = location.split("://", 1)[1]
    found = set()
    for at in (rest.find("@"), _userinfo_end(rest)):
        if at >= 0 and ":" in rest[:at]:
            found.add(rest[:at].split(":", 1)[1])
    if "?" in rest:
        found.update(p.split("=", 1)[1] for p in rest.split("?", 1)[1].split("&") if p.lower().startswith("password="))
    return {v for p in found for v in (p, unquote(p)) if v}


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


def dialect_folder(dialect: SQLite | Postgres = SQLITE) -> str:
    """The folder of ``dialect``'s migrations: sql/ for SQLite, sql/postgres/ for PostgreSQL
    (same file names; each file's own text is what its checksum covers)."""
    root = _sql_folder()
    return os.path.join(root, dialect.folder) if dialect.folder else root


def migration_names(dialect: SQLite | Postgres = SQLITE) -> list[str]:
    return sorted(n for n in os.listdir(dialect_folder(dialect)) if _is_migration_file(n))


_query_cache: dict[tuple[str, str], str] = {}


def query_text(name: str, dialect: SQLite | Postgres = SQLITE) -> str:
    """A named query from sql/queries/NAME.sql (sql/postgres/queries/ for PostgreSQL): the
    SQL a reader sees is the SQL that runs."""
    key = (dialect.name, name)
    text = _query_cache.get(key)
    if text is None:
        with open(os.path.join(dialect_folder(dialect), "queries", f"{name}.sql"), encoding="utf-8") as f:
            text = f.read()
        _query_cache[key] = text
    return text


_default_sql_dir = sql_dir


def sql_statements(text: str) -> Iterator[str]:
    """The statements of an SQLite script, in order: each ends at a ';' that SQLite's own
    tokenizer (sqlite3.complete_statement) says completes it, so a ';' inside a string, a
    comment or a trigger's body ends nothing."""
    start, end = 0, text.find(";")
    while end != -1:
        if sqlite3.complete_statement(text[start:end + 1]):
            if text[start:end + 1].strip():
                yield text[start:end + 1]
            start = end + 1
        end = text.find(";", end + 1)
    if text[start:].strip():
        yield text[start:]


# --------------------------------------------------------------------------- connection

class Database:
    """A configured connection plus the few operations domain code needs (either engine).

    Rows come back as plain dicts (``query``/``one``) or tuples (``execute(...).fetchall()``).
    Writes go through ``write()``; several reads that must agree go through ``read()``;
    any other statement commits on its own.
    """

    #: The SQL vocabulary that differs between engines (buildctl.dialect).
    sql: SQLite | Postgres
    #: PostgreSQL: how long the next statement after a lost connection keeps trying to
    #: reconnect (PostgresDatabase). A SQLite file has no connection to lose.
    reconnect_s = 0.0
    #: The location as given (a path, or a URL that may hold a password: never show it).
    location: str

    @property
    def display_location(self) -> str:
        """The location as it may be shown: any password replaced by ``***``."""
        return redact(self.location)

    # Each engine's own: -------------------------------------------------------
    def execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement; a cursor (``fetchone``, ``fetchall``, ``rowcount``, ``description``)."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any:
        raise NotImplementedError

    def executescript(self, text: str) -> None:
        """Run several statements inside the open transaction (migrations)."""
        raise NotImplementedError

    def write(self) -> Any:
        """``with db.write():`` one short write transaction, rolled back on any error."""
        raise NotImplementedError

    def read(self) -> Any:
        """``with db.read():`` one consistent snapshot across several SELECTs."""
        raise NotImplementedError

    def check_writable(self) -> None:
        """Raise DatabaseError now when nothing could be written; writes nothing."""
        raise NotImplementedError

    # Both engines alike: ---------------------------------------------------------

    def query(self, sql: str, params: Any = ()) -> list[dict]:
        cur = self.execute(sql, params)
        cols = [d[0] for d in cur.description] if cur.description else []
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def one(self, sql: str, params: Any = ()) -> dict | None:
        cur = self.execute(sql, params)
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row))

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def named(self, name: str, params: Any = ()) -> list[dict]:
        """Run this engine's sql/queries/NAME.sql."""
        return self.query(query_text(name, self.sql), params)

    def now(self) -> str:
        return self.scalar(f"SELECT {self.sql.now}")

    def data_version(self) -> Any:
        """A cheap value that changes whenever another connection committed a change since it
        was last read (it may also change when nothing relevant did): poll it, and re-read
        only when it moved."""
        return self.scalar(self.sql.data_version)

    def size_bytes(self) -> int:
        return int(self.scalar(self.sql.size_bytes))

    def lock(self, name: str) -> None:
        """Inside ``write()``: hold buildctl's lock ``name`` (``LOCK_KEYS``) until the
        transaction ends, so that one such transaction runs at a time."""
        if self.sql.xact_lock:
            self.execute(self.sql.xact_lock, (LOCK_NAMESPACE, LOCK_KEYS[name]))

    def try_lock(self, name: str) -> bool:
        """Inside ``write()``: take buildctl's lock ``name`` for this transaction if nobody
        holds it (True), else False at once. Always True where ``write()`` excludes
        everyone already."""
        if not self.sql.try_xact_lock:
            return True
        return bool(self.scalar(self.sql.try_xact_lock, (LOCK_NAMESPACE, LOCK_KEYS[name])))

    def checkpoint(self) -> None:
        """After a big write: move what the engine keeps aside back into place, without
        waiting for anyone (SQLite: a PASSIVE WAL checkpoint; PostgreSQL does its own)."""

    def pace_checkpoints(self, every_s: float) -> None:
        """For a connection that commits many small transactions (a worker): checkpoint after
        a commit at most every ``every_s`` — counted across every connection that queues its
        writes, when this one does (``queue_writes``) — instead of the engine's own rhythm
        (SQLite: after every commit once the WAL holds 1000 pages; PostgreSQL: nothing to
        pace)."""

    def queue_writes(self) -> None:
        """For a connection that writes in a tight loop beside others doing the same (a run's
        workers): its write transactions take their turn in a queue the kernel keeps, and
        start the moment the previous one ends (SQLite; PostgreSQL's lock waits queue
        already). Connections that do not queue wait as before and exclude queued ones as
        before."""

    def forget_commits(self) -> None:
        """Start listening for commits afresh: ``wait_for_commit`` returns early only for a
        commit made after this call."""

    def wait_for_commit(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, less when a connection that queues its writes commits
        meanwhile (SQLite on Linux); True when one was heard. Not every writer is heard:
        callers still look on a timer."""
        time.sleep(timeout_s)
        return False

    def optimize(self, tables: tuple[str, ...]) -> list[str]:
        """After deleting many rows of ``tables``: refresh the planner's statistics, bounded
        so it holds no lock for long; returns what it did, for people."""
        return []

    #: close_in_background's thread, while it closes.
    _closing = None

    def close(self) -> None:
        if self._closing is not None:
            self._closing.join()
            return
        self._close()

    def close_in_background(self) -> None:
        """Close now, in a thread, while the caller goes on with what needs no database
        (`run exec` drawing its final table): closing the last connection to a SQLite file
        copies the WAL into it and syncs it (~10-15 ms), in C, without the GIL. ``close()``
        waits for it."""
        import threading

        if self._closing is None:
            self._let_go()
            running = threading.Event()

            def close() -> None:
                running.set()
                self.conn.close()  # straight into C, which lets the GIL go

            self._closing = threading.Thread(target=close, name="close", daemon=True)
            self._closing.start()
            # Until the thread is in C, without the GIL: else it waits for the caller to let
            # the GIL go (up to the 5 ms switch interval at a time), and the close came
            # after the table instead of beside it.
            running.wait(0.1)

    def _close(self) -> None:
        self._let_go()
        self.conn.close()

    def _let_go(self) -> None:
        """What closing takes besides closing the connection itself."""

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SQLiteDatabase(Database):
    """One SQLite file. ``write()`` opens the transaction with BEGIN IMMEDIATE so that a
    read-then-write transaction waits for the lock instead of failing with SQLITE_BUSY
    half-way."""

    sql = SQLITE
    #: ``pace_checkpoints``: the pace, and when the next checkpoint is due (time.monotonic())
    #: for a connection that does not queue; whether one is due after this commit; whether
    #: the next write transaction first copies what was committed since ours.
    _checkpoint_every: float | None = None
    _next_checkpoint = 0.0
    _checkpoint_due = False
    _catch_up = False
    #: ``queue_writes``: the descriptor of the queue's lock file.
    _queue: int | None = None
    #: ``wait_for_commit``: an inotify descriptor watching the queue's file (False: none to be had).
    _bell: int | bool | None = None

    def __init__(self, conn: sqlite3.Connection, location: str):
        self.conn = conn
        self.location = location

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def checkpoint(self) -> None:
        # gc's own checkpoint (PASSIVE: it never blocks anyone) keeps the WAL about one
        # batch long, so that writers' commits never cross wal_autocheckpoint and pay for
        # copying gc's pages into the database.
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def pace_checkpoints(self, every_s: float) -> None:
        # SQLite's automatic checkpoint runs after any commit that leaves 1000 pages or
        # more in the WAL, and the WAL starts over only when no reader is using it: under a
        # steady stream of transactions (a run's workers) it never does, so every commit
        # paid a checkpoint attempt and its two fsyncs (84 of a 500-task run's commits took
        # 3-13 ms). A paced connection checkpoints (PASSIVE: it never waits) after a commit
        # at most every ``every_s``; the others keep SQLite's rhythm.
        #
        # The pace is the database's, not the connection's, when the connection queues its
        # writes: the last checkpoint's time sits in the queue's file, read and written in
        # turn. (Per connection, eight workers checkpointed eight times as often as one.)
        #
        # And the WAL must start over, not only be copied: a write that begins while every
        # frame is copied writes from the WAL's start again; otherwise the file only grows
        # (17 MB for 200 no-op tasks: appending costs the writers 3x overwriting, and the
        # last close deleting it ~7 ms). Frames committed while ours was copied (nobody
        # waits for a PASSIVE checkpoint) are copied by our next write transaction before it
        # begins, in its turn in the queue, where nobody can add more: then it starts over.
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpoint_every = every_s
        self._next_checkpoint = time.monotonic() + every_s

    def _pace(self) -> None:
        """At the start of a write transaction (in the queue's turn, if queued): copy what
        was committed since our checkpoint, or note whether a checkpoint is due after it."""
        if self._catch_up:
            self._catch_up = False
            self.checkpoint()
            return
        now = time.monotonic()
        if self._queue is None:
            if now >= self._next_checkpoint:
                self._next_checkpoint = now + self._checkpoint_every
                self._checkpoint_due = True
            return
        import struct

        stamp = os.pread(self._queue, 8, 0)
        if len(stamp) < 8 or not 0 <= now - struct.unpack("=d", stamp)[0] < self._checkpoint_every:
            os.pwrite(self._queue, struct.pack("=d", now), 0)  # a stamp from before a reboot counts as old
            self._checkpoint_due = True

    def queue_writes(self) -> None:
        # SQLite's busy handler polls for the lock after 1, 2, 5, 10, 15 ms...: with eight
        # workers committing back to back, a waiting one slept past the moment the lock
        # freed, and the lock stood idle while others waited (measured: 30-45 ms of a 0.8 s
        # run). A queued connection first takes an exclusive flock on a file beside the
        # database, in which the kernel wakes a waiter the moment the holder lets go, then
        # BEGIN IMMEDIATE. The flock dies with its process; where the file cannot be
        # made (a read-only folder), the connection keeps SQLite's waiting.
        try:
            self._queue = os.open(self.location + ".writers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self._queue = None

    def forget_commits(self) -> None:
        # The queue's file is written after every queued commit (``write``): inotify says
        # so at once, where polling data_version every few ms cost a wave's barrier ~3 ms
        # with one worker of four busy.
        if self._bell is None:
            self._bell = _watch_file(self.location + ".writers.lock") if self._queue is not None else False
        if self._bell:
            _drain(self._bell)

    def wait_for_commit(self, timeout_s: float) -> bool:
        if not self._bell:
            return super().wait_for_commit(timeout_s)
        import select

        if not select.select([self._bell], [], [], timeout_s)[0]:
            return False
        _drain(self._bell)
        return True

    def _let_go(self) -> None:
        if self._bell:
            os.close(self._bell)
        self._bell = None
        if self._queue is not None:
            os.close(self._queue)
            self._queue = None

    def optimize(self, tables: tuple[str, ...]) -> list[str]:
        """``PRAGMA optimize`` (a bounded ANALYZE), then the WAL copied into the database and,
        when nobody is using it, truncated. The truncation must not queue behind a reader
        while holding the write lock, so it is tried once, without the busy timeout."""
        self.conn.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
        self.conn.execute("PRAGMA optimize")
        busy, log_frames, done = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        detail = f"wal frames {log_frames}, checkpointed {done}"
        if busy or done < log_frames:
            return [detail + " (busy)"]
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            truncated = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return [detail + (", wal truncated" if truncated else "")]

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def executescript(self, text: str) -> None:
        """Run every statement of ``text`` inside the open transaction (no implicit COMMIT)."""
        # Statement by statement, instead of sqlite3.executescript's implicit COMMIT, so a
        # file stays atomic. (sqlite-utils did the same, but importing it and its
        # character-by-character splitting were most of a first `migrate`: ~90 ms.)
        try:
            for statement in sql_statements(text):
                self.conn.execute(statement)
        except sqlite3.Error as exc:
            raise DatabaseError(str(exc)) from exc

    @contextmanager
    def write(self) -> Iterator["SQLiteDatabase"]:
        """One short write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any error
        (after its turn in the writers' queue, for a connection that ``queue_writes``)."""
        with self._turn():
            if self._checkpoint_every is not None:
                self._pace()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
                if self._queue is not None:
                    os.pwrite(self._queue, b"\1", 8)  # the bell: see forget_commits
        if self._checkpoint_due:
            self._checkpoint_due = False
            self.checkpoint()
            self._catch_up = self._queue is not None  # only in the queue's turn can it start the WAL over

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This connection's turn in the writers' queue (``queue_writes``); at once for one
        that does not queue."""
        if self._queue is None:
            yield
            return
        import fcntl

        fcntl.flock(self._queue, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._queue, fcntl.LOCK_UN)

    def check_writable(self) -> None:
        """Raise DatabaseError now when the file cannot be written (read-only file or file
        system); writes nothing. ``BEGIN IMMEDIATE`` alone succeeds on a read-only file:
        SQLite refuses only the first statement that changes a page, so make one and roll back
        (in the queue's turn, for a connection that queues: waiting for the lock outside it,
        SQLite's busy handler slept up to 80 ms while a run's workers claimed)."""
        try:
            with self._turn():
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
    def read(self) -> Iterator["SQLiteDatabase"]:
        """A consistent snapshot across several SELECTs (WAL readers never block writers)."""
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")


class PostgresDatabase(Database):
    """A PostgreSQL connection through psycopg 3, fit for PgBouncer in transaction mode:
    autocommit outside ``write()``/``read()``, no server-side prepared statements, and no
    session state (every setting a transaction needs is given in it, with SET LOCAL).

    Statements are translated by ``dialect.pyformat``; results are read in binary form, so
    that what comes back (timestamps above all) does not depend on the session's TimeZone
    or DateStyle. Driver errors become ``DatabaseError`` lines without the password.

    A connection that drops (a server restart, ``pg_terminate_backend``, a failover) fails
    the statement in flight with ``ConnectionLost``: whether it took effect is unknown, so
    it is never sent again here. The next statement opens a new connection, retrying with
    backoff for up to ``reconnect_s``; only a BEGIN that met the loss (it had done nothing)
    is sent again on the new connection.
    """

    sql = POSTGRES
    #: How long a statement after a lost connection keeps trying to reconnect before it
    #: fails with DatabaseUnavailable (one attempt with 0, the default: a command fails
    #: with one line). Long-lived processes (workers, `run exec`) set their stale threshold.
    reconnect_s = 0.0

    def __init__(self, conn: Any, location: str, driver_error: type[BaseException]):
        self.conn = conn
        self.location = location
        self._driver_error = driver_error
        self._idle = type(conn.info.transaction_status).IDLE
        #: Connections opened again after a loss (for people and tests).
        self.reconnects = 0
        self._closed = False

    def _let_go(self) -> None:
        self._closed = True

    def _connected(self) -> Any:
        """The connection, opened again first when the last one was lost: with backoff, for
        up to ``reconnect_s`` while the server cannot be reached; other refusals at once."""
        if not self.conn.closed or self._closed:
            return self.conn
        deadline = time.monotonic() + self.reconnect_s
        pause = RECONNECT_FIRST_PAUSE_S
        while True:
            try:
                self.conn = _pg_connection(self.location)
            except DatabaseUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DatabaseUnavailable(f"{exc.message}; the connection was lost and could not be opened again"
                                              + (f" within {self.reconnect_s:g} s" if self.reconnect_s else "")) from exc
                time.sleep(min(pause, left))
                pause = min(2 * pause, RECONNECT_MAX_PAUSE_S)
                continue
            self.reconnects += 1
            return self.conn

    def optimize(self, tables: tuple[str, ...]) -> list[str]:
        # Autovacuum keeps up eventually; after a big delete, fresh statistics now.
        for table in tables:
            self.execute(f"ANALYZE {table}")
        return [f"analyzed {', '.join(tables)}"]

    def _error(self, exc: BaseException) -> DatabaseError:
        error = translate_postgres(exc, self.display_location)
        if isinstance(error, DatabaseUnavailable) and self.conn.closed:
            return ConnectionLost(f"{error.message} (the connection was lost; whether the last statement took "
                                  "effect is unknown)")
        return error

    def execute(self, sql: str, params: Any = ()) -> Any:
        text, style = pyformat(sql)
        conn = self._connected()
        try:
            return conn.execute(text, params if style else None, binary=True)
        except self._driver_error as exc:
            raise self._error(exc) from exc

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any:
        text, _ = pyformat(sql)
        cur = self._connected().cursor(binary=True)
        try:
            cur.executemany(text, rows)
        except self._driver_error as exc:
            raise self._error(exc) from exc
        return cur

    def executescript(self, text: str) -> None:
        """Run ``text`` (several statements) inside the open transaction: one simple-protocol
        query, no parameters, so ``%`` and ``?`` in it are plain text."""
        self._simple(text)

    def _simple(self, text: str) -> None:
        conn = self._connected()
        try:
            conn.execute(text)
        except self._driver_error as exc:
            raise self._error(exc) from exc

    def _begin(self, mode: str) -> None:
        # BEGIN inside a transaction is only a warning on PostgreSQL, and the inner
        # block's ROLLBACK would then end the outer one: refuse, as SQLite does.
        if not self.conn.closed and self.conn.info.transaction_status != self._idle:
            raise DatabaseError("cannot start a transaction within a transaction")
        # The isolation level and the lock wait are stated in every transaction: the
        # server's defaults (or a pooled session's leftovers) decide nothing.
        begin = f"BEGIN ISOLATION LEVEL {mode}; SET LOCAL lock_timeout = '{BUSY_TIMEOUT_MS}ms'"
        try:
            self._simple(begin)
        except ConnectionLost:
            # The connection had dropped while idle (a terminated backend is noticed by
            # the next statement): BEGIN did nothing, so begin again on a new one.
            self._simple(begin)

    def _rollback(self) -> None:
        if self.conn.closed or self.conn.info.transaction_status == self._idle:
            return
        try:
            self.conn.execute("ROLLBACK")
        except self._driver_error:
            pass  # the connection is gone: the server has rolled back already

    @contextmanager
    def write(self) -> Iterator["PostgresDatabase"]:
        """One short write transaction under READ COMMITTED: rows read to be changed must be
        locked (``db.sql.lock_rows(alias)``); rolled back on any error."""
        self._begin("READ COMMITTED READ WRITE")
        try:
            yield self
        except BaseException:
            self._rollback()
            raise
        else:
            self._simple("COMMIT")

    @contextmanager
    def read(self) -> Iterator["PostgresDatabase"]:
        """A consistent snapshot across several SELECTs (REPEATABLE READ READ ONLY)."""
        self._begin("REPEATABLE READ READ ONLY")
        try:
            yield self
        finally:
            self._rollback()

    def check_writable(self) -> None:
        """Raise DatabaseError now when nothing can be written (a read-only server or
        transaction, missing privileges); writes nothing."""
        self._begin("READ COMMITTED READ WRITE")
        try:
            self.execute(f"UPDATE {MIGRATIONS_TABLE} SET name = name "
                         f"WHERE name = (SELECT min(name) FROM {MIGRATIONS_TABLE})")
        finally:
            self._rollback()


def _watch_file(path: str) -> int | bool:
    """An inotify descriptor readable once ``path`` is written (Linux), or False."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (ImportError, OSError, AttributeError):
        return False
    if fd < 0:
        return False
    if libc.inotify_add_watch(fd, os.fsencode(path), 0x2) < 0:  # 0x2: IN_MODIFY
        os.close(fd)
        return False
    return fd


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def configure(conn: sqlite3.Connection) -> None:
    """The SQLite settings, applied to every connection: WAL, the busy timeout, foreign
    keys on, synchronous=NORMAL."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise DatabaseError(f"could not switch the database to WAL mode (it is in {mode!r} mode)")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")


def _no_database(path: str) -> NeedsMigration:
    return NeedsMigration(f"no database at {path}; run `buildctl migrate` to create it")


def connect(location: str | None = None, *, create: bool = False, check_schema: bool = True) -> Database:
    """Open the database at ``location`` (resolved by ``resolve_location``: --db >
    BUILDCTL_DB > the user's state folder).

    ``create`` is for ``migrate`` only: it makes the SQLite folder (0700) and file (0600);
    a PostgreSQL database must exist already (migrate creates its tables). Every other
    command refuses a missing database, and (``check_schema``) one that is behind the
    newest migration, with one line naming ``buildctl migrate``.
    """
    location = resolve_location(location)
    db = _connect_postgres(location) if is_postgres(location) else _connect_sqlite(location, create)
    if check_schema:
        try:
            ensure_current(db)
        except BaseException:
            db.close()
            raise
    return db


def _connect_sqlite(location: str, create: bool) -> SQLiteDatabase:
    path = os.path.expanduser(location)
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
    return SQLiteDatabase(conn, str(path))


def _connect_postgres(location: str) -> PostgresDatabase:
    """Connect through psycopg 3, handing the URL to libpq as it is (so PG* variables,
    ~/.pgpass and service files apply as libpq defines them)."""
    try:
        import psycopg
    except ImportError as exc:
        raise DatabaseError(f"PostgreSQL support is not installed ({exc}): pip install 'buildctl[postgres]'") from exc
    for secret in _url_passwords(location):
        hide(secret)
    return PostgresDatabase(_pg_connection(location), location, psycopg.Error)


def _pg_connection(location: str) -> Any:
    """A new psycopg connection to ``location``, or one readable, password-free error."""
    import psycopg

    try:
        return psycopg.connect(location, autocommit=True, prepare_threshold=None, context=_pg_adapters(),
                               fallback_application_name="buildctl")
    except psycopg.Error as exc:
        raise translate_postgres(exc, redact(location), connecting=True) from exc


_pg_adapters_cache: list[Any] = []


def _pg_adapters() -> Any:
    """psycopg's adapters, with results loaded as sqlite3 returns them (made once).

    Results are read in binary form: a timestamptz is then microseconds since 2000-01-01
    UTC, whatever the session's TimeZone and DateStyle, and becomes UTC text. Booleans
    become 0/1 (the schema's flags are 0/1 integers, as in SQLite), numerics become int
    when whole (SUM over bigint) and float otherwise (EXTRACT, AVG), JSON stays text. A
    Python bool parameter is sent as 0/1, as sqlite3 does.
    """
    if _pg_adapters_cache:
        return _pg_adapters_cache[0]
    import psycopg
    from datetime import datetime, timedelta
    from psycopg.adapt import AdaptersMap, Dumper, Loader
    from psycopg.pq import Format
    from psycopg.types.numeric import NumericBinaryLoader

    epoch = datetime(2000, 1, 1)
    infinity = (1 << 63) - 1

    class UtcTextLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> str:
            us = int.from_bytes(data, "big", signed=True)
            if us in (infinity, -infinity - 1):
                return "infinity" if us > 0 else "-infinity"
            return (epoch + timedelta(microseconds=us)).isoformat(sep=" ", timespec="milliseconds")

    class IntBoolLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> int:
            return 1 if data[0] else 0

    class NumberLoader(NumericBinaryLoader):
        def load(self, data: Any) -> int | float:
            value = super().load(data)
            if value.is_finite() and value.as_tuple().exponent >= 0:
                return int(value)
            return float(value)

    class JsonTextLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> str:
            return bytes(data).decode("utf-8")

    class JsonbTextLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> str:
            return bytes(data[1:]).decode("utf-8")  # the first byte is jsonb's format version

    class BoolAsIntDumper(Dumper):
        oid = psycopg.postgres.types["int8"].oid

        def dump(self, obj: bool) -> bytes:
            return b"1" if obj else b"0"

    adapters = AdaptersMap(psycopg.adapters)
    for name in ("timestamptz", "timestamp"):
        adapters.register_loader(name, UtcTextLoader)
    adapters.register_loader("bool", IntBoolLoader)
    adapters.register_loader("numeric", NumberLoader)
    adapters.register_loader("json", JsonTextLoader)
    adapters.register_loader("jsonb", JsonbTextLoader)
    adapters.register_dumper(bool, BoolAsIntDumper)
    _pg_adapters_cache.append(adapters)
    return adapters


def open_existing(location: str | None = None) -> Database:
    """Open the database as it is, for ``doctor``: no WAL switch and no schema check, so a
    damaged file (or one that is not a database at all) opens and its checks report the
    damage. Refuses, with one line, only a database that is missing or cannot be opened."""
    location = resolve_location(location)
    if is_postgres(location):
        return _connect_postgres(location)
    path = os.path.expanduser(location)
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
    return SQLiteDatabase(conn, str(path))


def applied_migrations(db: Database) -> dict[str, dict]:
    if not db.scalar(db.sql.table_exists, (MIGRATIONS_TABLE,)):
        return {}
    return {r["name"]: r for r in db.query(f"SELECT name, sha256, applied_at FROM {MIGRATIONS_TABLE} ORDER BY name")}


def ensure_current(db: Database) -> None:
    applied = applied_migrations(db)
    pending = [n for n in migration_names(db.sql) if n not in applied]
    if pending:
        if not applied:
            raise NeedsMigration(f"database {db.display_location} has no schema; run `buildctl migrate`")
        raise NeedsMigration(
            f"database {db.display_location} is behind ({len(pending)} pending migration(s), first {pending[0]}); "
            "run `buildctl migrate`"
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


#: SQLSTATE classes and codes that mean the server is unreachable or the session is gone.
_PG_UNAVAILABLE = ("08", "57P01", "57P02", "57P03", "53300")
#: libpq's words for the same, on errors that carry no SQLSTATE (raised before or instead of a server reply).
_PG_LOST = ("server closed the connection", "connection is closed", "terminating connection", "consuming input failed",
            "could not receive data", "could not send data", "connection to server", "no connection to the server",
            "ssl connection has been closed", "could not translate host name", "failed to resolve host",
            "timeout expired")


def translate_postgres(exc: BaseException, where: str | None = None, *, connecting: bool = False) -> DatabaseError:
    """Turn a psycopg error into one readable line, password-free; ``where`` is the
    location as it may be shown (``redact``), ``connecting`` says the connection was
    being opened."""
    from buildctl.errors import scrub

    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc).strip().split("\n")[0]).strip()
    # libpq prefixes what the server said with the attempt it made ("connection failed:
    # connection to server at "h", port 5432 failed: FATAL:  …"): keep the reason, the
    # location says the rest.
    text = text.removeprefix("connection failed: ")
    if text.startswith("connection to server") and " failed: " in text:
        text = text.split(" failed: ", 1)[1]
    for level in ("FATAL:  ", "ERROR:  "):
        text = text.removeprefix(level)
    text = scrub(text)
    low = text.lower()
    state = getattr(exc, "sqlstate", None) or ""
    at = f" ({where})" if where else ""
    if connecting or state.startswith("28") or state == "3D000":
        if "password" in low or "authentication" in low:
            return DatabaseError(f"PostgreSQL refused the credentials{at}: {text} "
                                 "(the password comes from the URL, PGPASSWORD, ~/.pgpass or a service file)")
        if "does not exist" in low:
            hint = ("create it first; `buildctl migrate` creates the tables, not the database" if "database" in low
                    else "create the role, or connect as another user")
            return DatabaseError(f"cannot connect to PostgreSQL{at}: {text} ({hint})")
    if state.startswith(_PG_UNAVAILABLE) or (not state and any(w in low for w in _PG_LOST + ("connection refused",))):
        hint = " (is the server running and accepting TCP/IP connections?)" if "refused" in low else ""
        return DatabaseUnavailable(f"cannot reach PostgreSQL{at}: {text}{hint}")
    if connecting:
        return DatabaseError(f"cannot connect to PostgreSQL{at}: {text}")
    if state == "25006":
        return DatabaseError(f"the database is read-only{at}: {text}")
    if state == "55P03":
        return DatabaseError(f"the database stayed locked for more than {BUSY_TIMEOUT_MS // 1000} s{at}: {text}")
    if state == "53100":
        return DatabaseError(f"the disk is full; nothing was written{at}: {text}")
    if state in ("40001", "40P01"):
        return DatabaseError(f"the transaction collided with another one and was rolled back; nothing was written: {text}")
    if state == "57014":
        return DatabaseError(f"the statement was cancelled (statement_timeout or a cancel request): {text}")
    if state == "42501":
        return DatabaseError(f"permission denied{at}: {text}")
    return DatabaseError(f"database error: {text}")
