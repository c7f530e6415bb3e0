"""`buildctl agent …`: build agents."""

import typer

app = typer.Typer(help="Build agents: spawn, work, list, show, stale, finish.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="agent")
