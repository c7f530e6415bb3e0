"""Identifiers: short random ids, and finding a row by any unique prefix of its id."""

from __future__ import annotations

import secrets

from buildctl.errors import NotFound, UsageError

#: Prefixes make an id say what it names: ex_…, ag_…, cp_…, tl_…, wv_…, tk_…
PREFIXES = {"execution": "ex", "agent": "ag", "checkpoint": "cp", "list": "tl", "wave": "wv", "task": "tk"}


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}_{secrets.token_hex(6)}"


def resolve_prefix(db, table: str, column: str, value: str, noun: str, where: str = "", params: tuple = ()) -> str:
    """The one id in ``table.column`` that equals or starts with ``value``.

    ``table``/``column``/``where`` are trusted identifiers from our own code; the
    user's text only ever travels as a bound parameter.
    """
    value = (value or "").strip()
    if not value:
        raise UsageError(f"empty {noun} id")
    extra = f" AND ({where})" if where else ""
    exact = db.scalar(f"SELECT {column} FROM {table} WHERE {column} = ?{extra}", (value, *params))
    if exact is not None:
        return exact
    rows = db.query(
        f"SELECT {column} AS id FROM {table} WHERE substr({column}, 1, length(?)) = ?{extra} LIMIT 6",
        (value, value, *params),
    )
    if not rows:
        raise NotFound(f"no {noun} matches {value!r}")
    if len(rows) > 1:
        shown = ", ".join(r["id"] for r in rows[:5])
        raise UsageError(f"{noun} id {value!r} is ambiguous: it matches {shown}{', …' if len(rows) > 5 else ''}")
    return rows[0]["id"]
