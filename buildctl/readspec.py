"""The commands people type, declared once for both command lines (SPEC §7).

`waves`, every `run` and `tasks` command, `log tail`/`failures`, `agent list`/`show`/
`stale` and `checkpoint list` answer in well under a tenth of a second of database work; what a person waits for
is start-up (and `run exec` starts its workers sooner). Like the hot path (buildctl.hotspec), they are served
by buildctl.lean without importing Typer or pydantic, while buildctl.cli.hot
generates their Typer commands (help, completion) from the same declarations.
Rendering is buildctl.render's (Rich, imported when a table is drawn).

Stdlib only at import time: every runner imports what it needs.
"""

from __future__ import annotations

from buildctl.agents import STATUSES as AGENT_STATUSES
from buildctl.execlog import EVENT_TYPES
from buildctl.hotspec import Command, Param

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "paused")

JSON = Param("as_json", ("--json",), type="bool",
             help="Print JSON (stable keys, ISO-8601 UTC timestamps) instead of a table.")
EXEC = Param("execution", help="Execution id (any unique prefix).", metavar="EXEC")


def _exec_optional(help_text: str) -> Param:
    return Param("execution", help=help_text, metavar="EXEC", required=False)


# --------------------------------------------------------------------------- runners

def _run_waves(db, v: dict) -> None:
    import time

    from buildctl import render, runs
    from buildctl.errors import UsageError

    if v["interval"] <= 0:
        raise UsageError("invalid value for --interval: must be greater than zero")
    execution_id = runs.resolve_execution(db, v["execution"])
    summary = runs.wave_summary(db, execution_id)
    if not v["watch"]:
        if v["as_json"]:
            render.print_json(summary)
        else:
            render.show(render.waves_table(summary))
        return
    try:
        if v["as_json"]:
            last = None
            while True:
                if summary != last:
                    render.print_ndjson(summary)
                    last = summary
                if runs.is_ended(summary["status"]):
                    return
                time.sleep(v["interval"])
                summary = runs.wave_summary(db, execution_id)
        from rich.live import Live

        with Live(render.waves_table(summary), console=render.console(), auto_refresh=False, transient=False) as live:
            while not runs.is_ended(summary["status"]):
                time.sleep(v["interval"])
                summary = runs.wave_summary(db, execution_id)
                live.update(render.waves_table(summary), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C ends watching; that is not an error


def _show(data: dict, as_json: bool, view) -> None:
    """A show command's output: the JSON document, or the renderables ``view(data)`` draws."""
    from buildctl import render

    if as_json:
        render.print_json(data)
    else:
        render.show(*view(data))


def _run_run_show(db, v: dict) -> None:
    from buildctl import render, runs

    _show(runs.show_run(db, v["execution"]), v["as_json"], render.run_show)


def _run_run_list(db, v: dict) -> None:
    from buildctl import render, runs

    rows = runs.list_runs(db, list_ref=v["list_ref"], status=v["status"])
    render.emit(rows, render.RUN_COLUMNS, as_json=v["as_json"], empty="no runs match")


def _run_log_tail(db, v: dict) -> None:
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
                            on_ready=lambda: render.info(f"following {v['execution']} until the run ends (Ctrl-C to stop)"))
    try:
        for ev in events:
            if v["as_json"]:
                render.print_ndjson(ev)
            else:
                render.log_lines([ev], console)
    except KeyboardInterrupt:
        return


def _run_agent_list(db, v: dict) -> None:
    from buildctl import agents, render

    rows = agents.list_agents(db, v["execution"], status=v["status"])
    render.emit(rows, render.AGENT_COLUMNS, as_json=v["as_json"], empty="no agents")


def _run_agent_stale(db, v: dict) -> None:
    from buildctl import agents, durations, render

    seconds = v["threshold"]
    rows = agents.mark_stale(db, seconds, v["execution"]) if v["mark"] else agents.stale(db, seconds, v["execution"])
    columns = render.STALE_COLUMNS if v["mark"] else render.STALE_COLUMNS[:-1]
    render.emit(rows, columns, as_json=v["as_json"], empty=f"no agent silent for more than {durations.human(seconds)}")
    if v["mark"] and rows and not v["as_json"]:
        render.info(f"marked {len(rows)} agent(s) stuck")


