"""Top-level commands that belong to no group: gc, doctor.

Both are declared once in buildctl.readspec (the lean path serves them without
Typer, so cron's gc starts fast); their Typer commands are generated from it.
"""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    hot.register(root, readspec.GC)
    hot.register(root, readspec.DOCTOR)
