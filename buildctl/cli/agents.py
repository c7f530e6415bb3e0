"""`buildctl agent …` and the top-level `buildctl heartbeat`: build agents.

`heartbeat` and `agent finish` are generated from buildctl.hotspec (the lean path
runs them without Typer); the rest are thin Typer commands over buildctl.agents.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from buildctl import agents, hotspec, render
from buildctl.cli import hot
from buildctl.cli.common import ExecArg, complete_execution, open_db

app = typer.Typer(help="Build agents: spawn, work, list, show, stale, finish.", no_args_is_help=True)


def _complete_status(incomplete: str) -> list[str]:
    return [s for s in agents.STATUSES if s.startswith(incomplete)]


OptionalExecArg = Annotated[Optional[str], typer.Argument(
    metavar="[EXEC]", help="Only this execution (any unique id prefix); all executions when left out.",
    autocompletion=complete_execution, show_default=False)]


@app.command("spawn")
def spawn(
    execution: ExecArg,
    command: Annotated[Optional[list[str]], typer.Argument(
        metavar="[-- CMD ARGS...]", show_default=False,
        help="Run CMD as this agent (heartbeats, log events, final status) and exit with CMD's exit code. "
             "With --task, the task is taken, started and completed or failed by CMD's exit code.")] = None,
    wave: Annotated[Optional[int], typer.Option("--wave", min=1, metavar="N",
                                                help="Wave number the agent works in (default: the task's wave, "
                                                     "else the run's current wave).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", metavar="T",
                                                help="Task the agent starts on: display id (T-001) or task id; "
                                                     "must be in the run.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", metavar="JSON",
                                                  help="JSON object merged over the defaults: maxRetries 3, "
                                                       "heartbeatIntervalMs 30000, taskTimeoutMs 300000, "
                                                       "validationTimeoutMs 120000 (and worker settings retryBackoffMs, "
                                                       "killGraceMs, staleAfterMs).")] = None,
) -> None:
    """Register an agent in a run (status initializing) and print only its instance id.

    With `-- CMD ARGS...`, run CMD as that agent instead and exit with its exit code.
    """
    if command:
        from buildctl import worker
        from buildctl.cli.common import State

        w = worker.Worker(State.db_location, worker.Options(execution, config=config))
        raise typer.Exit(w.supervise(list(command), wave=wave, task=task))
    with open_db() as db:
        render.print_id(agents.spawn(db, execution, wave=wave, task=task, config=config))


@app.command("work")
def work(
    execution: ExecArg,
    repo: Annotated[Optional[str], typer.Option("--repo", metavar="DIR", help="Folder the tasks run in (and the git repository for checkpoints). Default: the current folder.")] = None,
    checkpoints: Annotated[bool, typer.Option("--checkpoints/--no-checkpoints", help="Checkpoint the repository before each task and restore it before each retry.")] = False,
    max_tasks: Annotated[Optional[int], typer.Option("--max-tasks", min=1, metavar="N", help="Stop after running N tasks.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", metavar="JSON", help="Agent config (see `agent spawn --config`), e.g. '{\"maxRetries\": 1}'.")] = None,
) -> None:
    """Work as an agent: claim the next task, run it, heartbeat, report, repeat until the run has nothing left.

    SIGTERM finishes the current task, then exits; a second SIGTERM (or `run cancel`) stops the task's
    process (SIGTERM, grace, SIGKILL) and records it.
    """
    import os

    from buildctl import worker
    from buildctl.cli.common import State

    repo_dir = os.path.abspath(repo) if repo else None
    if repo_dir is not None and not os.path.isdir(repo_dir):
        from buildctl.errors import UsageError

        raise UsageError(f"--repo {repo!r} is not a folder")
    opts = worker.Options(execution, repo=repo_dir, checkpoints=checkpoints, max_tasks=max_tasks, config=config)
    out = worker.Worker(State.db_location, opts).run()
    render.info(f"agent {out.instance_id}: {out.tasks_run} task(s) run, {out.completed} completed, "
                f"{out.failed} failed; {out.reason}")
    raise typer.Exit(out.exit_code)


def register(root: typer.Typer) -> None:
    from buildctl import readspec

    hot.register(app, readspec.AGENT_LIST)
    hot.register(app, readspec.AGENT_SHOW)
    hot.register(app, readspec.AGENT_STALE)
    hot.register(app, hotspec.AGENT_FINISH)
    root.add_typer(app, name="agent")
    hot.register(root, hotspec.HEARTBEAT)
