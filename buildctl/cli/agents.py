"""`buildctl agent …` and `buildctl heartbeat`: build agents.

`heartbeat` and `agent finish` are the hot path scripts call once per task; like every
command they are declared here once and served by buildctl.cli.main without Typer.
"""

from __future__ import annotations

from buildctl import states
from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import AGENT, CHECKPOINTS, CONFIG, EXEC, EXEC_FILTER, JSON, REPO, duration

GROUP = ("agent", "Build agents: spawn, work, list, show, stale, finish.")


# --------------------------------------------------------------------------- runners

def _run_heartbeat(db, v: dict) -> None:
    from buildctl import agents

    agents.heartbeat(db, v["agent"], status=v["status"], task=v["task"], progress=v["progress"],
                     memory_mb=v["memory_mb"], cpu=v["cpu"], pid=v["pid"])


def _run_agent_finish(db, v: dict) -> None:
    from buildctl import agents

    agents.finish(db, v["agent"], v["status"], error=v["error"])


def _run_agent_spawn(db, v: dict) -> str | int:
    from buildctl import agents

    if v["command"]:
        from buildctl import worker

        w = worker.Worker(db.location, worker.Options(v["execution"], config=v["config"]))
        return w.supervise(list(v["command"]), wave=v["wave"], task=v["task"])
    return agents.spawn(db, v["execution"], wave=v["wave"], task=v["task"], config=v["config"])


def _run_agent_work(db, v: dict) -> int:
    import os

    from buildctl import render, worker
    from buildctl.errors import UsageError

    repo_dir = os.path.abspath(v["repo"]) if v["repo"] else None
    if repo_dir is not None and not os.path.isdir(repo_dir):
        raise UsageError(f"--repo {v['repo']!r} is not a folder")
    opts = worker.Options(v["execution"], agent_id=v["agent"], repo=repo_dir, checkpoints=v["checkpoints"],
                          max_tasks=v["max_tasks"], config=v["config"])
    out = worker.Worker(db.location, opts).run()
    render.info(f"agent {out.instance_id}: {out.tasks_run} task(s) run, {out.completed} completed, "
                f"{out.failed} failed; {out.reason}")
    return out.exit_code


def _run_agent_list(db, v: dict) -> None:
    from buildctl import agents, render

    rows = agents.list_agents(db, v["execution"], status=v["status"])
    render.emit(rows, render.AGENT_COLUMNS, as_json=v["as_json"], empty="no agents")


def _run_agent_show(db, v: dict) -> None:
    from buildctl import agents, render

    render.document(agents.show(db, v["agent"], heartbeats=v["heartbeats"]), v["as_json"], render.agent_show)


def _run_agent_stale(db, v: dict) -> None:
    from buildctl import agents, durations, render

    seconds = v["threshold"]
    rows = agents.mark_stale(db, seconds, v["execution"]) if v["mark"] else agents.stale(db, seconds, v["execution"])
    columns = render.STALE_COLUMNS if v["mark"] else render.STALE_COLUMNS[:-1]
    render.emit(rows, columns, as_json=v["as_json"], empty=f"no agent silent for more than {durations.human(seconds)}")
    if v["mark"] and rows and not v["as_json"]:
        render.info(f"marked {len(rows)} agent(s) stuck")


# --------------------------------------------------------------------------- the declarations

HEARTBEAT = Command(
    ("heartbeat",),
    help=("Record one heartbeat of an agent: an agent_heartbeats row plus the agent's last_heartbeat "
          "(and status/task when given), in one transaction. A stuck agent goes back to running. "
          "Prints nothing. Refused for an unknown or finished agent, and for an agent of a cancelled run "
          "(exit 5: stop working)."),
    short_help="Record one heartbeat of an agent.",
    params=(
        AGENT,
        Param("status", ("--status",), choices=states.HEARTBEAT_STATUSES, help="Set the agent's status."),
        Param("task", ("--task",), metavar="T", complete="task",
              help="The task the agent is working on: display id (T-001) within the run's list, or task id."),
        Param("progress", ("--progress",), type="int", min=0, max=100, metavar="0-100",
              help="Progress of the current task, in percent."),
        Param("memory_mb", ("--memory-mb",), type="float", min=0, max=1e9, metavar="MB",
              help="Memory in use, in MB (overrides what --pid samples)."),
        Param("cpu", ("--cpu",), type="float", min=0, max=100000, metavar="PERCENT",
              help="CPU use in percent, 100 per busy core (overrides what --pid samples)."),
        Param("pid", ("--pid",), type="int", min=1, max=4194304, metavar="PID",
              help="Sample memory (RSS) and CPU (average since start) of this process."),
    ),
    runner=_run_heartbeat,
)

