"""`buildctl tasks …`: task lists.

Every command of this group is declared once in buildctl.readspec (the lean path
serves them without Typer); their Typer commands are generated from it for help
and shell completion.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Task lists: import a TOML/JSON file, list them, show one.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    for cmd in (readspec.TASKS_IMPORT, readspec.TASKS_LIST, readspec.TASKS_SHOW):
        hot.register(app, cmd)
    root.add_typer(app, name="tasks")
