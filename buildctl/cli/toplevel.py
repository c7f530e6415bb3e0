"""Top-level commands that belong to no group (waves, heartbeat, gc, doctor)."""

import typer


def register(root: typer.Typer) -> None:
    pass
