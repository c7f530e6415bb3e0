"""`buildctl log …`: the execution log.

Every command is declared once (`add` in buildctl.hotspec, `tail` and `failures`
in buildctl.readspec); the lean path serves them without Typer, and their Typer
commands are generated from the declarations for help and shell completion.
"""

from __future__ import annotations

import typer

from buildctl import hotspec
from buildctl.cli import hot

app = typer.Typer(help="The execution log: add events, tail a lane, find SIA-triggering failures.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    from buildctl import readspec

    hot.register(app, hotspec.LOG_ADD)
    hot.register(app, readspec.LOG_TAIL)
    hot.register(app, readspec.LOG_FAILURES)
    root.add_typer(app, name="log")
