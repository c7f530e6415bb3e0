"""The lean hot path (SPEC §7): commands scripts call once per task, without Typer.

Stdlib only. ``try_run`` returns None when argv is not a hot command, and the
entry point falls through to the Typer app.
"""

from __future__ import annotations


def try_run(argv: list[str]) -> int | None:
    return None
