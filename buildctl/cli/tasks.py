"""`buildctl tasks …`: task lists."""

from __future__ import annotations

from typing import Annotated

import typer

from buildctl import render
from buildctl.cli.common import JsonOption, ListArg, open_db

app = typer.Typer(help="Task lists: import a TOML/JSON file, list them, show one.", no_args_is_help=True)

FileArg = Annotated[str, typer.Argument(
    metavar="FILE", help="Task-list file, TOML or JSON (format: name, max_parallel_agents, [[tasks]] with id, title, "
                         "command, validate, timeout, depends_on, files).")]


@app.command("import")
def import_(file: FileArg, as_json: JsonOption = False) -> None:
    """Validate FILE and create a task list from it (all or nothing); print the list id."""
    from buildctl import tasklists

    with open_db() as db:
        result = tasklists.import_file(db, file)
    if as_json:
        render.print_json(result)
    else:
        render.print_id(result["id"])
        render.info(f"imported {result['name']!r}: {result['task_count']} tasks")


def _files(row: dict) -> str:
    return "\n".join(f"{f['op']} {f['path']} ({f['confidence']:g})" for f in row["files"])


TASK_COLUMNS = [
    render.Column("display_id", "task"),
    render.Column("title", "title", max_width=40),
    render.Column("status", "status", kind="status"),
    render.Column("depends_on", "depends on", fmt=lambda r: ", ".join(r["depends_on"])),
    render.Column("command", "command", max_width=40),
    render.Column("timeout_s", "timeout", justify="right",
                  fmt=lambda r: "" if r["timeout_s"] is None else f"{r['timeout_s']:g}s"),
    render.Column("files", "files", fmt=_files),
]


@app.command("show")
def show(list_ref: ListArg, as_json: JsonOption = False) -> None:
    """Show one task list: its tasks with their dependencies and file impacts, and its runs."""
    from buildctl import tasklists

    with open_db() as db:
        data = tasklists.show_list(db, list_ref)
    if as_json:
        render.print_json(data)
        return
    render.show(render.key_values([
        ("list", data["id"]),
        ("name", data["name"]),
        ("description", data["description"] or ""),
        ("status", render.styled_status(data["status"])),
        ("max agents", data["max_parallel_agents"]),
        ("tasks", len(data["tasks"])),
        ("runs", ", ".join(f"#{r['run_number']} {r['execution_id']} ({r['status']})" for r in data["runs"]) or "none"),
        ("source", data["source_file"] or ""),
        ("created (UTC)", render.short_time(data["created_at"])),
    ]))
    render.emit(data["tasks"], TASK_COLUMNS, as_json=False)


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    hot.register(app, readspec.TASKS_LIST)
    root.add_typer(app, name="tasks")
