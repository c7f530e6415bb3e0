"""Top-level commands that look after the database: migrate, gc, doctor, metrics."""

from __future__ import annotations

from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import JSON, duration


def _run_migrate(location, v: dict) -> None:
    """Create or upgrade the database; --status and --dry-run change nothing (not even create the file)."""
    from buildctl import migrations, render, storage
    from buildctl.errors import NeedsMigration

    if not (v["dry_run"] or v["status"]):
        with storage.connect(location, create=True, check_schema=False) as db:
            applied = migrations.apply(db)
            if v["as_json"]:
                render.print_json({"database": db.display_location, "applied": applied})
            elif applied:
                render.info(f"applied {len(applied)} migration(s) to {db.display_location}: {', '.join(applied)}")
            else:
                render.info(f"nothing to migrate: {db.display_location} is up to date")
        return
    try:
        db = storage.connect(location, check_schema=False)
    except NeedsMigration:
        db = None  # no database yet: everything is pending
    try:
        states = migrations.status(db)
    finally:
        if db is not None:
            db.close()
    if v["status"]:
        rows = [{"name": s.name, "state": s.state, "applied_at": s.applied_at, "sha256": s.sha256} for s in states]
        render.emit(rows, render.MIGRATION_COLUMNS, as_json=v["as_json"])
        migrations.check_unchanged(states)
        return
    migrations.check_unchanged(states)
    pending = [s for s in states if s.state == "pending"]
    if v["as_json"]:
        render.print_json([{"name": s.name, "sql": s.sql} for s in pending])
        return
    if not pending:
        render.info("nothing to migrate: the database is up to date")
    for s in pending:
        print(f"-- {s.name}\n{s.sql.rstrip()}\n")


def _run_gc(db, v: dict) -> int:
    from buildctl import exitcodes, render
    from buildctl import gc as gcmod

    try:
        with gcmod.gc_lock(db, dry_run=v["dry_run"]):
            report = gcmod.collect(db, repo=v["repo"], batch_size=v["batch_size"] or gcmod.DEFAULT_BATCH_SIZE,
                                   dry_run=v["dry_run"],
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

    fixed = None
    if v["fix"]:
        from buildctl import agents, storage

        storage.ensure_current(db)  # repairs need the whole schema
        fixed = agents.recover(db, v["stale_after"])
    checks = doctor.diagnose(db, stale_after_s=v["stale_after"])
    ok = all(c.ok for c in checks)
    if v["as_json"]:
        render.print_json({"ok": ok, "checks": doctor.as_dicts(checks),
                           **({"fixed": fixed} if fixed is not None else {})})
    else:
        if fixed is not None:
            render.info(f"fixed: {len(fixed['marked'])} stale agent(s) marked stuck, "
                        f"{len(fixed['released'])} task(s) held by ended agents handed back")
        render.show(render.doctor_report(checks))
    return exitcodes.OK if ok else exitcodes.FAILED


def _run_metrics(db, v: dict) -> str | None:
    from buildctl import metrics

    text = metrics.exposition(db, stale_after_s=v["stale_after"])
    if v["textfile"] is None:
        return text.rstrip("\n")
    metrics.write_textfile(v["textfile"], text)
    return None


MIGRATE = Command(
    ("migrate",),
    help="Create the database, or bring it up to the newest schema (each file in its own transaction).",
    params=(
        Param("dry_run", ("--dry-run",), type="bool", help="Print the SQL that would run; change nothing."),
        Param("status", ("--status",), type="bool",
              help="List applied and pending migrations with their dates; change nothing."),
        JSON,
    ),
    runner=_run_migrate,
    database=None,
)

GC = Command(
    ("gc",),
    help=("Clean up for cron: old heartbeats, stale agents, old logs and checkpoints, then optimize. Never touches "
          "the log or the checkpoints of a pending, running or paused run. Deletes in short batches, so agents "
          "writing meanwhile wait at most one batch. Exits non-zero when any step failed."),
    short_help="Clean up for cron: heartbeats, stale agents, old logs and checkpoints.",
    params=(
        duration("keep_heartbeats", ("--keep-heartbeats",), 86400.0,
                 "Delete heartbeats older than this (90s, 15m, 24h, 30d), whatever their run's status."),
        duration("stale_after", ("--stale-after",), 60.0,
                 "Mark agents silent for longer than this `stuck` and release their tasks."),
        duration("keep_logs", ("--keep-logs",), 2592000.0,
                 "Delete the execution log of runs that ended longer ago than this."),
        duration("keep_checkpoints", ("--keep-checkpoints",), 604800.0,
                 "Delete checkpoints (rows and git refs) of ended runs older than this."),
        Param("repo", ("--repo",), metavar="DIR", complete="path",
              help="Git repository holding the checkpoint refs (default: the one recorded with each checkpoint)."),
        Param("batch_size", ("--batch-size",), type="int", min=1, max=1_000_000, metavar="N",
              help="Rows deleted per transaction (default 10,000); a concurrent writer waits at most one batch."),
        Param("dry_run", ("--dry-run",), type="bool", help="Report what would be done; change nothing."),
        Param("quiet", ("--quiet", "-q"), type="bool", help="Print nothing when every step succeeded (for cron mail)."),
        JSON,
    ),
    runner=_run_gc,
)

DOCTOR = Command(
    ("doctor",),
    help=("Check the database: integrity, foreign keys, migrations, counters against recounts, assignments held by "
          "agents that have ended, stale agents, stored JSON that is not strict. Exits 1 when anything is found, 0 on "
          "a healthy database. Only reads, unless --fix."),
    short_help="Check the database's invariants; exit 1 on any finding.",
    params=(duration("stale_after", ("--stale-after",), 60.0, "Report agents silent for longer than this."),
            Param("fix", ("--fix",), type="bool",
                  help="First repair what can be repaired safely, as gc and idle workers do: mark stale agents "
                       "stuck and hand back the tasks held by agents that have ended (a retry, or failed when no "
                       "retry is left)."),
            JSON),
    runner=_run_doctor,
    database="any",
)

METRICS = Command(
    ("metrics",),
    help=("Print the Prometheus text exposition of runs by status, tasks by run and status, agents by status, the "
          "age of the oldest live agent's heartbeat, stale agents, log events by type and the database size. "
          "With --textfile, write it atomically (temp file + rename) for node_exporter's textfile collector."),
    short_help="Prometheus metrics: runs, tasks, agents, staleness, database size.",
    params=(
        Param("textfile", ("--textfile",), metavar="PATH", complete="path",
              help="Write to this file (atomically) instead of stdout, e.g. "
                   "/var/lib/node_exporter/textfile/buildctl.prom."),
        duration("stale_after", ("--stale-after",), 60.0, "Count agents silent for longer than this as stale."),
    ),
    runner=_run_metrics,
)

COMMANDS = (MIGRATE, GC, DOCTOR, METRICS)
