"""`buildctl tasks …`: task lists."""

from __future__ import annotations

from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import JSON

GROUP = ("tasks", "Task lists: import a TOML/JSON file, list them, show one.")


def _run_import(db, v: dict) -> str | None:
    from buildctl import render, tasklists

    result = tasklists.import_file(db, v["file"])
    if v["as_json"]:
        render.print_json(result)
        return None
    render.info(f"imported {result['name']!r}: {result['task_count']} tasks")
    return result["id"]


def _run_list(db, v: dict) -> None:
    from buildctl import render, tasklists

    render.emit(tasklists.list_lists(db), render.LIST_COLUMNS, as_json=v["as_json"],
                empty="no task lists yet; create one with `buildctl tasks import FILE`")


def _run_show(db, v: dict) -> None:
    from buildctl import render, tasklists

    render.document(tasklists.show_list(db, v["list_ref"]), v["as_json"], render.task_list_show)


TASKS_IMPORT = Command(
    ("tasks", "import"),
    help="Validate FILE and create a task list from it (all or nothing); print the list id.",
    params=(
        Param("file", metavar="FILE", complete="path",
              help="Task-list file, TOML or JSON (format: name, max_parallel_agents, [[tasks]] with id, title, "
                   "command, validate, timeout, depends_on, files)."),
        JSON,
    ),
    runner=_run_import,
)

TASKS_LIST = Command(("tasks", "list"), help="List the task lists, oldest first.", params=(JSON,), runner=_run_list)

TASKS_SHOW = Command(
    ("tasks", "show"),
    help="Show one task list: its tasks with their dependencies and file impacts, and its runs.",
    params=(Param("list_ref", metavar="LIST", complete="list", help="Task list id (any unique prefix) or name."),
            JSON),
    runner=_run_show,
)

COMMANDS = (TASKS_IMPORT, TASKS_LIST, TASKS_SHOW)
