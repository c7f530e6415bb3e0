"""What the migrations build, and what a database actually has: `doctor`'s schema check.

The bookkeeping says which files were applied; it cannot see an index dropped by hand, a
table rebuilt by a script, or a column lost in a copy. This module reads both sides and
names the difference: the reference is SQLite's files applied to a scratch in-memory
database (the schema as the files define it, nothing from the live one), the live side
is read from the database itself. Both sides are read with sqlite-utils' introspection
on SQLite, and from the information schema on PostgreSQL, whose files create the same
tables, columns and index names.

Only what is missing is a finding: a table, column or index someone added is theirs.
Not on the hot path: sqlite-utils is imported when a check runs.
"""

from __future__ import annotations

import sqlite3

from buildctl.dialect import SQLITE
from buildctl.storage import MIGRATIONS_TABLE, Database, dialect_folder, migration_names

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    import sqlite_utils

#: table -> {"columns": set of names, "indexes": set of names}
Shape = dict[str, dict[str, set[str]]]


def _sqlite_shape(conn: sqlite3.Connection) -> Shape:
    import sqlite_utils

    sudb: sqlite_utils.Database = sqlite_utils.Database(conn, execute_plugins=False)
    shape: Shape = {}
    for name in sudb.table_names():
        if name.startswith("sqlite_") or name == MIGRATIONS_TABLE:
            continue
        table = sudb.table(name)
        shape[name] = {
            "columns": set(table.columns_dict),
            # origin 'c': made by CREATE INDEX (the files name them); 'pk'/'u' are the
            # automatic indexes behind PRIMARY KEY and UNIQUE, checked with their columns.
            "indexes": {index.name for index in table.indexes if index.origin == "c"},
        }
    return shape


def expected() -> Shape:
    """The schema the migration files define: SQLite's files applied, in order, to a scratch
    in-memory database."""
    conn = sqlite3.connect(":memory:")
    try:
        for name in migration_names(SQLITE):
            with open(f"{dialect_folder(SQLITE)}/{name}", encoding="utf-8") as f:
                conn.executescript(f.read())
        return _sqlite_shape(conn)
    finally:
        conn.close()


def live(db: Database) -> Shape:
    """The tables, columns and indexes ``db`` has now."""
    if db.sql.name != "postgres":
        return _sqlite_shape(db.conn)
    shape: Shape = {}
    for row in db.query("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema()"):
        shape.setdefault(row["table_name"], {"columns": set(), "indexes": set()})["columns"].add(row["column_name"])
    for row in db.query("SELECT tablename, indexname FROM pg_indexes WHERE schemaname = current_schema()"):
        if row["tablename"] in shape:
            shape[row["tablename"]]["indexes"].add(row["indexname"])
    shape.pop(MIGRATIONS_TABLE, None)
    return shape


def missing(db: Database) -> list[str]:
    """Every table, column and index the migrations create that ``db`` lacks, one line each."""
    have = live(db)
    out = []
    for table, want in sorted(expected().items()):
        if table not in have:
            out.append(f"table {table} is missing")
            continue
        for column in sorted(want["columns"] - have[table]["columns"]):
            out.append(f"column {table}.{column} is missing")
        for index in sorted(want["indexes"] - have[table]["indexes"]):
            out.append(f"index {index} on {table} is missing (queries that use it scan the table instead)")
    return out


__all__ = ["expected", "live", "missing"]
