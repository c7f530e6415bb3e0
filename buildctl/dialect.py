"""The one place that knows how SQLite's SQL and PostgreSQL's differ.

Domain code writes portable SQL (``?`` and ``:name`` placeholders, ``COUNT(*) FILTER
(WHERE …)``, ``RETURNING``, ``ON CONFLICT``) and asks the connection's dialect
(``db.sql``) for the few things that cannot be written the same way in both: the
database clock, ages and cut-offs, JSON fields, row locks. Named queries and
migrations have one file per dialect (``sql/`` and ``sql/postgres/``).

Portable SQL reaches psycopg through ``pyformat`` below (``?`` → ``%s``, ``:name`` →
``%(name)s``), and migration files are checked for transaction statements by
``transaction_statements``; both read SQL with the same small scanner, which knows
string literals, quoted identifiers, comments and PostgreSQL's dollar quotes.

Time is always the database server's: ``now`` is the only clock, and a cut-off is
``ago(param)`` with ``param`` an offset such as ``'-60.000 seconds'`` (see
``buildctl.durations.offset``), never a timestamp computed by a client. Timestamps
come back from both engines as UTC text, ``YYYY-MM-DD HH:MM:SS.fff``.

Stdlib only, free to import.
"""

from __future__ import annotations

from functools import lru_cache


class SQLite:
    name = "sqlite"
    #: Where this dialect's migrations and named queries live, below sql/.
    folder = ""
    #: The column type of every stored timestamp.
    timestamp_type = "TEXT"
    #: One row when the table named by the parameter exists.
    table_exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    #: A transaction-scoped lock on (namespace, key); None where ``write()``'s own lock
    #: (BEGIN IMMEDIATE: one writer per database) already excludes everyone else.
    xact_lock = None
    try_xact_lock = None
    #: Writers wait for the write lock by sleeping and retrying (SQLite's busy handler),
    #: not in a queue: a loop of write transactions must leave them gaps to get in.
    writers_poll = True
    #: Changes whenever another connection committed (and reading it touches no table).
    data_version = "PRAGMA data_version"
    size_bytes = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
    #: The database clock with milliseconds, in SQLite's datetime('now') text form.
    now = "strftime('%Y-%m-%d %H:%M:%f','now')"
    #: The same instant as ISO-8601 UTC text, for JSON documents we store.
    now_iso = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
    @staticmethod
    def lock_rows(alias: str, skip_locked: bool = False) -> str:
        """Appended to a SELECT inside ``write()``: lock the rows of ``alias`` it reads.
        Nothing on SQLite: BEGIN IMMEDIATE already holds the database's only write lock."""
        return ""

    @staticmethod
    def ago(offset_param: str) -> str:
        """The timestamp ``offset`` ('-60.000 seconds') from now; ``offset_param`` is a placeholder."""
        return f"strftime('%Y-%m-%d %H:%M:%f','now',{offset_param})"

    @staticmethod
    def utc(param: str) -> str:
        """A timestamp given as UTC text (``YYYY-MM-DD HH:MM:SS[.fff]``) in ``param``. Only for
        values that came from the database clock (a fixed cut-off) and for test fixtures."""
        return param

    @staticmethod
    def age_s(expr: str) -> str:
        """Seconds from the timestamp ``expr`` to now (a float)."""
        return f"((julianday('now') - julianday({expr})) * 86400.0)"

    @staticmethod
    def json_field(column: str, key: str) -> str:
        """``column``'s top-level ``key`` as text, NULL when the stored text is not valid JSON
        (a malformed row must never break a read)."""
        return f"(CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{key}') END)"

    @staticmethod
    def json_array_length(column: str) -> str:
        return f"(CASE WHEN json_valid({column}) THEN json_array_length({column}) END)"


