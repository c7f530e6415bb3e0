"""Applying the numbered raw SQL files, one transaction per file, on either engine.

SQLite's files are sql/NNN_*.sql, PostgreSQL's sql/postgres/NNN_*.sql: the same names,
each dialect's own text, whose SHA-256 is what the bookkeeping records. Each file and
its bookkeeping row commit together, so a migrate killed part-way leaves the database at
the version before or after that file, never between. A file may not hold statements
that control the transaction (COMMIT, BEGIN, …): one would commit part of the file. On
PostgreSQL every migrate transaction first takes the advisory lock "migrate", so that
concurrent migrates apply each file once, one after the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from buildctl.dialect import SQLITE, Postgres, SQLite, transaction_statements
from buildctl.errors import Conflict, DatabaseError, InvalidInput
from buildctl.storage import MIGRATIONS_TABLE, Database, applied_migrations, dialect_folder, migration_names


def bookkeeping_sql(dialect: SQLite | Postgres) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
  name TEXT PRIMARY KEY,
  sha256 TEXT NOT NULL,
  applied_at {dialect.timestamp_type} NOT NULL DEFAULT ({dialect.now})
)
"""


@dataclass(frozen=True)
class MigrationState:
    name: str
    state: str  # applied | pending | changed
    applied_at: str | None
    sha256: str
    #: The file's text in the engine's dialect (what --dry-run shows and apply runs).
    sql: str = field(default="", repr=False)


def file_text(name: str, dialect: SQLite | Postgres = SQLITE) -> str:
    with open(f"{dialect_folder(dialect)}/{name}", encoding="utf-8") as f:
        return f.read()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def status(db: Database | None, dialect: SQLite | Postgres | None = None) -> list[MigrationState]:
    """Every migration file of the database's engine with its state. ``db`` None means no
    database yet: everything is pending, in ``dialect``'s files (SQLite's by default)."""
    d = db.sql if db is not None else (dialect or SQLITE)
    applied = applied_migrations(db) if db is not None else {}
    out = []
    for name in migration_names(d):
        text = file_text(name, d)
        sha = digest(text)
        row = applied.get(name)
        if row is None:
            out.append(MigrationState(name, "pending", None, sha, text))
        else:
            out.append(MigrationState(name, "applied" if row["sha256"] == sha else "changed", row["applied_at"], sha, text))
    return out


def check_unchanged(states: list[MigrationState]) -> None:
    changed = [s.name for s in states if s.state == "changed"]
    if changed:
        raise Conflict(
            f"applied migration {changed[0]} has changed since it was applied; restore the original file "
            "(a change to the schema needs a new numbered file)"
        )


def check_no_transaction_statements(name: str, text: str) -> None:
    found = transaction_statements(text)
    if found:
        word, line = found[0]
        raise InvalidInput(
            f"migration {name} contains a {word} statement (line {line}): migrate runs each file in a "
            "transaction of its own, which that statement would split; remove it (nothing was applied)"
        )


def pending_sql(db: Database) -> list[tuple[str, str]]:
    """(name, text) of every pending file, refusing before anything runs if an applied file
    changed or a pending one holds a transaction statement."""
    states = status(db)
    check_unchanged(states)
    pending = [(s.name, s.sql) for s in states if s.state == "pending"]
    for name, text in pending:
        check_no_transaction_statements(name, text)
    return pending


def apply(db: Database) -> list[str]:
    """Apply every pending file, each atomically with its bookkeeping row."""
    with db.write():
        db.lock("migrate")
        db.execute(bookkeeping_sql(db.sql))
    applied = []
    for name, text in pending_sql(db):
        with db.write():
            db.lock("migrate")
            # Re-check inside the lock: another migrate may have applied it meanwhile.
            if db.scalar(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = ?", (name,)):
                continue
            try:
                db.executescript(text)
            except DatabaseError as exc:
                reason = str(exc).removeprefix("database error: ")
                raise DatabaseError(f"migration {name} failed: {reason}; nothing of it was applied") from exc
            db.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name, sha256) VALUES (?, ?)", (name, digest(text)))
        applied.append(name)
    return applied