def _run_tasks_list(db, v: dict) -> None:
    from buildctl import render, tasklists

    rows = tasklists.list_lists(db)
    render.emit(rows, render.LIST_COLUMNS, as_json=v["as_json"],
                empty="no task lists yet; create one with `buildctl tasks import FILE`")


def _run_run_exec(db, v: dict) -> int:
    import os

    from buildctl import agents, executor, exitcodes, render, runs
    from buildctl.errors import Conflict, UsageError

    config = agents.parse_config(v["config"]) if v["config"] is not None else None  # refused before any worker starts
    execution_id = runs.resolve_execution(db, v["execution"])
    status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (execution_id,))
    if runs.is_ended(status):
        raise Conflict(f"run {execution_id} has already ended ({status}); start a new one with `buildctl run start`")
    repo_dir = os.path.abspath(v["repo"]) if v["repo"] else os.getcwd()
    if not os.path.isdir(repo_dir):
        raise UsageError(f"--repo {v['repo']!r} is not a folder")
    live = None
    if render.is_terminal():
        from rich.live import Live

        live = Live(console=render.console(), auto_refresh=False, transient=False)
        live.start()
    try:
        result = executor.execute(
            db.location, execution_id, jobs=v["jobs"], repo=repo_dir, checkpoints=v["checkpoints"], config=config,
            on_tick=(lambda snap: live.update(render.live_view(snap), refresh=True)) if live is not None else None)
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
        return exitcodes.INTERRUPTED
    return exitcodes.OK if result.status == "completed" else exitcodes.FAILED


def _run_run_start(db, v: dict) -> str:
    from buildctl import render, runs

    result = runs.start_run(db, v["list_or_file"], triggered_by=v["triggered_by"], threshold=v["conflict_threshold"])
    what = "imported and planned" if result["imported"] else "planned"
    render.info(
        f"run #{result['run_number']} of {result['task_list_name']!r} {what}: {result['total_tasks']} tasks in "
        f"{len(result['waves'])} waves ({len(result['conflicts'])} file conflicts)")
    return result["execution_id"]


def _lifecycle(verb: str):
    def runner(db, v: dict) -> None:
        from buildctl import render, runs

        data = getattr(runs, verb)(db, v["execution"])
        extra = ""
        if verb == "cancel":
            extra = f"; {data['skipped_now']} pending tasks skipped"
            if data["still_running"]:
                extra += f", {len(data['still_running'])} running tasks told to stop ({', '.join(data['still_running'])})"
        render.info(f"run {data['execution_id']} is {data['status']}{extra}")

    return runner


def _run_tasks_import(db, v: dict) -> str | None:
    from buildctl import render, tasklists

    result = tasklists.import_file(db, v["file"])
    if v["as_json"]:
        render.print_json(result)
        return None
    render.info(f"imported {result['name']!r}: {result['task_count']} tasks")
    return result["id"]


def _run_tasks_show(db, v: dict) -> None:
    from buildctl import render, tasklists

    _show(tasklists.show_list(db, v["list_ref"]), v["as_json"], render.task_list_show)


def _run_agent_show(db, v: dict) -> None:
    from buildctl import agents, render

    _show(agents.show(db, v["agent"], heartbeats=v["heartbeats"]), v["as_json"], render.agent_show)


def _run_log_failures(db, v: dict) -> None:
    from buildctl import execlog, render

    rows = execlog.failures(db, v["execution"], task=v["task"], min_failures=v["min_failures"])
    render.emit(rows, render.FAILURE_COLUMNS, as_json=v["as_json"],
                empty=f"no task has {v['min_failures']} or more consecutive failures")


def _run_checkpoint_list(db, v: dict) -> None:
    from buildctl import checkpoints, render

    rows = checkpoints.list_checkpoints(db, v["execution"], v["task"])
    render.emit(rows, render.CHECKPOINT_COLUMNS, as_json=v["as_json"], empty="no checkpoints")


