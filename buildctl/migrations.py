"""Applying the numbered raw SQL files in sql/, one transaction per file.

Each file and its bookkeeping row commit together, so a migrate killed part-way
leaves the database at the version before or after that file, never between.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from buildctl.errors import Conflict
from buildctl.storage import MIGRATIONS_TABLE, Database, applied_migrations, migration_names, sql_dir

BOOKKEEPING_SQL = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
  name TEXT PRIMARY KEY,
  sha256 TEXT NOT NULL,
  applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f','now'))
)
"""


@dataclass(frozen=True)
class MigrationState:
    name: str
    state: str  # applied | pending | changed
    applied_at: str | None
    sha256: str


def file_text(name: str) -> str:
    return (sql_dir() / name).read_text(encoding="utf-8")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def status(db: Database | None) -> list[MigrationState]:
    """Every file in sql/ with its state; ``db`` None means no database yet (all pending)."""
    applied = applied_migrations(db) if db is not None else {}
    out = []
    for name in migration_names():
        sha = digest(file_text(name))
        row = applied.get(name)
        if row is None:
            out.append(MigrationState(name, "pending", None, sha))
        else:
            out.append(MigrationState(name, "applied" if row["sha256"] == sha else "changed", row["applied_at"], sha))
    return out


def check_unchanged(states: list[MigrationState]) -> None:
    changed = [s.name for s in states if s.state == "changed"]
    if changed:
        raise Conflict(
            f"applied migration {changed[0]} has changed since it was applied; restore the original file "
            "(a change to the schema needs a new numbered file)"
        )


def pending_sql(db: Database) -> list[tuple[str, str]]:
    """(name, text) of every pending file, refusing if an applied one changed."""
    states = status(db)
    check_unchanged(states)
    return [(s.name, file_text(s.name)) for s in states if s.state == "pending"]


def apply(db: Database, upto: str | None = None) -> list[str]:
    """Apply every pending file (up to and including ``upto``), each atomically with its bookkeeping row."""
    import sqlite_utils  # not on the hot path: only migrate needs it

    # sqlite-utils runs a script statement by statement when a transaction is
    # open, instead of sqlite3.executescript's implicit COMMIT, so each file is atomic.
    sudb = sqlite_utils.Database(db.conn, execute_plugins=False)
    with db.write():
        db.execute(BOOKKEEPING_SQL)
    applied = []
    for name, text in pending_sql(db):
        if upto is not None and name > upto:
            break
        with db.write():
            # Re-check inside the lock: another migrate may have applied it meanwhile.
            if db.scalar(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = ?", (name,)):
                continue
            sudb.executescript(text)
            db.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name, sha256) VALUES (?, ?)", (name, digest(text)))
        applied.append(name)
    return applied
