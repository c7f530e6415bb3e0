"""`buildctl run …`: execution runs."""

import typer

app = typer.Typer(help="Execution runs: start, list, show, pause, resume, cancel, exec.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="run")