def _run_gc(db, v: dict) -> int:
    from buildctl import exitcodes, render
    from buildctl import gc as gcmod

    try:
        with gcmod.gc_lock(db):
            report = gcmod.collect(db, repo=v["repo"], batch_size=v["batch_size"], dry_run=v["dry_run"],
                                   keep_heartbeats_s=v["keep_heartbeats"], stale_after_s=v["stale_after"],
                                   keep_logs_s=v["keep_logs"], keep_checkpoints_s=v["keep_checkpoints"])
    except gcmod.GcBusy as busy:
        if not v["quiet"]:
            render.info(f"another gc is running (pid {busy}); nothing to do")
        return exitcodes.OK
    if v["as_json"]:
        render.print_json(report.as_dict())
    elif not (v["quiet"] and report.ok):
        render.show(render.gc_report(report))
    for step in report.steps:
        if not step.ok:
            render.error_line(f"gc step {step.name} failed: {step.error}")
    return exitcodes.OK if report.ok else exitcodes.FAILED


def _run_doctor(db, v: dict) -> int:
    from buildctl import doctor, exitcodes, render

    checks = doctor.diagnose(db, stale_after_s=v["stale_after"])
    ok = all(c.ok for c in checks)
    if v["as_json"]:
        render.print_json({"ok": ok, "checks": doctor.as_dicts(checks)})
    else:
        render.show(render.doctor_report(checks))
    return exitcodes.OK if ok else exitcodes.FAILED


def _run_checkpoint_create(db, v: dict) -> str:
    from buildctl import checkpoints

    return checkpoints.create(db, v["execution"], v["task"], agent=v["agent"], repo_dir=v["repo"],
                              message=v["message"])["id"]


def _run_checkpoint_restore(db, v: dict) -> str | None:
    from buildctl import checkpoints, render

    result = checkpoints.restore(db, v["checkpoint"], execution=v["exec"], repo_dir=v["repo"], dry_run=v["dry_run"],
                                 reset_index=v["reset_index"], paths=v["path"])
    if v["as_json"]:
        render.print_json(result)
        return None
    counts = result["counts"]
    summary = ", ".join(f"{counts[k]} {k}" for k in checkpoints.CHANGE_KINDS)
    if v["dry_run"]:
        if result["changes"]:
            render.show(render.restore_changes(result))
        render.info(f"dry run: restoring {result['checkpoint']} would change {len(result['changes'])} file(s) "
                    f"({summary}); nothing was changed")
        return None
    render.info(f"restored {result['checkpoint']} in {result['repo']}: {summary}; "
                f"verified {result['verified_files']} file(s)")
    if result["kept"]:
        render.info(f"kept {len(result['kept'])} file(s) that were ignored before the restore: "
                    + ", ".join(repr(p) for p in result["kept"][:5]) + (", …" if len(result["kept"]) > 5 else ""))
    render.info(f"undo: buildctl checkpoint restore {result['pre_restore_checkpoint']}")
    return result["pre_restore_checkpoint"]


# --------------------------------------------------------------------------- the declarations

WAVES = Command(
    ("waves",),
    help="The wave summary of a run (B.8): status, tasks, completed, failed, active agents, progress.",
    params=(
        EXEC,
        JSON,
        Param("watch", ("--watch", "-w"), type="bool", help="Refresh in place until the run ends (Ctrl-C stops watching)."),
        Param("interval", ("--interval",), type="duration", default=1.0, metavar="DURATION",
              help="Refresh interval for --watch, e.g. 1s, 500ms."),
    ),
    runner=_run_waves,
)

RUN_SHOW = Command(
    ("run", "show"),
    help="Show one run: counters, and a line per wave with its tasks' states.",
    params=(EXEC, JSON),
    runner=_run_run_show,
)

RUN_LIST = Command(
    ("run", "list"),
    help="List execution runs, oldest first.",
    params=(
        Param("list_ref", ("--list",), metavar="LIST", help="Only runs of this task list (id prefix or name)."),
        Param("status", ("--status",), choices=RUN_STATUSES, help="Only runs in this status."),
        JSON,
    ),
    runner=_run_run_list,
)

