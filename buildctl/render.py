"""All output for people and scripts: Rich tables on a terminal, JSON with stable keys.

Domain functions return plain dicts/lists; commands hand them here. Nothing else
in buildctl prints tables or JSON. Rich is imported lazily so that importing
this module stays cheap.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from buildctl import jsonstrict

#: Colors by status, shared by runs, waves, assignments, agents, tasks and log events.
STATUS_STYLES = {
    "pending": "dim",
    "draft": "dim",
    "ready": "cyan",
    "initializing": "cyan",
    "assigned": "cyan",
    "running": "bold blue",
    "in_progress": "bold blue",
    "idle": "blue",
    "paused": "yellow",
    "completed": "green",
    "applied": "green",
    "failed": "bold red",
    "changed": "bold red",
    "stuck": "bold magenta",
    "cancelled": "yellow",
    "skipped": "yellow",
    "blocked": "yellow",
    "archived": "dim",
    # log event types
    "task_started": "blue",
    "task_completed": "green",
    "task_failed": "bold red",
    "task_skipped": "yellow",
    "error": "bold red",
    "warning": "yellow",
    "info": "",
    "checkpoint_created": "cyan",
    "checkpoint_restored": "magenta",
    "validation_run": "cyan",
    "discovery_recorded": "cyan",
}

#: Columns holding JSON text in the database, decoded into objects in --json output
#: (a stored text that is not strict JSON is shown as it is, as a string).
JSON_TEXT_KEYS = {
    "config", "error_context", "context", "files_snapshot", "metadata",
    "conflict_details", "suggested_tasks", "attempt_1_context", "attempt_2_context",
}


def iso(ts: str | None) -> str | None:
    """'2026-11-27 08:00:00.123' (database clock, UTC) -> '2026-11-27T08:00:00.123Z'."""
    if not ts or not isinstance(ts, str) or len(ts) < 19 or ts[10] not in " T":
        return ts
    return ts[:10] + "T" + ts[11:] + ("" if ts.endswith("Z") else "Z")


def _is_time_key(key: str) -> bool:
    return key.endswith("_at") or key in ("timestamp", "last_heartbeat", "attempt_1_time", "attempt_2_time")


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def jsonable(value: Any) -> Any:
    """Timestamps to ISO-8601 UTC, JSON-text columns to objects, recursively. A float that
    JSON cannot hold (an old row's ``inf`` in a REAL column) becomes the string "Infinity"."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, str) and _is_time_key(k):
                out[k] = iso(v)
            elif isinstance(v, str) and k in JSON_TEXT_KEYS:
                out[k] = jsonstrict.stored(v, v)
            else:
                out[k] = jsonable(v)
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value - value != 0:  # NaN or ±inf
        return _NON_FINITE[repr(value)]
    return value


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (never NaN or Infinity), keys in the order the domain gave them."""
    return jsonstrict.dumps(jsonable(data), what="the output", sort_keys=False, indent=indent, default=str)


def print_json(data: Any) -> None:
    sys.stdout.write(json_text(data) + "\n")
    sys.stdout.flush()


def print_ndjson(row: Any) -> None:
    sys.stdout.write(json_text(row, indent=None) + "\n")
    sys.stdout.flush()


def print_id(value: str) -> None:
    """Commands that create something print only its id on stdout."""
    sys.stdout.write(f"{value}\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """Messages for people go to stderr, so stdout stays parseable."""
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def error_line(message: str) -> None:
    from buildctl.errors import error_line as line

    line(message)


# --------------------------------------------------------------------------- Rich

def console(stderr: bool = False):
    from rich.console import Console

    # Rich honours NO_COLOR itself; a pipe gets plain text.
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def styled_status(status: Any):
    from rich.text import Text

    s = "" if status is None else str(status)
    return Text(s, style=STATUS_STYLES.get(s, ""))


def styled(text: str, status: str):
    """``text`` in the color of ``status`` (e.g. a count colored as failed)."""
    from rich.text import Text

    return Text(text, style=STATUS_STYLES.get(status, ""))


def short_time(ts: str | None) -> str:
    """Drop the milliseconds for tables; JSON keeps them."""
    if not ts:
        return ""
    return ts[:19]


def progress_bar(done: int, total: int, width: int = 20, failed: int = 0):
    """A fixed-width bar: green for completed, red for failed, dim for the rest."""
    from rich.text import Text

    total = max(total or 0, 0)
    if total == 0:
        return Text("─" * width, style="dim")
    good = round(width * min(done, total) / total)
    bad = min(width - good, round(width * min(failed, total) / total))
    bar = Text()
    bar.append("█" * good, style="green")
    bar.append("█" * bad, style="red")
    bar.append("░" * (width - good - bad), style="dim")
    pct = int(100 * (done + failed) / total)
    bar.append(f" {pct:3d}%")
    return bar


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    #: "status" colors the cell by STATUS_STYLES; "time" shortens a timestamp.
    kind: str = "text"
    justify: str = "left"
    fmt: Callable[[dict], Any] | None = None
    max_width: int | None = None
    no_wrap: bool = False


def cell(col: Column, row: dict):
    if col.fmt is not None:
        return col.fmt(row)
    value = row.get(col.key)
    if col.kind == "status":
        return styled_status(value)
    if col.kind == "time":
        return short_time(value)
    if value is None:
        return ""
    return str(value)


def build_table(rows: Iterable[dict], columns: list[Column], title: str | None = None):
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        table.add_column(col.header, justify=col.justify, max_width=col.max_width, no_wrap=col.no_wrap,
                         overflow="ellipsis" if col.no_wrap else "fold")
    for row in rows:
        table.add_row(*[cell(col, row) for col in columns])
    return table


def emit(data: Any, columns: list[Column] | None = None, *, as_json: bool, title: str | None = None,
         empty: str | None = None) -> None:
    """The one renderer: JSON when asked, else a Rich table (or a message when empty)."""
    if as_json:
        print_json(data)
        return
    rows = data if isinstance(data, list) else [data]
    if not rows and empty:
        info(empty)
        return
    console().print(build_table(rows, columns or auto_columns(rows), title))


def auto_columns(rows: list[dict]) -> list[Column]:
    keys = list(rows[0].keys()) if rows else []
    return [Column(k, k, kind="status" if k == "status" else ("time" if _is_time_key(k) else "text")) for k in keys]


def key_values(pairs: list[tuple[str, Any]], title: str | None = None):
    """A two-column 'field  value' grid for show commands."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for k, v in pairs:
        grid.add_row(k, v if not isinstance(v, (int, float)) or isinstance(v, bool) else str(v))
    if title:
        from rich.panel import Panel

        return Panel(grid, title=title, title_align="left", expand=False)
    return grid


def show(*renderables) -> None:
    c = console()
    for r in renderables:
        c.print(r)


def is_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


# --------------------------------------------------------------------------- runs

def waves_table(summary: dict):
    """`buildctl waves`: the B.8 wave summary with a progress bar per wave."""
    title = (f"{summary['execution_id']} · {summary['task_list_name']} #{summary['run_number']} · "
             f"{summary['status']} · {summary['completed_tasks']}/{summary['total_tasks']} done, "
             f"{summary['failed_tasks']} failed, {summary['skipped_tasks']} skipped")
    columns = [
        Column("wave_number", "wave", justify="right"),
        Column("status", "status", kind="status", no_wrap=True),
        Column("task_count", "tasks", justify="right"),
        Column("completed_count", "done", justify="right"),
        Column("failed_count", "failed", justify="right"),
        Column("active_agents", "agents", justify="right"),
        Column("progress", "progress", no_wrap=True, fmt=lambda r: progress_bar(
            r["completed_count"] or 0, r["task_count"], width=14, failed=r["failed_count"] or 0)),
    ]
    return build_table(summary["waves"], columns, title=title)


def _age(seconds) -> str:
    from buildctl.durations import human

    return "" if seconds is None else human(max(0.0, float(seconds)))


def live_view(snapshot: dict):
    """`buildctl run exec`: the waves, then the tasks running now with elapsed time and last heartbeat."""
    from rich.console import Group

    if not snapshot["running"]:
        return waves_table(snapshot["summary"])
    running = build_table(snapshot["running"], [
        Column("display_id", "task"),
        Column("title", "title", max_width=40),
        Column("wave_number", "wave", justify="right"),
        Column("status", "status", kind="status"),
        Column("instance_id", "agent"),
        Column("elapsed_s", "elapsed", justify="right", fmt=lambda r: _age(r["elapsed_s"])),
        Column("heartbeat_age_s", "last heartbeat", justify="right",
               fmt=lambda r: (_age(r["heartbeat_age_s"]) + " ago") if r["heartbeat_age_s"] is not None else "none"),
    ], title=f"running now: {len(snapshot['running'])}")
    return Group(waves_table(snapshot["summary"]), running)


# --------------------------------------------------------------------------- read commands (readspec)

def _human(seconds) -> str:
    from buildctl.durations import human

    return human(seconds)


RUN_COLUMNS = [
    Column("execution_id", "execution"),
    Column("task_list_name", "list", max_width=24),
    Column("run_number", "#", justify="right"),
    Column("status", "status", kind="status"),
    Column("total_tasks", "tasks", justify="right"),
    Column("completed_tasks", "done", justify="right"),
    Column("failed_tasks", "failed", justify="right"),
    Column("skipped_tasks", "skipped", justify="right"),
    Column("started_at", "started (UTC)", kind="time"),
]


def _wave_tasks(w: dict) -> str:
    return " ".join(f"{t['display_id']}" + ("" if t["status"] == "pending" else f":{t['status']}") for t in w["tasks"])


SHOW_WAVE_COLUMNS = [
    Column("wave_number", "wave", justify="right"),
    Column("status", "status", kind="status"),
    Column("task_count", "tasks", justify="right"),
    Column("completed_count", "done", justify="right"),
    Column("failed_count", "failed", justify="right"),
    Column("skipped_count", "skipped", justify="right"),
    Column("active_agents", "agents", justify="right"),
    Column("tasks", "task states", fmt=_wave_tasks, max_width=80),
]


def run_show(data: dict) -> list:
    """`buildctl run show`: the run's fields, then a line per wave."""
    return [
        key_values([
            ("execution", data["execution_id"]),
            ("list", f"{data['task_list_name']} ({data['task_list_id']})"),
            ("run", f"#{data['run_number']} (triggered by {data['triggered_by'] or '?'})"),
            ("status", styled_status(data["status"])),
            ("tasks", f"{data['total_tasks']} total, {data['completed_tasks']} completed, {data['failed_tasks']} failed, "
                      f"{data['skipped_tasks']} skipped, {data['active_tasks']} active, {data['pending_tasks']} pending"),
            ("progress", progress_bar(data["completed_tasks"] + data["skipped_tasks"], data["total_tasks"],
                                      failed=data["failed_tasks"])),
            ("max agents", data["max_parallel_agents"]),
            ("started (UTC)", short_time(data["started_at"])),
            ("ended (UTC)", short_time(data["completed_at"])),
        ]),
        build_table(data["waves"], SHOW_WAVE_COLUMNS),
    ]


AGENT_COLUMNS = [
    Column("instance_id", "Agent"),
    Column("execution_id", "Execution"),
    Column("wave_number", "Wave", justify="right"),
    Column("status", "Status", kind="status"),
    Column("task", "Task"),
    Column("spawned_at", "Spawned", kind="time"),
    Column("last_heartbeat", "Last heartbeat", kind="time"),
    Column("seconds_since_heartbeat", "Silent", justify="right", fmt=lambda r: _human(r.get("seconds_since_heartbeat"))),
]

STALE_COLUMNS = [
    Column("instance_id", "Agent"),
    Column("execution_id", "Execution"),
    Column("status", "Status", kind="status"),
    Column("wave_number", "Wave", justify="right"),
    Column("last_heartbeat", "Last heartbeat", kind="time"),
    Column("spawned_at", "Spawned", kind="time"),
    Column("seconds_since_heartbeat", "Silent", justify="right", fmt=lambda r: _human(r.get("seconds_since_heartbeat"))),
    Column("released", "Released", fmt=lambda r: ", ".join(
        f"#{x['assignment_id']}→{x['outcome']}" for x in r.get("released") or [])),
]

LIST_COLUMNS = [
    Column("id", "list"),
    Column("name", "name"),
    Column("status", "status", kind="status"),
    Column("task_count", "tasks", justify="right"),
    Column("completed_tasks", "done", justify="right"),
    Column("run_count", "runs", justify="right"),
    Column("max_parallel_agents", "agents", justify="right"),
    Column("created_at", "created (UTC)", kind="time"),
]


def log_lines(events: list[dict], console_=None) -> None:
    """`buildctl log tail`: one line per event: time, type (colored), task, agent, message, context."""
    from rich.text import Text

    out = console_ or console()
    for ev in events:
        line = Text()
        line.append(short_time(ev["timestamp"]) + "  ", style="dim")
        line.append(f"{ev['event_type']:<19}", style=STATUS_STYLES.get(ev["event_type"], ""))
        line.append(f" {ev['task'] or '-':<8} {ev['instance_id'] or '-':<15} ")
        line.append(ev["message"])
        if ev["context"]:
            line.append(f"  {ev['context']}", style="dim")
        out.print(line, soft_wrap=True)


def _task_files(row: dict) -> str:
    return "\n".join(f"{f['op']} {f['path']} ({f['confidence']:g})" for f in row["files"])


TASK_COLUMNS = [
    Column("display_id", "task"),
    Column("title", "title", max_width=40),
    Column("status", "status", kind="status"),
    Column("depends_on", "depends on", fmt=lambda r: ", ".join(r["depends_on"])),
    Column("command", "command", max_width=40),
    Column("timeout_s", "timeout", justify="right", fmt=lambda r: "" if r["timeout_s"] is None else f"{r['timeout_s']:g}s"),
    Column("files", "files", fmt=_task_files),
]


def task_list_show(data: dict) -> list:
    """`buildctl tasks show`: the list's fields, then its tasks."""
    return [
        key_values([
            ("list", data["id"]),
            ("name", data["name"]),
            ("description", data["description"] or ""),
            ("status", styled_status(data["status"])),
            ("max agents", data["max_parallel_agents"]),
            ("tasks", len(data["tasks"])),
            ("runs", ", ".join(f"#{r['run_number']} {r['execution_id']} ({r['status']})" for r in data["runs"]) or "none"),
            ("source", data["source_file"] or ""),
            ("created (UTC)", short_time(data["created_at"])),
        ]),
        build_table(data["tasks"], TASK_COLUMNS),
    ]


HEARTBEAT_COLUMNS = [
    Column("timestamp", "Time", kind="time"),
    Column("status", "Status", kind="status"),
    Column("task", "Task"),
    Column("progress_percent", "Progress", justify="right"),
    Column("memory_usage_mb", "MB", justify="right"),
    Column("cpu_percent", "CPU %", justify="right"),
]


def agent_show(data: dict) -> list:
    """`buildctl agent show`: the agent's fields, its held assignments, its last heartbeats."""
    pairs = [(k, styled_status(data[k]) if k == "status" else ("" if data[k] is None else str(data[k])))
             for k in ("instance_id", "execution_id", "agent_type", "status", "wave_number", "task", "spawned_at",
                       "last_heartbeat", "completed_at", "heartbeat_count", "config", "error_context")]
    out = [key_values(pairs, title=f"agent {data['instance_id']}")]
    if data["assignments"]:
        out.append(build_table(data["assignments"], auto_columns(data["assignments"]), title="Assignments"))
    if data["recent_heartbeats"]:
        out.append(build_table(data["recent_heartbeats"], HEARTBEAT_COLUMNS,
                               title=f"Last {len(data['recent_heartbeats'])} heartbeats"))
    return out


FAILURE_COLUMNS = [
    Column("task", "Task"),
    Column("title", "Title", max_width=40),
    Column("failure_count", "Failures", justify="right"),
    Column("sia_triggered", "SIA", fmt=lambda r: "triggered" if r["sia_triggered"] else ""),
    Column("no_progress", "Progress", fmt=lambda r: "no progress" if r["no_progress"] else
           f"error changed {r['error_changes']}×"),
    Column("last_error", "Last error", max_width=60),
]

CHECKPOINT_COLUMNS = [
    Column("id", "id"),
    Column("task", "task"),
    Column("instance_id", "agent"),
    Column("created_at", "created (UTC)", kind="time"),
    Column("kind", "kind"),
    Column("branch", "branch", fmt=lambda r: r["branch"] or ("(detached)" if r["head"] else "")),
    Column("head", "HEAD", fmt=lambda r: (r["head"] or "(no commits)")[:12]),
    Column("file_count", "files", justify="right"),
    Column("message", "message", max_width=50),
]


def gc_report(report):
    """`buildctl gc`: one line per step with its count and status."""
    rows = [{"step": st.name, "count": st.count, "status": "ok" if st.ok else "failed",
             "details": st.error or ", ".join(st.details[:5]) + (f" (+{len(st.details) - 5} more)" if len(st.details) > 5 else "")}
            for st in report.steps]
    return build_table(rows, [
        Column("step", "step"),
        Column("count", "would remove" if report.dry_run else "count", justify="right"),
        Column("status", "status", fmt=lambda r: styled(r["status"], "completed" if r["status"] == "ok" else "failed")),
        Column("details", "details", max_width=80),
    ], title="gc (dry run: nothing changed)" if report.dry_run else "gc")


def doctor_report(checks):
    """`buildctl doctor`: one line per check, its findings when it has any."""
    rows = [{"check": c.name, "status": "ok" if c.ok else f"{len(c.findings)} finding(s)", "ok": c.ok,
             "details": c.description if c.ok else "; ".join(c.findings[:3]) + (" …" if len(c.findings) > 3 else "")}
            for c in checks]
    return build_table(rows, [
        Column("check", "check"),
        Column("status", "status", fmt=lambda r: styled(r["status"], "completed" if r["ok"] else "failed")),
        Column("details", "details", max_width=100),
    ], title="doctor")


def restore_changes(result: dict):
    """`buildctl checkpoint restore --dry-run`: what would change, one path a line."""
    rows = [{"change": c["change"], "path": c["path"],
             "mode": c["mode_checkpoint"] if c["change"] != "removed" else c["mode_now"]} for c in result["changes"]]
    return build_table(rows, [Column("change", "change"), Column("path", "path"), Column("mode", "mode")])
