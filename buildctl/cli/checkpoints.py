"""`buildctl checkpoint …`: git checkpoints (create, list, restore).

Every command of this group is declared once in buildctl.readspec (the lean path
serves them without Typer); their Typer commands are generated from it for help
and shell completion.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Git checkpoints: snapshot a working tree without touching HEAD, the index or any file; restore it exactly.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    for cmd in (readspec.CHECKPOINT_CREATE, readspec.CHECKPOINT_LIST, readspec.CHECKPOINT_RESTORE):
        hot.register(app, cmd)
    root.add_typer(app, name="checkpoint")
