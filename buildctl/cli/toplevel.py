"""Top-level commands that belong to no group: gc, doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from buildctl import durations, exitcodes, render
from buildctl.cli.common import JsonOption, open_db


def _duration(value: str, what: str) -> float:
    return durations.parse(value, what=what)


def gc(
    keep_heartbeats: Annotated[str, typer.Option("--keep-heartbeats", metavar="DURATION", help="Delete heartbeats older than this (90s, 15m, 24h, 30d).")] = "24h",
    stale_after: Annotated[str, typer.Option("--stale-after", metavar="DURATION", help="Mark agents silent for longer than this `stuck` and release their tasks.")] = "60s",
    keep_logs: Annotated[str, typer.Option("--keep-logs", metavar="DURATION", help="Delete the execution log of runs that ended longer ago than this.")] = "30d",
    keep_checkpoints: Annotated[str, typer.Option("--keep-checkpoints", metavar="DURATION", help="Delete checkpoints (rows and git refs) of ended runs older than this.")] = "7d",
    repo: Annotated[str | None, typer.Option("--repo", metavar="DIR", help="Git repository holding the checkpoint refs (default: the one recorded with each checkpoint).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1_000_000, help="Rows deleted per transaction; a concurrent writer waits at most one batch.")] = 2000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when every step succeeded (for cron mail).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Clean up for cron: old heartbeats, stale agents, old logs and checkpoints, then optimize.

    Never touches a pending, running or paused run. Exits non-zero when any step failed.
    """
    from buildctl import gc as gcmod

    limits = dict(
        keep_heartbeats_s=_duration(keep_heartbeats, "--keep-heartbeats"),
        stale_after_s=_duration(stale_after, "--stale-after"),
        keep_logs_s=_duration(keep_logs, "--keep-logs"),
        keep_checkpoints_s=_duration(keep_checkpoints, "--keep-checkpoints"),
    )
    with open_db() as db:
        try:
            with gcmod.gc_lock(db):
                report = gcmod.collect(db, repo=repo, batch_size=batch_size, dry_run=dry_run, **limits)
        except gcmod.GcBusy as busy:
            if not quiet:
                render.info(f"another gc is running (pid {busy}); nothing to do")
            return
    if as_json:
        render.print_json(report.as_dict())
    elif not (quiet and report.ok):
        rows = [{"step": s.name, "count": s.count, "status": "ok" if s.ok else "failed",
                 "details": s.error or ", ".join(s.details[:5]) + (f" (+{len(s.details) - 5} more)" if len(s.details) > 5 else "")}
                for s in report.steps]
        title = "gc (dry run: nothing changed)" if dry_run else "gc"
        render.emit(rows, [
            render.Column("step", "step"),
            render.Column("count", "would remove" if dry_run else "count", justify="right"),
            render.Column("status", "status", fmt=lambda r: render.styled(r["status"], "completed" if r["status"] == "ok" else "failed")),
            render.Column("details", "details", max_width=80),
        ], as_json=False, title=title)
    for s in report.steps:
        if not s.ok:
            render.error_line(f"gc step {s.name} failed: {s.error}")
    if not report.ok:
        raise typer.Exit(exitcodes.FAILED)


def doctor(
    stale_after: Annotated[str, typer.Option("--stale-after", metavar="DURATION", help="Report agents silent for longer than this.")] = "60s",
    as_json: JsonOption = False,
) -> None:
    """Check the database: integrity, foreign keys, migrations, counters vs recounts, orphans, stale agents.

    Exits 1 when anything is found, 0 on a healthy database.
    """
    from buildctl import doctor as doc

    threshold = _duration(stale_after, "--stale-after")
    with open_db(check_schema=False) as db:
        checks = doc.diagnose(db, stale_after_s=threshold)
    if as_json:
        render.print_json({"ok": all(c.ok for c in checks), "checks": doc.as_dicts(checks)})
    else:
        rows = [{"check": c.name, "status": "ok" if c.ok else f"{len(c.findings)} finding(s)", "ok": c.ok,
                 "details": c.description if c.ok else "; ".join(c.findings[:3]) + (" …" if len(c.findings) > 3 else "")}
                for c in checks]
        render.emit(rows, [
            render.Column("check", "check"),
            render.Column("status", "status", fmt=lambda r: render.styled(r["status"], "completed" if r["ok"] else "failed")),
            render.Column("details", "details", max_width=100),
        ], as_json=False, title="doctor")
    if not all(c.ok for c in checks):
        raise typer.Exit(exitcodes.FAILED)


def register(root: typer.Typer) -> None:
    root.command("gc")(gc)
    root.command("doctor")(doctor)
