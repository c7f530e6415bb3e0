"""`buildctl agent …` and `buildctl heartbeat`: build agents.

`heartbeat` and `agent finish` are the hot path scripts call once per task; like every
command they are declared here once and served by buildctl.cli.main without Typer.
"""

from __future__ import annotations

from buildctl import states
from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import AGENT, CHECKPOINTS, CONFIG, EXEC, EXEC_FILTER, FOREVER_S, JSON, REPO, duration

GROUP = ("agent", "Build agents: spawn, claim, done, work, list, show, stale, finish.")

#: What a bare `--wait` stands for: wait until a task can be taken or the run has nothing
#: left. A word the duration parser refuses, so that only a bare `--wait` gives it.
_FOREVER = "forever"


# --------------------------------------------------------------------------- runners

def _run_heartbeat(db, v: dict) -> None:
    from buildctl import agents

    agents.heartbeat(db, v["agent"], status=v["status"], task=v["task"], progress=v["progress"],
                     memory_mb=v["memory_mb"], cpu=v["cpu"], pid=v["pid"])


def _run_agent_finish(db, v: dict) -> None:
    from buildctl import agents

    agents.finish(db, v["agent"], v["status"], error=v["error"], report_held=True)


def _run_agent_spawn(db, v: dict) -> str | int | None:
    import math

    from buildctl import agents, agentstate, render
    from buildctl.errors import UsageError

    if v["task"] is not None and v["next"]:
        raise UsageError("--task and --next are exclusive: name the task, or take the next one")
    claiming = v["task"] is not None or v["next"]
    if v["wait"] is not None and not claiming:
        raise UsageError("--wait needs --task T or --next: there is nothing to wait for otherwise")
    if v["command"]:
        from buildctl import worker

        if v["wait"] is not None:
            raise UsageError("--wait is for scripts that claim a task; with -- CMD, retry the command instead")
        w = worker.Worker(db.location, worker.Options(v["execution"], config=v["config"]), db)
        return w.supervise(list(v["command"]), wave=v["wave"], task=v["task"], claim_next=v["next"])
    if not claiming:
        agent = agents.spawn(db, v["execution"], wave=v["wave"], config=v["config"])
        if v["as_json"]:
            render.print_json({"agent": agent, "execution": db.scalar(
                "SELECT execution_id FROM build_agent_instances WHERE instance_id = ?", (agent,))})
            return None
        return agent
    cfg = agentstate.parse_config(v["config"])  # refused before anything is written
    run = _run_of(db, v["execution"])
    task_id = _task_id(db, run, v["task"])

    def attempt() -> dict:
        # While waiting, a busy run is not queued for: the next change wakes the wait anyway.
        return agents.spawn_and_claim(db, run["execution_id"], task=v["task"], wave=v["wave"], config=v["config"],
                                      unless_busy=v["wait"] is not None)

    claim = attempt() if v["wait"] is None else agents.claim_waiting(
        db, attempt, execution_id=run["execution_id"], wait_s=math.inf if v["wait"] == _FOREVER else v["wait"],
        stale_after_s=agentstate.stale_after_s(cfg), task_id=task_id)
    return _claimed(claim, v["as_json"])


def _run_of(db, execution: str) -> dict:
    from buildctl import resolve

    return resolve.execution(db, execution)


def _task_id(db, run: dict, task: str | None) -> str | None:
    from buildctl import resolve

    return None if task is None else resolve.task(db, run, task)["id"]


def _claimed(claim: dict, as_json: bool) -> str | None:
    """What a claim prints: the agent id, or with --json what a script needs to run the task."""
    from buildctl import render

    if not as_json:
        return claim["instance_id"]
    render.print_json({
        "agent": claim["instance_id"], "execution": claim["execution_id"], "task": claim["display_id"],
        "task_id": claim["task_id"], "title": claim["title"], "command": claim["command"],
        "validate": claim["validate_command"], "timeout_s": claim["timeout_s"], "attempt": claim["attempt"],
        "wave": claim["wave_number"], "assignment_id": claim["assignment_id"]})
    return None


def _run_agent_claim(db, v: dict) -> str | None:
    import math

    from buildctl import agents, agentstate, resolve

    agent = resolve.agent(db, v["agent"])
    if v["wait"] is None:
        return _claimed(agents.claim(db, agent["instance_id"]), v["as_json"])
    claim = agents.claim_waiting(
        db, lambda: agents.claim(db, agent["instance_id"], unless_busy=True), execution_id=agent["execution_id"],
        wait_s=math.inf if v["wait"] == _FOREVER else v["wait"],
        stale_after_s=agentstate.stale_after_s(agentstate.config_from(agent)), agent_id=agent["instance_id"])
    return _claimed(claim, v["as_json"])


def _run_agent_done(db, v: dict) -> None:
    from buildctl import agents, render

    out = agents.done(db, v["agent"], v["status"], error=v["error"])
    what = {"completed": "completed", "retry": "failed; it will be retried", "failed": "failed for good",
            "skipped": "failed; the run was cancelled"}[out["outcome"]]
    render.info(f"task {what}" + (f"; the agent is stuck: {out['agent_stuck']}" if out.get("agent_stuck") else ""))


