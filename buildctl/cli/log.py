"""`buildctl log …`: the execution log.

`log add` is generated from buildctl.hotspec (the lean path runs it without
Typer); `tail` and `failures` are thin Typer commands over buildctl.execlog.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from buildctl import durations, execlog, hotspec, render
from buildctl.cli import hot
from buildctl.cli.common import ExecArg, JsonOption, open_db

app = typer.Typer(help="The execution log: add events, tail a lane, find SIA-triggering failures.", no_args_is_help=True)


def _complete_type(incomplete: str) -> list[str]:
    return [t for t in execlog.EVENT_TYPES if t.startswith(incomplete)]


TaskOption = Annotated[Optional[str], typer.Option(
    "--task", metavar="T", help="Only this task: display id (T-001) within the run's list, or task id.")]


def _line(ev: dict, console) -> None:
    from rich.text import Text

    line = Text()
    line.append(render.short_time(ev["timestamp"]) + "  ", style="dim")
    line.append(f"{ev['event_type']:<19}", style=render.STATUS_STYLES.get(ev["event_type"], ""))
    line.append(f" {ev['task'] or '-':<8} {ev['instance_id'] or '-':<15} ")
    line.append(ev["message"])
    if ev["context"]:
        line.append(f"  {ev['context']}", style="dim")
    console.print(line, soft_wrap=True)


@app.command("tail")
def tail(
    execution: ExecArg,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, metavar="N", help="How many of the last events to print.")]
    = execlog.DEFAULT_TAIL,
    task: TaskOption = None,
    types: Annotated[Optional[list[str]], typer.Option(
        "--type", metavar="TYPE", autocompletion=_complete_type,
        help="Only events of this type (repeat for several): " + ", ".join(execlog.EVENT_TYPES) + ".")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only task_failed and error events.")] = False,
    since: Annotated[Optional[str], typer.Option("--since", metavar="DURATION",
                                                 help="Only events of the last DURATION (90s, 15m, 24h, …).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they are written; "
                                                                "exit 0 when the run ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stable keys, ISO-8601 UTC timestamps); "
                                                         "one object per line (NDJSON) with --follow.")] = False,
) -> None:
    """Print a run's last events, oldest first (lane-isolated); --follow until the run ends."""
    since_s = durations.parse(since, what="--since") if since is not None else None
    with open_db() as db:
        if not follow:
            rows = execlog.tail(db, execution, lines, task=task, types=types, errors_only=errors, since_s=since_s)
            if as_json:
                render.print_json(rows)
            elif not rows:
                render.info("no events")
            else:
                console = render.console()
                for ev in rows:
                    _line(ev, console)
            return
        console = None if as_json else render.console()
        events = execlog.follow(db, execution, lines, task=task, types=types, errors_only=errors, since_s=since_s,
                                on_ready=lambda: render.info(f"following {execution} until the run ends (Ctrl-C to stop)"))
        for ev in events:
            if as_json:
                render.print_ndjson(ev)
            else:
                _line(ev, console)


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
    hot.register(app, hotspec.LOG_ADD)
    root.add_typer(app, name="log")