LOG_TAIL = Command(
    ("log", "tail"),
    help="Print a run's last events, oldest first (lane-isolated); --follow until the run ends.",
    params=(
        EXEC,
        Param("lines", ("-n", "--lines"), type="int", min=1, default=500, metavar="N",
              help="How many of the last events to print."),
        Param("task", ("--task",), metavar="T", help="Only this task: display id (T-001) within the run's list, or task id."),
        Param("types", ("--type",), metavar="TYPE", multiple=True, complete=EVENT_TYPES,
              help="Only events of this type (repeat for several): " + ", ".join(EVENT_TYPES) + "."),
        Param("errors", ("--errors",), type="bool", help="Only task_failed and error events."),
        Param("since", ("--since",), type="duration", metavar="DURATION",
              help="Only events of the last DURATION (90s, 15m, 24h, …)."),
        Param("follow", ("--follow", "-f"), type="bool",
              help="Keep printing new events as they are written; exit 0 when the run ends."),
        Param("as_json", ("--json",), type="bool",
              help="Print JSON (stable keys, ISO-8601 UTC timestamps); one object per line (NDJSON) with --follow."),
    ),
    runner=_run_log_tail,
)

AGENT_LIST = Command(
    ("agent", "list"),
    help="List agents, oldest first: all of them, or one execution's.",
    params=(
        _exec_optional("Only this execution (any unique id prefix); all executions when left out."),
        Param("status", ("--status",), metavar="STATUS", complete=AGENT_STATUSES,
              help="Only agents in this status: " + ", ".join(AGENT_STATUSES) + "."),
        JSON,
    ),
    runner=_run_agent_list,
)

AGENT_STALE = Command(
    ("agent", "stale"),
    help=("Agents (initializing, running or idle) whose last heartbeat — or spawn, if they never sent one — "
          "is older than the threshold (B.8, fixed)."),
    params=(
        _exec_optional("Only this execution (any unique id prefix); all executions when left out."),
        Param("threshold", ("--threshold",), type="duration", default=60.0, metavar="DURATION",
              help="Silent for longer than this (90s, 5m, …) counts as stale."),
        Param("mark", ("--mark",), type="bool",
              help="Set the stale agents stuck (with an error_context) and release their running tasks (retry or fail)."),
        JSON,
    ),
    runner=_run_agent_stale,
)

RUN_EXEC = Command(
    ("run", "exec"),
    help=("Run the tasks of a run on this machine with N workers, showing live progress. Exits 0 when the run "
          "completed, 1 when it failed or was cancelled; Ctrl-C cancels the run (running tasks are stopped) "
          "and exits 130."),
    short_help="Run a run's tasks here with N workers and a live view.",
    params=(
        EXEC,
        Param("jobs", ("--jobs", "-j"), type="int", min=1, max=256, default=3, metavar="N",
              help="Worker processes (agents) to run on this machine; the list's max_parallel_agents still caps "
                   "how many tasks run at once."),
        Param("repo", ("--repo",), metavar="DIR",
              help="Folder the tasks run in (and the git repository for checkpoints). Default: the current folder."),
        Param("checkpoints", ("--checkpoints",), type="bool",
              help="Checkpoint the repository before each task and restore it before each retry."),
        Param("config", ("--config",), metavar="JSON",
              help='Agent config for the workers, e.g. \'{"maxRetries": 1, "heartbeatIntervalMs": 5000}\'.'),
    ),
    runner=_run_run_exec,
)

RUN_START = Command(
    ("run", "start"),
    help=("Create a run of a task list, plan its waves, and print the execution id. A second run of the same "
          "list plans only the tasks not completed yet."),
    short_help="Create a run of a task list (or FILE) and plan its waves; print the execution id.",
    params=(
        Param("list_or_file", metavar="LIST_OR_FILE",
              help="Task list id (any unique prefix) or name, or a task-list FILE to import first "
                   "(an unchanged file already imported reuses its list, so run numbers continue)."),
        Param("triggered_by", ("--triggered-by",), choices=("user", "auto", "retry"), default="user",
              help="Who started the run, recorded on it."),
        Param("conflict_threshold", ("--conflict-threshold",), type="float", min=0.0, max=1.0, default=0.6,
              metavar="0..1", help="Two file impacts conflict only when both confidences are at least this (0..1)."),
    ),
    runner=_run_run_start,
)

