"""`buildctl checkpoint …`: git checkpoints."""

import typer

app = typer.Typer(help="Git checkpoints: create, list, restore.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="checkpoint")
