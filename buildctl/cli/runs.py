"""`buildctl run …`: execution runs; and the top-level `buildctl waves EXEC`.

Every command of this group is declared once in buildctl.readspec (the lean path
serves them without Typer); their Typer commands are generated from it for help
and shell completion.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Execution runs: start, list, show, pause, resume, cancel, exec.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    for cmd in (readspec.RUN_START, readspec.RUN_LIST, readspec.RUN_SHOW, readspec.RUN_PAUSE, readspec.RUN_RESUME,
                readspec.RUN_CANCEL, readspec.RUN_EXEC):
        hot.register(app, cmd)
    root.add_typer(app, name="run")
    hot.register(root, readspec.WAVES)
