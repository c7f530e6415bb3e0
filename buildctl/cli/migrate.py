"""`buildctl migrate`: create or upgrade the database."""

from __future__ import annotations

from typing import Annotated

import typer

from buildctl import migrations, render
from buildctl.cli.common import JsonOption, open_db
from buildctl.errors import NeedsMigration


def migrate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the SQL that would run; change nothing.")] = False,
    show_status: Annotated[bool, typer.Option("--status", help="List applied and pending migrations with their dates; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the database, or bring it up to the newest schema (each file in its own transaction)."""
    if dry_run or show_status:
        try:
            db = open_db(check_schema=False)
        except NeedsMigration:
            db = None  # no database yet: everything is pending
        if db is None:
            states = migrations.status(None)
        else:
            with db:
                states = migrations.status(db)
        if show_status:
            rows = [{"name": s.name, "state": s.state, "applied_at": s.applied_at, "sha256": s.sha256} for s in states]
            render.emit(rows, [
                render.Column("name", "migration"),
                render.Column("state", "state", fmt=lambda r: render.styled_status(r["state"])),
                render.Column("applied_at", "applied at (UTC)", kind="time"),
            ], as_json=as_json, title=None)
            migrations.check_unchanged(states)
            return
        migrations.check_unchanged(states)
        pending = [s for s in states if s.state == "pending"]
        if as_json:
            render.print_json([{"name": s.name, "sql": migrations.file_text(s.name)} for s in pending])
            return
        if not pending:
            render.info("nothing to migrate: the database is up to date")
        for s in pending:
            print(f"-- {s.name}\n{migrations.file_text(s.name).rstrip()}\n")
        return
    db = open_db(create=True, check_schema=False)
    with db:
        applied = migrations.apply(db)
        if as_json:
            render.print_json({"database": db.location, "applied": applied})
        elif applied:
            render.info(f"applied {len(applied)} migration(s) to {db.location}: {', '.join(applied)}")
        else:
            render.info(f"nothing to migrate: {db.location} is up to date")