RUN_PAUSE = Command(("run", "pause"), params=(EXEC,), runner=_lifecycle("pause"),
                    help="Pause a pending or running run: no new task is handed out; running tasks finish.")
RUN_RESUME = Command(("run", "resume"), params=(EXEC,), runner=_lifecycle("resume"), help="Resume a paused run.")
RUN_CANCEL = Command(("run", "cancel"), params=(EXEC,), runner=_lifecycle("cancel"),
                     help="Cancel a run: pending tasks become skipped, running agents are told to stop.")

TASKS_IMPORT = Command(
    ("tasks", "import"),
    help="Validate FILE and create a task list from it (all or nothing); print the list id.",
    params=(
        Param("file", metavar="FILE",
              help="Task-list file, TOML or JSON (format: name, max_parallel_agents, [[tasks]] with id, title, "
                   "command, validate, timeout, depends_on, files)."),
        JSON,
    ),
    runner=_run_tasks_import,
)

TASKS_SHOW = Command(
    ("tasks", "show"),
    help="Show one task list: its tasks with their dependencies and file impacts, and its runs.",
    params=(Param("list_ref", metavar="LIST", help="Task list id (any unique prefix) or name."), JSON),
    runner=_run_tasks_show,
)

AGENT_SHOW = Command(
    ("agent", "show"),
    help="Show one agent, its held assignments and its most recent heartbeats.",
    params=(
        Param("agent", help="Agent instance id (any unique prefix).", metavar="ID"),
        Param("heartbeats", ("--heartbeats",), type="int", min=0, default=10, metavar="N",
              help="How many recent heartbeats to show."),
        JSON,
    ),
    runner=_run_agent_show,
)

LOG_FAILURES = Command(
    ("log", "failures"),
    help=("Tasks that hit the SIA trigger (>= N consecutive task_failed events in this run) and whether their "
          "error changed between attempts (\"no progress\" when it did not)."),
    params=(
        EXEC,
        Param("task", ("--task",), metavar="T", help="Only this task: display id (T-001) within the run's list, or task id."),
        Param("min_failures", ("--min",), type="int", min=1, default=3, metavar="N",
              help="Consecutive task_failed events that trigger the SIA."),
        JSON,
    ),
    runner=_run_log_failures,
)

CHECKPOINT_LIST = Command(
    ("checkpoint", "list"),
    help="An execution's checkpoints, oldest first.",
    params=(
        EXEC,
        Param("task", ("--task",), metavar="T", help="Only this task's checkpoints (T-001 or task id)."),
        JSON,
    ),
    runner=_run_checkpoint_list,
)

GC = Command(
    ("gc",),
    help=("Clean up for cron: old heartbeats, stale agents, old logs and checkpoints, then optimize. Never touches a "
          "pending, running or paused run. Exits non-zero when any step failed."),
    short_help="Clean up for cron: heartbeats, stale agents, old logs and checkpoints.",
    params=(
        Param("keep_heartbeats", ("--keep-heartbeats",), type="duration", default=86400.0, metavar="DURATION",
              help="Delete heartbeats older than this (90s, 15m, 24h, 30d)."),
        Param("stale_after", ("--stale-after",), type="duration", default=60.0, metavar="DURATION",
              help="Mark agents silent for longer than this `stuck` and release their tasks."),
        Param("keep_logs", ("--keep-logs",), type="duration", default=2592000.0, metavar="DURATION",
              help="Delete the execution log of runs that ended longer ago than this."),
        Param("keep_checkpoints", ("--keep-checkpoints",), type="duration", default=604800.0, metavar="DURATION",
              help="Delete checkpoints (rows and git refs) of ended runs older than this."),
        Param("repo", ("--repo",), metavar="DIR",
              help="Git repository holding the checkpoint refs (default: the one recorded with each checkpoint)."),
        Param("batch_size", ("--batch-size",), type="int", min=1, max=1_000_000, default=2000, metavar="N",
              help="Rows deleted per transaction; a concurrent writer waits at most one batch."),
        Param("dry_run", ("--dry-run",), type="bool", help="Report what would be done; change nothing."),
        Param("quiet", ("--quiet", "-q"), type="bool", help="Print nothing when every step succeeded (for cron mail)."),
        JSON,
    ),
    runner=_run_gc,
)

