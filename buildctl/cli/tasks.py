"""`buildctl tasks …`: task lists."""

import typer

app = typer.Typer(help="Task lists: import a TOML/JSON file, list them, show one.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tasks")