AGENT_FINISH = Command(
    ("agent", "finish"),
    help=("End an agent from a script: completed or failed (with --error, kept in its error_context). "
          "A task it still held is released in the same transaction. Prints nothing."),
    short_help="End an agent: --status completed|failed [--error MSG].",
    params=(
        AGENT,
        Param("status", ("--status",), choices=states.FINISH_STATUSES, required=True, help="How the agent ended."),
        Param("error", ("--error",), metavar="MSG", help="What went wrong (kept in the agent's error_context)."),
    ),
    runner=_run_agent_finish,
)

AGENT_SPAWN = Command(
    ("agent", "spawn"),
    help=("Register an agent in a run (status initializing) and print only its instance id. "
          "With `-- CMD ARGS...`, run CMD as that agent instead (heartbeats, log events, final status) and exit "
          "with CMD's exit code; with --task as well, the task is taken (the wave barrier and max_parallel_agents "
          "apply) and completed or failed by CMD's exit code."),
    short_help="Register an agent in a run; print its id (or run CMD as it).",
    params=(
        EXEC,
        Param("command", metavar="-- CMD ARGS...", nargs=-1, required=False,
              help="Run CMD as this agent and exit with its exit code."),
        Param("wave", ("--wave",), type="int", min=1, max=1_000_000, metavar="N",
              help="Wave number the agent works in (default: the task's wave, else the run's current wave)."),
        Param("task", ("--task",), metavar="T", complete="task",
              help="Task the agent starts on: display id (T-001) or task id; must be in the run."),
        CONFIG,
    ),
    runner=_run_agent_spawn,
)

AGENT_WORK = Command(
    ("agent", "work"),
    help=("Work as an agent: claim the next task, run it, heartbeat, report, repeat until the run has nothing "
          "left. SIGTERM finishes the current task, then exits; a second SIGTERM (or `run cancel`) stops the "
          "task's process (SIGTERM, grace, SIGKILL) and records it."),
    short_help="Work as an agent until the run has nothing left.",
    params=(
        EXEC,
        REPO,
        CHECKPOINTS,
        Param("max_tasks", ("--max-tasks",), type="int", min=1, max=1_000_000, metavar="N",
              help="Stop after running N tasks."),
        CONFIG,
        Param("agent", ("--agent",), metavar="ID", complete="agent",
              help="Work as this registered agent (from `agent spawn EXEC`) instead of registering one; its own "
                   "config applies (so --config is refused beside it). `run exec` starts its workers this way."),
    ),
    runner=_run_agent_work,
)

AGENT_LIST = Command(
    ("agent", "list"),
    help="List agents, oldest first: all of them, or one execution's.",
    params=(
        EXEC_FILTER,
        Param("status", ("--status",), metavar="STATUS", complete=states.AGENT_STATUSES,
              help="Only agents in this status: " + ", ".join(states.AGENT_STATUSES) + "."),
        JSON,
    ),
    runner=_run_agent_list,
)

AGENT_SHOW = Command(
    ("agent", "show"),
    help="Show one agent, its held assignments and its most recent heartbeats.",
    params=(
        AGENT,
        Param("heartbeats", ("--heartbeats",), type="int", min=0, max=100_000, default=10, metavar="N",
              help="How many recent heartbeats to show."),
        JSON,
    ),
    runner=_run_agent_show,
)

AGENT_STALE = Command(
    ("agent", "stale"),
    help=("Agents (initializing, running or idle) whose last heartbeat — or spawn, if they never sent one — "
          "is older than the threshold."),
    params=(
        EXEC_FILTER,
        duration("threshold", ("--threshold",), 60.0, "Silent for longer than this (90s, 5m, …) counts as stale."),
        Param("mark", ("--mark",), type="bool",
              help="Set the stale agents stuck (with an error_context) and release their tasks (retry or fail)."),
        JSON,
    ),
    runner=_run_agent_stale,
)

COMMANDS = (HEARTBEAT, AGENT_SPAWN, AGENT_WORK, AGENT_LIST, AGENT_SHOW, AGENT_STALE, AGENT_FINISH)
