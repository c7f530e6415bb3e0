"""The one declaration of the hot-path commands (SPEC §7): heartbeat, log add, agent finish.

Both command lines are built from these declarations: ``buildctl.lean`` parses argv
with them (stdlib only), and ``buildctl.cli.hot`` generates the Typer commands from
them (for ``--help`` and shell completion, and for anyone calling the Typer app).
Both paths hand the raw strings to ``execute()``: the same conversion, the same
validation, the same domain call, the same output, the same errors.

Stdlib only and cheap to import. The declarations are plain classes with slots
rather than ``@dataclass``: importing ``dataclasses`` pulls in ``inspect`` (~15 ms),
most of this path's budget.
"""

from __future__ import annotations

import sys

from buildctl import agents, execlog
from buildctl.agents import FINISH_STATUSES, HEARTBEAT_STATUSES
from buildctl.errors import UsageError
from buildctl.execlog import EVENT_TYPES


class Param:
    """One argument (no ``flags``) or option of a lean command.

    ``type`` is ``str``, ``int``, ``float``, ``duration`` (90s, 15m, 24h → seconds) or
    ``bool`` (a flag that takes no value); ``multiple`` options may repeat and give a
    list. ``choices``, ``min`` and ``max`` are checked after conversion (usage errors,
    exit 2); ``complete`` lists values shell completion offers without restricting them
    (domain rules check those). An argument is required unless ``required=False``.
    """

    __slots__ = ("name", "flags", "type", "help", "choices", "min", "max", "required", "default", "metavar",
                 "complete", "multiple")

    def __init__(self, name: str, flags: tuple = (), type: str = "str", help: str = "", choices: tuple | None = None,
                 min: float | None = None, max: float | None = None, required: bool | None = None, default=None,
                 metavar: str | None = None, complete: tuple | None = None, multiple: bool = False):
        self.name = name
        self.flags = tuple(flags)
        self.type = type
        self.help = help
        self.choices = choices
        self.min = min
        self.max = max
        self.required = required if required is not None else (not flags and default is None)
        self.default = default if default is not None or type != "bool" else False
        self.metavar = metavar or (("[" + "|".join(choices) + "]") if choices else name.upper())
        self.complete = complete if complete is not None else choices
        self.multiple = multiple

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def label(self) -> str:
        """How errors name it: the first flag, or the metavar of an argument."""
        return self.flags[0] if self.flags else self.metavar

    def __repr__(self) -> str:
        return f"Param({self.name!r}, flags={self.flags!r}, type={self.type!r})"


class Command:
    """A hot command: its words (``("log", "add")``), help, parameters, and runner."""

    __slots__ = ("path", "help", "short_help", "params", "runner", "check_schema")

    def __init__(self, path: tuple, help: str, params: tuple, runner, short_help: str | None = None,
                 check_schema: bool = True):
        self.path = tuple(path)
        self.help = help
        self.short_help = short_help
        self.params = tuple(params)
        self.runner = runner
        #: False for a command that must work on a database behind its migrations (doctor reports them).
        self.check_schema = check_schema

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def __repr__(self) -> str:
        return f"Command({self.name!r})"


# --------------------------------------------------------------------------- runners
# Each takes an open Database and the converted values, calls ONE domain function,
# and returns what goes to stdout (None for nothing).

def _run_heartbeat(db, v: dict) -> str | None:
    agents.heartbeat(db, v["agent"], status=v["status"], task=v["task"], progress=v["progress"],
                     memory_mb=v["memory_mb"], cpu=v["cpu"], pid=v["pid"])
    return None


def _run_log_add(db, v: dict) -> str | None:
    return str(execlog.add(db, v["execution"], v["type"], v["message"], task=v["task"], agent=v["agent"],
                           context_json=v["context"]))


def _run_agent_finish(db, v: dict) -> str | None:
    agents.finish(db, v["agent"], v["status"], error=v["error"])
    return None


# --------------------------------------------------------------------------- the declarations

HEARTBEAT = Command(
    ("heartbeat",),
    help=("Record one heartbeat of an agent: an agent_heartbeats row plus the agent's last_heartbeat "
          "(and status/task when given), in one transaction. A stuck agent goes back to running. "
          "Prints nothing. Refused for an unknown or finished agent."),
    short_help="Record one heartbeat of an agent (the hot path: no Typer at run time).",
    params=(
        Param("agent", help="Agent instance id (any unique prefix).", metavar="ID"),
        Param("status", ("--status",), choices=HEARTBEAT_STATUSES, help="Set the agent's status."),
        Param("task", ("--task",), metavar="T",
              help="The task the agent is working on: display id (T-001) within the run's list, or task id."),
        Param("progress", ("--progress",), type="int", min=0, max=100, metavar="0-100",
              help="Progress of the current task, in percent (0 to 100)."),
        Param("memory_mb", ("--memory-mb",), type="float", min=0, metavar="MB",
              help="Memory in use, in MB (overrides what --pid samples)."),
        Param("cpu", ("--cpu",), type="float", min=0, metavar="PERCENT",
              help="CPU use in percent (overrides what --pid samples)."),
        Param("pid", ("--pid",), type="int", min=1, metavar="PID",
              help="Sample memory (RSS) and CPU (average since start) of this process."),
    ),
    runner=_run_heartbeat,
)

