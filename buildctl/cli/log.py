"""`buildctl log …`: the execution log.

`log add` is generated from buildctl.hotspec (the lean path runs it without
Typer); `tail` and `failures` are thin Typer commands over buildctl.execlog.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from buildctl import execlog, hotspec, render
from buildctl.cli import hot
from buildctl.cli.common import ExecArg, JsonOption, open_db

app = typer.Typer(help="The execution log: add events, tail a lane, find SIA-triggering failures.", no_args_is_help=True)


def _complete_type(incomplete: str) -> list[str]:
    return [t for t in execlog.EVENT_TYPES if t.startswith(incomplete)]


TaskOption = Annotated[Optional[str], typer.Option(
    "--task", metavar="T", help="Only this task: display id (T-001) within the run's list, or task id.")]


FAILURE_COLUMNS = [
    render.Column("task", "Task"),
    render.Column("title", "Title", max_width=40),
    render.Column("failure_count", "Failures", justify="right"),
    render.Column("sia_triggered", "SIA", fmt=lambda r: "triggered" if r["sia_triggered"] else ""),
    render.Column("no_progress", "Progress", fmt=lambda r: "no progress" if r["no_progress"] else
                  f"error changed {r['error_changes']}×"),
    render.Column("last_error", "Last error", max_width=60),
]


@app.command("failures")
def failures(
    execution: ExecArg,
    task: TaskOption = None,
    min_failures: Annotated[int, typer.Option("--min", min=1, metavar="N",
                                              help="Consecutive task_failed events that trigger the SIA.")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Tasks that hit the SIA trigger (>= N consecutive task_failed events in this run) and
    whether their error changed between attempts ("no progress" when it did not)."""
    with open_db() as db:
        rows = execlog.failures(db, execution, task=task, min_failures=min_failures)
    render.emit(rows, FAILURE_COLUMNS, as_json=as_json,
                empty=f"no task has {min_failures} or more consecutive failures")


def register(root: typer.Typer) -> None:
    from buildctl import readspec

    hot.register(app, hotspec.LOG_ADD)
    hot.register(app, readspec.LOG_TAIL)
    root.add_typer(app, name="log")
