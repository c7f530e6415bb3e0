"""`buildctl run …`: execution runs; and the top-level `buildctl waves EXEC`."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from buildctl import render
from buildctl.cli.common import ExecArg, complete_list, open_db

app = typer.Typer(help="Execution runs: start, list, show, pause, resume, cancel, exec.", no_args_is_help=True)

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled", "paused"]


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


@app.command("exec")
def exec_(
    execution: ExecArg,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=256, help="Worker processes (agents) to run on this machine; the list's max_parallel_agents still caps how many tasks run at once.")] = 3,
    repo: Annotated[str | None, typer.Option("--repo", metavar="DIR", help="Folder the tasks run in (and the git repository for checkpoints). Default: the current folder.")] = None,
    checkpoints: Annotated[bool, typer.Option("--checkpoints/--no-checkpoints", help="Checkpoint the repository before each task and restore it before each retry.")] = False,
    config: Annotated[str | None, typer.Option("--config", metavar="JSON", help="Agent config for the workers, e.g. '{\"maxRetries\": 1, \"heartbeatIntervalMs\": 5000}'.")] = None,
) -> None:
    """Run the tasks of a run on this machine with N workers, showing live progress.

    Exits 0 when the run completed, 1 when it failed or was cancelled; Ctrl-C cancels the run
    (running tasks are stopped) and exits 130.
    """
    import os

    from buildctl import agents, exitcodes, executor, runs
    from buildctl.errors import Conflict

    if config is not None:
        agents.parse_config(config)  # refuse bad JSON before any worker starts
    with open_db() as db:
        execution_id = runs.resolve_execution(db, execution)
        status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (execution_id,))
        location = db.location
    if runs.is_ended(status):
        raise Conflict(f"run {execution_id} has already ended ({status}); start a new one with `buildctl run start`")
    repo_dir = os.path.abspath(repo) if repo else os.getcwd()
    if not os.path.isdir(repo_dir):
        from buildctl.errors import UsageError

        raise UsageError(f"--repo {repo!r} is not a folder")
    live = None
    if render.is_terminal():
        from rich.live import Live

        live = Live(console=render.console(), auto_refresh=False, transient=False)
        live.start()

    def tick(snap: dict) -> None:
        if live is not None:
            live.update(render.live_view(snap), refresh=True)

    try:
        result = executor.execute(location, execution_id, jobs=jobs, repo=repo_dir, checkpoints=checkpoints,
                                  config=agents.parse_config(config) if config else None,
                                  on_tick=tick if live is not None else None)
    finally:
        if live is not None:
            live.stop()
    if live is None and result.snapshot is not None:
        render.show(render.live_view(result.snapshot))
    for text in result.worker_errors:
        for line in text.splitlines()[-3:]:
            render.info(f"worker: {line}")
    render.info(f"run {execution_id} {result.status}")
    if result.interrupted:
        raise typer.Exit(exitcodes.INTERRUPTED)
    if result.status != "completed":
        raise typer.Exit(exitcodes.FAILED)


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    hot.register(app, readspec.RUN_LIST)
    hot.register(app, readspec.RUN_SHOW)
    root.add_typer(app, name="run")
    hot.register(root, readspec.WAVES)
