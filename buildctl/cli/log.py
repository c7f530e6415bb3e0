"""`buildctl log …`: the execution log, one lane per run."""

from __future__ import annotations

from buildctl import states
from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import EXEC, JSON, TASK_FILTER, duration

GROUP = ("log", "The execution log: add events, tail a lane, find the tasks that trigger the SIA.")


def _run_add(db, v: dict) -> str:
    from buildctl import execlog

    return str(execlog.add(db, v["execution"], v["type"], v["message"], task=v["task"], agent=v["agent"],
                           context_json=v["context"]))


def _run_tail(db, v: dict) -> None:
    from buildctl import execlog, render

    args = dict(task=v["task"], types=v["types"], errors_only=v["errors"], since_s=v["since"])
    if not v["follow"]:
        rows = execlog.tail(db, v["execution"], v["lines"], **args)
        if v["as_json"]:
            render.print_json(rows)
        elif not rows:
            render.info("no events")
        else:
            render.log_lines(rows)
        return
    console = None if v["as_json"] else render.console()
    events = execlog.follow(db, v["execution"], v["lines"], **args,
                            on_ready=lambda: render.info(f"following {v['execution']} until the run ends "
                                                         "(Ctrl-C to stop)"))
    try:
        for ev in events:
            if v["as_json"]:
                render.print_ndjson(ev)
            else:
                render.log_lines([ev], console)
    except KeyboardInterrupt:
        return


def _run_failures(db, v: dict) -> None:
    from buildctl import execlog, render

    rows = execlog.failures(db, v["execution"], task=v["task"], min_failures=v["min_failures"])
    render.emit(rows, render.FAILURE_COLUMNS, as_json=v["as_json"],
                empty=f"no task has {v['min_failures']} or more consecutive failures")


LOG_ADD = Command(
    ("log", "add"),
    help="Append one event to an execution's log (its lane); print the event id. TYPE is one of: "
         + ", ".join(states.EVENT_TYPES) + ".",
    short_help="Append one event to an execution's log; print its id.",
    params=(
        EXEC,
        Param("type", metavar="TYPE", complete=states.EVENT_TYPES, help="Event type: " + ", ".join(states.EVENT_TYPES) + "."),
        Param("message", metavar="MESSAGE", help="The event's message."),
        Param("task", ("--task",), metavar="T", complete="task",
              help="The task it is about: display id (T-001) within the run's list, or task id."),
        Param("agent", ("--agent",), metavar="ID", complete="agent",
              help="The agent that reports it (must belong to the execution)."),
        Param("context", ("--context",), metavar="JSON",
              help='Extra context as a JSON object, e.g. \'{"error": "exit 2"}\'.'),
    ),
    runner=_run_add,
)

LOG_TAIL = Command(
    ("log", "tail"),
    help="Print a run's last events, oldest first (only that run's lane); --follow until the run ends.",
    params=(
        EXEC,
        Param("lines", ("-n", "--lines"), type="int", min=1, max=10_000_000, default=500, metavar="N",
              help="How many of the last events to print."),
        TASK_FILTER,
        Param("types", ("--type",), metavar="TYPE", multiple=True, complete=states.EVENT_TYPES,
              help="Only events of this type (repeat for several): " + ", ".join(states.EVENT_TYPES) + "."),
        Param("errors", ("--errors",), type="bool", help="Only task_failed and error events."),
        duration("since", ("--since",), None, "Only events of the last DURATION (90s, 15m, 24h, …)."),
        Param("follow", ("--follow", "-f"), type="bool",
              help="Keep printing new events as they are written; exit 0 when the run ends."),
        Param("as_json", ("--json",), type="bool",
              help="Print JSON (stable keys, ISO-8601 UTC timestamps); one object per line (NDJSON) with --follow."),
    ),
    runner=_run_tail,
)

LOG_FAILURES = Command(
    ("log", "failures"),
    help=("Tasks with N or more consecutive task_failed events in this run (the self-improvement agent's trigger), "
          "and whether their error changed between attempts (\"no progress\" when it did not)."),
    params=(
        EXEC,
        TASK_FILTER,
        Param("min_failures", ("--min",), type="int", min=1, max=1000, default=3, metavar="N",
              help="Consecutive task_failed events that trigger the SIA."),
        JSON,
    ),
    runner=_run_failures,
)

COMMANDS = (LOG_ADD, LOG_TAIL, LOG_FAILURES)
