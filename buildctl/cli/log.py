"""`buildctl log …`: the execution log."""

import typer

app = typer.Typer(help="The execution log: add events, tail a lane, find SIA-triggering failures.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="log")