DOCTOR = Command(
    ("doctor",),
    help=("Check the database: integrity, foreign keys, migrations, counters vs recounts, orphan assignments, "
          "stale agents. Exits 1 when anything is found, 0 on a healthy database."),
    short_help="Check the database's invariants; exit 1 on any finding.",
    params=(
        Param("stale_after", ("--stale-after",), type="duration", default=60.0, metavar="DURATION",
              help="Report agents silent for longer than this."),
        JSON,
    ),
    runner=_run_doctor,
    check_schema=False,
)

REPO = Param("repo", ("--repo",), metavar="DIR",
             help="A folder inside the git working tree (default: the current folder).")

CHECKPOINT_CREATE = Command(
    ("checkpoint", "create"),
    help=("Snapshot the working tree into a commit pinned at refs/buildctl/checkpoints/ID; print the id. The "
          "snapshot holds tracked files and untracked files that are not ignored. HEAD, the index, the stash and "
          "every file stay exactly as they are."),
    short_help="Snapshot the working tree into a pinned commit; print the checkpoint id.",
    params=(
        EXEC,
        Param("task", ("--task",), required=True, metavar="T",
              help="Task of the execution's list: display id (T-001) or task id."),
        Param("agent", ("--agent",), metavar="ID",
              help="Agent instance taking the checkpoint (any unique prefix; must belong to EXEC)."),
        REPO,
        Param("message", ("--message", "-m"), metavar="M", help="A note stored with the checkpoint."),
    ),
    runner=_run_checkpoint_create,
)

CHECKPOINT_RESTORE = Command(
    ("checkpoint", "restore"),
    help=("Make the working tree match a checkpoint exactly; print the id of the automatic undo checkpoint. "
          "First the current state is checkpointed automatically (its id goes to stdout: restore it to undo); "
          "then changed files are restored, deleted ones recreated, files created since removed, and every file "
          "is verified (exit 8 on a mismatch). Ignored files are left alone; HEAD and the index stay unless "
          "--reset-index."),
    short_help="Make the working tree match a checkpoint exactly (undoable).",
    params=(
        Param("checkpoint", metavar="CHECKPOINT", help="Checkpoint id (any unique prefix)."),
        Param("exec", ("--exec",), metavar="EXEC",
              help="The lane restoring: refuse (exit 5) a checkpoint of another execution."),
        REPO,
        Param("dry_run", ("--dry-run",), type="bool",
              help="List what would change (modified, mode, recreated, removed); change nothing."),
        Param("reset_index", ("--reset-index",), type="bool",
              help="Also put the index back as it was at the checkpoint (default: HEAD and the index stay)."),
        Param("path", ("--path",), metavar="PATH", multiple=True,
              help="Restore only this file or folder (repeatable); the rest of the tree is left as it is."),
        JSON,
    ),
    runner=_run_checkpoint_restore,
)

TASKS_LIST = Command(
    ("tasks", "list"),
    help="List the task lists, oldest first.",
    params=(JSON,),
    runner=_run_tasks_list,
)

COMMANDS = {c.path: c for c in (WAVES, RUN_START, RUN_SHOW, RUN_LIST, RUN_PAUSE, RUN_RESUME, RUN_CANCEL, RUN_EXEC,
                                 LOG_TAIL, LOG_FAILURES, AGENT_LIST, AGENT_SHOW, AGENT_STALE, CHECKPOINT_LIST,
                                 TASKS_IMPORT, TASKS_LIST, TASKS_SHOW, GC, DOCTOR,
                                 CHECKPOINT_CREATE, CHECKPOINT_RESTORE)}