class Postgres:
    name = "postgres"
    folder = "postgres"
    timestamp_type = "timestamptz"
    # to_regclass resolves the name the way every other statement does (search_path).
    table_exists = "SELECT 1 WHERE to_regclass(?) IS NOT NULL"
    # Transaction-scoped, so nothing outlives the transaction (PgBouncer transaction mode).
    xact_lock = "SELECT pg_advisory_xact_lock(?, ?)"
    try_xact_lock = "SELECT pg_try_advisory_xact_lock(?, ?)"
    # Lock waiters queue: the next transaction in line gets the lock when it is released.
    writers_poll = False
    # The server's current snapshot, xmin:xmax:xip (xmax is one past the latest
    # transaction that ended; xip lists those below it still running), moves exactly
    # when a transaction that wrote ends, at the moment its rows become visible, even
    # when it ends after a younger one (xip shrinks, xmax stays). Computed in memory.
    # pg_current_wal_insert_lsn() would move before the commit is visible (the commit
    # record is written first): a poll could see the new value, re-read too early, and
    # then miss the change.
    data_version = "SELECT CAST(pg_current_snapshot() AS text)"
    size_bytes = "SELECT pg_database_size(current_database())"
    # Timestamps are timestamptz; the connection turns them back into UTC text. The time
    # the statement arrived, as SQLite's 'now' is the statement's: now() is the start of
    # the transaction, which may precede a commit this transaction waited for (a claim
    # queued behind the completion that ended its wave's barrier) and would stamp the
    # log out of causal order. Stable within a statement, so an index can still use it.
    now = "statement_timestamp()"
    now_iso = "to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    @staticmethod
    def lock_rows(alias: str, skip_locked: bool = False) -> str:
        """READ COMMITTED needs the rows a transaction reads-then-writes locked; with
        ``skip_locked``, rows another transaction holds are passed over, not waited for."""
        return f" FOR UPDATE OF {alias}" + (" SKIP LOCKED" if skip_locked else "")

    @staticmethod
    def ago(offset_param: str) -> str:
        return f"(statement_timestamp() + CAST({offset_param} AS interval))"

    @staticmethod
    def utc(param: str) -> str:
        # A bare text parameter would be read in the session's TimeZone.
        return f"(CAST({param} AS timestamp) AT TIME ZONE 'UTC')"

    @staticmethod
    def age_s(expr: str) -> str:
        return f"EXTRACT(EPOCH FROM (statement_timestamp() - {expr}))"

    @staticmethod
    def json_field(column: str, key: str) -> str:
        # buildctl_json_valid() is defined by sql/postgres/010_task_lists.sql.
        return f"(CASE WHEN buildctl_json_valid({column}) THEN ({column})::jsonb ->> '{key}' END)"

    @staticmethod
    def json_array_length(column: str) -> str:
        return f"(CASE WHEN buildctl_json_valid({column}) THEN jsonb_array_length(({column})::jsonb) END)"


SQLITE = SQLite()
POSTGRES = Postgres()


# --------------------------------------------------------------------------- reading SQL text

_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")


def _quote_end(sql: str, i: int, quote: str, backslash_escapes: bool) -> int:
    """The index just past the quote that closes the one at ``i`` (doubled quotes, and
    backslashes in E'…' strings, escape it); the end of the text when unterminated."""
    j = i + 1
    while True:
        k = sql.find(quote, j)
        if k < 0:
            return len(sql)
        if backslash_escapes:
            b = k
            while b > i + 1 and sql[b - 1] == "\\":
                b -= 1
            if (k - b) % 2:
                j = k + 1
                continue
        if sql.startswith(quote, k + 1):
            j = k + 2
            continue
        return k + 1


def _dollar_tag(sql: str, i: int) -> str | None:
    """The tag ($$ or $name$) that opens a dollar-quoted string at ``i``, else None ($1 is a parameter)."""
    j = i + 1
    while j < len(sql) and sql[j] != "$":
        if sql[j] not in _NAME_START and not (j > i + 1 and sql[j].isdigit()):
            return None
        j += 1
    return sql[i:j + 1] if j < len(sql) else None