def _run_agent_work(location, v: dict) -> int:
    import os

    from buildctl import exitcodes, render, storage, worker
    from buildctl.errors import UsageError

    repo_dir = os.path.abspath(v["repo"]) if v["repo"] else None
    if repo_dir is not None and not os.path.isdir(repo_dir):
        raise UsageError(f"--repo {v['repo']!r} is not a folder")
    # `run exec`'s first worker waits for its word here, and forks the others, with no
    # connection open yet.
    try:
        agent_id = worker.fork_peers(v["agent"], location)
    except worker.StandDown:
        return exitcodes.OK  # its agent was never registered: nothing to do, nothing to say
    db = storage.connect(location)
    try:
        opts = worker.Options(v["execution"], agent_id=agent_id, repo=repo_dir, checkpoints=v["checkpoints"],
                              max_tasks=v["max_tasks"], config=v["config"])
        out = worker.Worker(db.location, opts, db).run()
    finally:
        db.close()
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

STATUS = Param("status", ("--status",), choices=states.FINISH_STATUSES, required=True,
               help="completed, or failed (a failed attempt: retried after its backoff while retries remain).")
ERROR = Param("error", ("--error",), metavar="MSG", help="What went wrong (the task's error, kept in the log).")
WAIT = Param("wait", ("--wait",), type="duration", metavar="[DURATION]", flag_value=_FOREVER, min=0, max=FOREVER_S,
             help="If nothing can be taken now, wait (at most DURATION; bare: until something can or the run has "
                  "nothing left), reclaiming the tasks of agents that stopped heartbeating meanwhile.")
CLAIM_JSON = Param("as_json", ("--json",), type="bool",
                   help="Print the claimed task as JSON: agent, task, title, command, validate, timeout_s, attempt, "
                        "wave (what a script needs to run it).")

AGENT_FINISH = Command(
    ("agent", "finish"),
    help=("End an agent: completed or failed (with --error, kept in its error_context). The task it holds is "
          "completed or failed the same way (a failed attempt is retried after its backoff while retries remain), "
          "in the same transaction. Prints nothing."),
    short_help="End an agent (and the task it holds): --status completed|failed [--error MSG].",
    params=(AGENT, STATUS, ERROR),
    runner=_run_agent_finish,
)

AGENT_CLAIM = Command(
    ("agent", "claim"),
    help=("Claim and start the next claimable task for an agent that holds none, under every rule a worker obeys "
          "(the wave barrier, max_parallel_agents, dependencies, retry backoff). Prints the agent id (--json: the "
          "task). Exit 9 when nothing can be claimed yet (try again, or --wait), 10 when the run has nothing left, "
          "5 when the run was cancelled."),
    short_help="Claim the next task for an agent; print it with --json.",
    params=(AGENT, WAIT, CLAIM_JSON),
    runner=_run_agent_claim,
)

AGENT_DONE = Command(
    ("agent", "done"),
    help=("End the task an agent holds and keep the agent for its next claim: completed, or failed (retried after "
          "its backoff while retries remain, else failed for good with its dependents skipped). Named to pair with "
          "`agent claim` (claim a task, mark it done), apart from `agent finish`, which ends the agent itself."),
    short_help="End the task an agent holds: --status completed|failed [--error MSG].",
    params=(AGENT, STATUS, ERROR),
    runner=_run_agent_done,
)

AGENT_SPAWN = Command(
    ("agent", "spawn"),
    help=("Register an agent in a run (status initializing) and print only its instance id. With --task T (or "
          "--next) the agent also claims and starts that task (the next claimable one) in the same transaction, "
          "under every rule a worker obeys; when it cannot be taken now nothing is registered: --task exits 5 "
          "saying why, --next exits 9 (nothing claimable yet) or 10 (the run has nothing left). With "
          "`-- CMD ARGS...`, run CMD as that agent instead (heartbeats, log events, final status) and exit with "
          "CMD's exit code; with --task or --next as well, the task is completed or failed by CMD's exit code."),
    short_help="Register an agent in a run (and claim a task); print its id.",
    params=(
        EXEC,
        Param("command", metavar="-- CMD ARGS...", nargs=-1, required=False,
              help="Run CMD as this agent and exit with its exit code."),
        Param("wave", ("--wave",), type="int", min=1, max=1_000_000, metavar="N",
              help="Wave number the agent works in (default: the task's wave, else the run's current wave)."),
        Param("task", ("--task",), metavar="T", complete="task",
              help="Claim and start this task: display id (T-001) or task id; exit 5 when it cannot be taken now."),
        Param("next", ("--next",), type="bool", help="Claim and start the next claimable task."),
        WAIT,
        CLAIM_JSON,
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
    database=None,  # opened by the runner, after `run exec`'s first worker forked the others
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

COMMANDS = (HEARTBEAT, AGENT_SPAWN, AGENT_CLAIM, AGENT_DONE, AGENT_WORK, AGENT_LIST, AGENT_SHOW, AGENT_STALE,
            AGENT_FINISH)
