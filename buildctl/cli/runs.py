"""`buildctl run …` and `buildctl waves`: execution runs."""

from __future__ import annotations

from buildctl import states
from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import CHECKPOINTS, CONFIG, EXEC, JSON, REPO, duration

GROUP = ("run", "Execution runs: start, list, show, pause, resume, cancel, exec, timeline, report.")


# --------------------------------------------------------------------------- runners

def _run_start(db, v: dict) -> str:
    from buildctl import render, runs

    result = runs.start_run(db, v["list_or_file"], triggered_by=v["triggered_by"], threshold=v["conflict_threshold"])
    what = "imported and planned" if result["imported"] else "planned"
    render.info(
        f"run #{result['run_number']} of {result['task_list_name']!r} {what}: {result['total_tasks']} tasks in "
        f"{len(result['waves'])} waves ({len(result['conflicts'])} file conflicts)")
    return result["execution_id"]


def _run_list(db, v: dict) -> None:
    from buildctl import render, runs

    rows = runs.list_runs(db, list_ref=v["list_ref"], status=v["status"])
    render.emit(rows, render.RUN_COLUMNS, as_json=v["as_json"], empty="no runs match")


def _run_show(db, v: dict) -> None:
    from buildctl import render, runs

    render.document(runs.show_run(db, v["execution"]), v["as_json"], render.run_show)


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


def _run_exec(location, v: dict) -> int:
    import os

    from buildctl import agentstate, executor, storage
    from buildctl.cli import main
    from buildctl.errors import UsageError

    config = agentstate.parse_config(v["config"]) if v["config"] is not None else None  # refused before any worker starts
    repo_dir = os.path.abspath(v["repo"]) if v["repo"] else os.getcwd()
    if not os.path.isdir(repo_dir):
        raise UsageError(f"--repo {v['repo']!r} is not a folder")
    # The first worker is forked now, before the database is opened (executor.Zygote).
    zygote = executor.Zygote.fork(v["jobs"], serve=main.run)
    try:
        db = storage.connect(location)
        try:
            return _exec(db, v, config, repo_dir, zygote)
        finally:
            db.close()
    finally:
        if zygote is not None:
            zygote.dismiss()  # refused before the workers started: it leaves


def _exec(db, v: dict, config: dict | None, repo_dir: str, zygote) -> int:
    import os

    from buildctl import executor, exitcodes, render, resolve
    from buildctl.errors import Conflict

    run = resolve.execution(db, v["execution"])
    if run["status"] in states.RUN_ENDED:
        raise Conflict(f"run {run['execution_id']} has already ended ({run['status']}); "
                       "start a new one with `buildctl run start`")
    live = None
    on_started = None
    if not render.is_terminal():
        # The final table needs Rich (~35 ms of CPU to import and first draw): do that while
        # the workers run, instead of after the last one, when it would add to the run's
        # wall time. Not before they are started: the import holds the GIL and would delay
        # their start. At the lowest priority (Linux: a thread's own nice value): it only
        # has to be done by the end, and on a machine the workers keep busy it took their
        # CPU (A/B: 500 tasks, --jobs 8, 15 ms less wall; 10 waves, 5 ms).
        import threading

        def warm_up() -> None:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except (AttributeError, OSError):
                pass
            render.warm_up()

        def on_started() -> None:
            threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    if render.is_terminal():
        from rich.live import Live

        live = Live(console=render.console(), auto_refresh=False, transient=False)
        live.start()
    try:
        result = executor.execute(
            db.location, run["execution_id"], jobs=v["jobs"], repo=repo_dir, checkpoints=v["checkpoints"],
            config=config, on_started=on_started, db=db, zygote=zygote,
            on_tick=(lambda snap: live.update(render.live_view(snap), refresh=True)) if live is not None else None)
    finally:
        if live is not None:
            live.stop()
    db.close_in_background()  # its last work overlaps the final table's
    if live is None and result.snapshot is not None:
        render.show(render.live_view(result.snapshot))
    for text in result.worker_errors:
        for line in text.splitlines()[-3:]:
            render.info(f"worker: {line}")
    render.info(f"run {run['execution_id']} {result.status}")
    if result.signal:  # Ctrl-C 130, SIGTERM 143, SIGHUP 129: the shell's 128 + N
        return 128 + result.signal
    return exitcodes.OK if result.status == "completed" else exitcodes.FAILED