LOG_ADD = Command(
    ("log", "add"),
    help=("Append one event to an execution's log (its lane). Prints the event id. TYPE is one of: "
          + ", ".join(EVENT_TYPES) + "."),
    short_help="Append one event to an execution's log; print its id.",
    params=(
        Param("execution", help="Execution id (any unique prefix).", metavar="EXEC"),
        Param("type", help="Event type (the B.3 list): " + ", ".join(EVENT_TYPES) + ".", metavar="TYPE",
              complete=EVENT_TYPES),
        Param("message", help="The event's message.", metavar="MESSAGE"),
        Param("task", ("--task",), metavar="T",
              help="The task it is about: display id (T-001) within the run's list, or task id."),
        Param("agent", ("--agent",), metavar="ID", help="The agent that reports it (must belong to the execution)."),
        Param("context", ("--context",), metavar="JSON",
              help='Extra context as a JSON object, e.g. \'{"error": "exit 2"}\'.'),
    ),
    runner=_run_log_add,
)

AGENT_FINISH = Command(
    ("agent", "finish"),
    help=("End an agent from a script: completed or failed (with --error, stored in its error_context). "
          "A task it still held is released. Prints nothing."),
    short_help="End an agent: --status completed|failed [--error MSG].",
    params=(
        Param("agent", help="Agent instance id (any unique prefix).", metavar="ID"),
        Param("status", ("--status",), choices=FINISH_STATUSES, required=True,
              help="How the agent ended."),
        Param("error", ("--error",), metavar="MSG", help="What went wrong (kept in the agent's error_context)."),
    ),
    runner=_run_agent_finish,
)

COMMANDS = {c.path: c for c in (HEARTBEAT, LOG_ADD, AGENT_FINISH)}


def all_commands() -> dict:
    """The hot commands plus the read commands people type (buildctl.readspec)."""
    from buildctl import readspec

    return {**COMMANDS, **readspec.COMMANDS}


# --------------------------------------------------------------------------- shared behaviour

_TYPE_NAMES = {"int": "an integer", "float": "a number"}


def convert(cmd: Command, raw: dict) -> dict:
    """Raw command-line strings -> typed, range-checked values (UsageError on bad input).

    Both paths call this with the same strings, so they refuse the same things with
    the same message.
    """
    out = {}
    for p in cmd.params:
        value = raw.get(p.name)
        if value is None or (p.multiple and not value):
            out[p.name] = p.default
        elif p.type == "bool":
            out[p.name] = bool(value)
        elif p.multiple:
            out[p.name] = [_convert_one(p, v) for v in value]
        else:
            out[p.name] = _convert_one(p, value)
    return out


def _convert_one(p: Param, value):
    if p.type == "duration":
        from buildctl import durations

        return durations.parse(value, what=p.label)
    if p.type == "int" or p.type == "float":
        text = str(value).strip()
        try:
            value = int(text) if p.type == "int" else float(text)
        except ValueError:
            raise UsageError(f"invalid value for {p.label}: {value!r} is not {_TYPE_NAMES[p.type]}") from None
        if p.type == "float" and value != value:  # NaN
            raise UsageError(f"invalid value for {p.label}: {text!r} is not {_TYPE_NAMES[p.type]}")
        if p.min is not None and value < p.min or p.max is not None and value > p.max:
            if p.max is None:
                rng = f"must be at least {p.min:g}"
            elif p.min is None:
                rng = f"must be at most {p.max:g}"
            else:
                rng = f"must be between {p.min:g} and {p.max:g}"
            raise UsageError(f"invalid value for {p.label}: {text} ({rng})")
    if p.choices is not None and value not in p.choices:
        raise UsageError(f"invalid value for {p.label}: {value!r} is not one of {', '.join(p.choices)}")
    return value


def execute(cmd: Command, raw: dict, location: str | None) -> int:
    """Convert, open the database, run, print. Raises BuildctlError (the caller prints it)."""
    from buildctl import storage

    values = convert(cmd, raw)
    db = storage.connect(location, check_schema=cmd.check_schema)
    try:
        result = cmd.runner(db, values)
    finally:
        db.close()
    if isinstance(result, int):  # a runner that decides its exit code (run exec)
        return result
    if result is not None:
        sys.stdout.write(result + "\n")
        sys.stdout.flush()
    return 0
