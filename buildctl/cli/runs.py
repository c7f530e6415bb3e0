"""`buildctl run …`: execution runs; and the top-level `buildctl waves EXEC`."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from buildctl import render
from buildctl.cli.common import ExecArg, complete_list, open_db

app = typer.Typer(help="Execution runs: start, list, show, pause, resume, cancel, exec.", no_args_is_help=True)


@app.command("start")
def start(
    list_or_file: Annotated[str, typer.Argument(
        metavar="LIST_OR_FILE", autocompletion=complete_list,
        help="Task list id (any unique prefix) or name, or a task-list FILE to import first "
             "(an unchanged file already imported reuses its list, so run numbers continue).")],
    triggered_by: Annotated[Literal["user", "auto", "retry"], typer.Option(
        "--triggered-by", help="Who started the run, recorded on it.")] = "user",
    conflict_threshold: Annotated[float, typer.Option(
        "--conflict-threshold", min=0.0, max=1.0,
        help="Two file impacts conflict only when both confidences are at least this (0..1).")] = 0.6,
) -> None:
    """Create a run of a task list, plan its waves, and print the execution id.

    A second run of the same list plans only the tasks not completed yet.
    """
    from buildctl import runs

    with open_db() as db:
        result = runs.start_run(db, list_or_file, triggered_by=triggered_by, threshold=conflict_threshold)
    render.print_id(result["execution_id"])
    what = "imported and planned" if result["imported"] else "planned"
    render.info(
        f"run #{result['run_number']} of {result['task_list_name']!r} {what}: {result['total_tasks']} tasks in "
        f"{len(result['waves'])} waves ({len(result['conflicts'])} file conflicts)"
    )


def _lifecycle(verb: str, execution: str) -> None:
    from buildctl import runs

    with open_db() as db:
        data = getattr(runs, verb)(db, execution)
    extra = ""
    if verb == "cancel":
        extra = f"; {data['skipped_now']} pending tasks skipped"
        if data["still_running"]:
            extra += f", {len(data['still_running'])} running tasks told to stop ({', '.join(data['still_running'])})"
    render.info(f"run {data['execution_id']} is {data['status']}{extra}")


@app.command("pause")
def pause(execution: ExecArg) -> None:
    """Pause a pending or running run: no new task is handed out; running tasks finish."""
    _lifecycle("pause", execution)


@app.command("resume")
def resume(execution: ExecArg) -> None:
    """Resume a paused run."""
    _lifecycle("resume", execution)


@app.command("cancel")
def cancel(execution: ExecArg) -> None:
    """Cancel a run: pending tasks become skipped, running agents are told to stop."""
    _lifecycle("cancel", execution)


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    hot.register(app, readspec.RUN_LIST)
    hot.register(app, readspec.RUN_SHOW)
    hot.register(app, readspec.RUN_EXEC)
    root.add_typer(app, name="run")
    hot.register(root, readspec.WAVES)