def _watch(fetch, view, v: dict, comparable=lambda doc: doc) -> None:
    """Print ``fetch()`` once, or with --watch refresh it every --interval until the run ends
    (NDJSON with --json: a line whenever it changed). Ctrl-C ends watching cleanly."""
    import time

    from buildctl import render

    doc = fetch()
    if not v["watch"]:
        render.document(doc, v["as_json"], lambda d: [view(d)])
        return
    try:
        if v["as_json"]:
            last = None
            while True:
                if comparable(doc) != last:
                    render.print_ndjson(doc)
                    last = comparable(doc)
                if doc["status"] in states.RUN_ENDED:
                    return
                time.sleep(v["interval"])
                doc = fetch()
        from rich.live import Live

        with Live(view(doc), console=render.console(), auto_refresh=False, transient=False) as live:
            while doc["status"] not in states.RUN_ENDED:
                time.sleep(v["interval"])
                doc = fetch()
                live.update(view(doc), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C ends watching; that is not an error


def _run_waves(db, v: dict) -> None:
    from buildctl import render, resolve, runs

    execution_id = resolve.execution(db, v["execution"])["execution_id"]
    _watch(lambda: runs.wave_summary(db, execution_id), render.waves_table, v)


def _run_timeline(db, v: dict) -> None:
    from buildctl import render, resolve, timeline

    execution_id = resolve.execution(db, v["execution"])["execution_id"]
    _watch(lambda: timeline.build(db, execution_id, by=v["by"]), render.timeline_view, v,
           comparable=lambda doc: {k: val for k, val in doc.items() if k != "generated_at"})


def _run_report(db, v: dict) -> None:
    from buildctl import render, report, resolve

    execution_id = resolve.execution(db, v["execution"])["execution_id"]
    page = report.html(report.collect(db, execution_id))
    report.save(v["output"], page)
    render.info(f"wrote {v['output']}: report of run {execution_id} ({len(page.encode()) / 1024:.0f} KiB)")


# --------------------------------------------------------------------------- the declarations

RUN_START = Command(
    ("run", "start"),
    help=("Create a run of a task list, plan its waves, and print the execution id. A second run of the same "
          "list plans only the tasks not completed yet."),
    short_help="Create a run of a task list (or FILE) and plan its waves; print the execution id.",
    params=(
        Param("list_or_file", metavar="LIST_OR_FILE", complete="list",
              help="Task list id (any unique prefix) or name, or a task-list FILE to import first "
                   "(an unchanged file already imported reuses its list, so run numbers continue)."),
        Param("triggered_by", ("--triggered-by",), choices=states.TRIGGERS, default="user",
              help="Who started the run, recorded on it."),
        Param("conflict_threshold", ("--conflict-threshold",), type="float", min=0.0, max=1.0, default=0.6,
              metavar="0..1", help="Two file impacts conflict only when both confidences are at least this."),
    ),
    runner=_run_start,
)

RUN_LIST = Command(
    ("run", "list"),
    help="List execution runs, oldest first.",
    params=(
        Param("list_ref", ("--list",), metavar="LIST", complete="list",
              help="Only runs of this task list (id prefix or name)."),
        Param("status", ("--status",), choices=states.RUN_STATUSES, help="Only runs in this status."),
        JSON,
    ),
    runner=_run_list,
)

RUN_SHOW = Command(
    ("run", "show"),
    help="Show one run: counters, and a line per wave with its tasks' states.",
    params=(EXEC, JSON),
    runner=_run_show,
)

RUN_PAUSE = Command(("run", "pause"), params=(EXEC,), runner=_lifecycle("pause"),
                    help="Pause a pending or running run: no new task is handed out; running tasks finish.")
RUN_RESUME = Command(("run", "resume"), params=(EXEC,), runner=_lifecycle("resume"), help="Resume a paused run.")
RUN_CANCEL = Command(("run", "cancel"), params=(EXEC,), runner=_lifecycle("cancel"),
                     help="Cancel a run: pending tasks become skipped, running agents are told to stop.")

RUN_EXEC = Command(
    ("run", "exec"),
    help=("Run the tasks of a run on this machine with N workers, showing live progress. Exits 0 when the run "
          "completed, 1 when it failed or was cancelled; Ctrl-C, SIGTERM or SIGHUP cancel the run (running tasks "
          "are stopped) and exit 130, 143 or 129."),
    short_help="Run a run's tasks here with N workers and a live view.",
    params=(
        EXEC,
        Param("jobs", ("--jobs", "-j"), type="int", min=1, max=256, default=3, metavar="N",
              help="Worker processes (agents) to run on this machine; the list's max_parallel_agents still caps "
                   "how many tasks run at once."),
        REPO,
        CHECKPOINTS,
        CONFIG,
    ),
    runner=_run_exec,
    database=None,  # opened by the runner, once it has forked the first worker
)

WATCH = Param("watch", ("--watch", "-w"), type="bool", help="Refresh in place until the run ends (Ctrl-C stops watching).")
INTERVAL = duration("interval", ("--interval",), 1.0, "Refresh interval for --watch, e.g. 1s, 500ms.", min=0.01)

WAVES = Command(
    ("waves",),
    help="The wave summary of a run: each wave's status, tasks, completed, failed, skipped, active agents, progress.",
    params=(EXEC, JSON, WATCH, INTERVAL),
    runner=_run_waves,
)

RUN_TIMELINE = Command(
    ("run", "timeline"),
    help=("The run as a Gantt chart: one row per task grouped by wave (or per agent), each attempt a bar coloured by "
          "its outcome, the wave barriers, and the critical path (*) — the chain of dependencies and barriers that "
          "set the run's wall time. Under it: wall time, summed task time, parallel efficiency (busy agent-time / "
          "(wall x max_parallel_agents)), idle time at barriers, and each critical task's share of the wall time."),
    short_help="The run as a Gantt chart with its critical path and efficiency.",
    params=(
        EXEC,
        Param("by", ("--by",), choices=("task", "agent"), default="task", help="One row per task (by wave) or per agent."),
        JSON, WATCH, INTERVAL,
    ),
    runner=_run_timeline,
)

RUN_REPORT = Command(
    ("run", "report"),
    help=("Write one self-contained HTML page of a run (inline CSS, SVG and script; nothing is fetched, so it opens "
          "from an e-mail attachment or a CI artifact): the timeline with a tooltip per attempt, the waves, every task, "
          "the agents' memory and CPU over time, the failures and the self-improvement findings."),
    short_help="Write a self-contained HTML report of a run.",
    params=(
        EXEC,
        Param("output", ("--output", "-o"), metavar="FILE.html", required=True, complete="path",
              help="Where to write the page (replaced atomically)."),
    ),
    runner=_run_report,
)

COMMANDS = (RUN_START, RUN_LIST, RUN_SHOW, RUN_PAUSE, RUN_RESUME, RUN_CANCEL, RUN_EXEC, RUN_TIMELINE, RUN_REPORT,
            WAVES)