def _scan(sql: str):
    """``sql`` as (kind, text) pieces: 'code', 'literal' ('…', E'…'), 'ident' ("…"), 'comment'
    (-- … and /* … */) or 'dollar' ($tag$…$tag$). Unterminated pieces run to the end (the
    server reports them)."""
    n = len(sql)
    i = start = 0
    while i < n:
        c = sql[i]
        if c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or sql[i - 2] not in _WORD_CHARS)
            kind, end = "literal", _quote_end(sql, i, "'", escapes)
        elif c == '"':
            kind, end = "ident", _quote_end(sql, i, '"', False)
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            kind, end = "comment", (n if end < 0 else end + 1)
        elif c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            kind, end = "comment", (n if end < 0 else end + 2)
        elif c == "$" and (i == 0 or sql[i - 1] not in _WORD_CHARS) and (tag := _dollar_tag(sql, i)):
            close = sql.find(tag, i + len(tag))
            kind, end = "dollar", (n if close < 0 else close + len(tag))
        else:
            i += 1
            continue
        if start < i:
            yield "code", sql[start:i]
        yield kind, sql[i:end]
        i = start = end
    if start < n:
        yield "code", sql[start:]


@lru_cache(maxsize=2048)
def pyformat(sql: str) -> tuple[str, str | None]:
    """Portable SQL as psycopg wants it: ``?`` → ``%s``, ``:name`` → ``%(name)s``, every
    literal ``%`` doubled; string literals, quoted names, comments and ``::`` casts are left
    alone. Returns (text, style) with style ``"positional"``, ``"named"`` or None; with None
    (no placeholder) the text is ``sql`` unchanged, to be sent without parameters.

    Cached per statement text: most statements are constants run again and again.
    """
    out: list[str] = []
    styles: set[str] = set()
    for kind, text in _scan(sql):
        if kind != "code":
            out.append(text.replace("%", "%%"))
            continue
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == "%":
                out.append("%%")
            elif c == "?":
                if i + 1 < n and text[i + 1].isdigit():
                    raise ValueError(f"numbered placeholders (?NNN) are not portable: {sql!r}")
                out.append("%s")
                styles.add("positional")
            elif c == ":" and i + 1 < n and text[i + 1] == ":":
                out.append("::")
                i += 2
                continue
            elif c == ":" and i + 1 < n and text[i + 1] in _NAME_START:
                j = i + 1
                while j < n and (text[j] in _NAME_START or text[j].isdigit()):
                    j += 1
                out.append(f"%({text[i + 1:j]})s")
                styles.add("named")
                i = j
                continue
            else:
                out.append(c)
            i += 1
    if not styles:
        return sql, None
    if len(styles) > 1:
        raise ValueError(f"a statement mixes ? and :name placeholders: {sql!r}")
    return "".join(out), styles.pop()


#: Statements that open, end or split a transaction. Migrations run each file inside a
#: transaction of their own; one of these in a file would commit part of it.
TRANSACTION_WORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "START", "ABORT"})


def _words(code: str) -> list[str]:
    return "".join(ch if ch in _WORD_CHARS else " " for ch in code).upper().split()


def transaction_statements(sql: str) -> list[tuple[str, int]]:
    """(first word, line) of every statement in ``sql`` that controls the transaction
    (COMMIT, BEGIN, END, ROLLBACK, SAVEPOINT, RELEASE, START TRANSACTION, ABORT, PREPARE
    TRANSACTION). The BEGIN … END body of a CREATE (an SQLite trigger, a PostgreSQL
    BEGIN ATOMIC function) is part of its statement, and dollar-quoted bodies are text."""
    found: list[tuple[str, int]] = []
    words: list[str] = []
    line = 1
    first_line = 0
    in_body = False

    def finish() -> None:
        nonlocal in_body
        if in_body:
            in_body = words[:1] != ["END"]
        elif words:
            head = words[0]
            if head in TRANSACTION_WORDS or words[:2] == ["PREPARE", "TRANSACTION"]:
                found.append((head, first_line))
            elif head == "CREATE" and "BEGIN" in words:
                in_body = True
        words.clear()

    for kind, text in _scan(sql):
        if kind != "code":
            line += text.count("\n")
            continue
        for k, part in enumerate(text.split(";")):
            if k:
                finish()
            part_words = _words(part)
            if part_words and not words:
                stripped = part.lstrip()
                first_line = line + part[:len(part) - len(stripped)].count("\n")
            words.extend(part_words)
            line += part.count("\n")
    finish()
    return found
