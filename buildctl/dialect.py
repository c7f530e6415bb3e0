"""The one place that knows how SQLite's SQL and PostgreSQL's differ.

Domain code writes portable SQL (``?`` and ``:name`` placeholders, ``COUNT(*) FILTER
(WHERE …)``, ``RETURNING``, ``ON CONFLICT``) and asks the connection's dialect
(``db.sql``) for the few things that cannot be written the same way in both: the
database clock, ages and cut-offs, JSON fields, row locks. Named queries and
migrations have one file per dialect (``sql/`` and ``sql/postgres/``).

Time is always the database server's: ``now`` is the only clock, and a cut-off is
``ago(param)`` with ``param`` an offset such as ``'-60.000 seconds'`` (see
``buildctl.durations.offset``), never a timestamp computed by a client. Timestamps
come back from both engines as UTC text, ``YYYY-MM-DD HH:MM:SS.fff``.

Stdlib only, free to import.
"""

from __future__ import annotations


class SQLite:
    name = "sqlite"
    #: The database clock with milliseconds, in SQLite's datetime('now') text form.
    now = "strftime('%Y-%m-%d %H:%M:%f','now')"
    #: The same instant as ISO-8601 UTC text, for JSON documents we store.
    now_iso = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
    #: Row locks: BEGIN IMMEDIATE already holds SQLite's only write lock.
    for_update = ""
    skip_locked = ""

    @staticmethod
    def ago(offset_param: str) -> str:
        """The timestamp ``offset`` ('-60.000 seconds') from now; ``offset_param`` is a placeholder."""
        return f"strftime('%Y-%m-%d %H:%M:%f','now',{offset_param})"

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
    def json_valid(column: str) -> str:
        return f"json_valid({column})"

    @staticmethod
    def in_json_array(expr: str, param: str) -> str:
        """``expr`` is one of the strings of the JSON array held by ``param``."""
        return f"{expr} IN (SELECT value FROM json_each({param}))"

    @staticmethod
    def json_array_length(column: str) -> str:
        return f"(CASE WHEN json_valid({column}) THEN json_array_length({column}) END)"

    @staticmethod
    def group_concat(expr: str, separator: str) -> str:
        return f"GROUP_CONCAT({expr}, '{separator}')"


class Postgres:
    name = "postgres"
    # Timestamps are timestamptz; the connection turns them back into UTC text.
    now = "now()"
    now_iso = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    #: READ COMMITTED needs the rows it reads-then-writes locked.
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    @staticmethod
    def ago(offset_param: str) -> str:
        return f"(now() + CAST({offset_param} AS interval))"

    @staticmethod
    def age_s(expr: str) -> str:
        return f"EXTRACT(EPOCH FROM (now() - {expr}))"

    @staticmethod
    def json_field(column: str, key: str) -> str:
        # buildctl_json_valid() is defined by sql/postgres/010_task_lists.sql.
        return f"(CASE WHEN buildctl_json_valid({column}) THEN ({column})::jsonb ->> '{key}' END)"

    @staticmethod
    def json_valid(column: str) -> str:
        return f"buildctl_json_valid({column})"

    @staticmethod
    def in_json_array(expr: str, param: str) -> str:
        return f"{expr} IN (SELECT jsonb_array_elements_text(CAST({param} AS jsonb)))"

    @staticmethod
    def json_array_length(column: str) -> str:
        return f"(CASE WHEN buildctl_json_valid({column}) THEN jsonb_array_length(({column})::jsonb) END)"

    @staticmethod
    def group_concat(expr: str, separator: str) -> str:
        return f"string_agg({expr}, '{separator}')"


SQLITE = SQLite()
POSTGRES = Postgres()
