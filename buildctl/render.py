"""All output for people and scripts: Rich tables on a terminal, JSON with stable keys.

Domain functions return plain dicts/lists; commands hand them here. Nothing else
in buildctl prints tables or JSON. Rich is imported lazily so that importing
this module stays cheap.
"""

from __future__ import annotations

import math
import os
import sys

from buildctl import jsonstrict

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: typing and dataclasses cost ~10 ms at import
    from typing import Any, Callable, Iterable

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


class Column:
    """One column of a table: ``key`` of each row, under ``header``."""

    __slots__ = ("key", "header", "kind", "justify", "fmt", "max_width", "drop")

    def __init__(self, key: str, header: str, kind: str = "text", justify: str = "left",
                 fmt: Callable[[dict], Any] | None = None, max_width: int | None = None, drop: int | None = None):
        self.key = key
        self.header = header
        #: "text" folds to fit; "status" (colored by STATUS_STYLES), "time" (a shortened
        #: timestamp), "id" and "number" are never broken across lines.
        self.kind = kind
        self.justify = justify
        self.fmt = fmt
        self.max_width = max_width
        #: When the table is wider than the terminal, columns with a ``drop`` rank are left
        #: out, lowest rank first, until it fits (as `gh` does); None: always shown.
        self.drop = drop

    @property
    def whole(self) -> bool:
        return self.kind != "text"


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


#: A text column folds, but a word up to this long (a name, `T-001:completed`) is never
#: broken; a text column is never narrower than its header or MIN_TEXT_WIDTH.
WHOLE_WORD = 20
MIN_TEXT_WIDTH = 8


def _lines(value) -> list[str]:
    return (value.plain if hasattr(value, "plain") else str(value)).split("\n")


def _width(value) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in _lines(value)), default=0)


def _longest_word(value) -> int:
    from rich.cells import cell_len

    return max((cell_len(word) for line in _lines(value) for word in line.split()), default=0)


def _min_width(col: Column, column_cells: list) -> int:
    """The narrowest the column may get without breaking what must stay whole."""
    header = _width(col.header)
    if col.whole:
        return max([header] + [_width(c) for c in column_cells])
    words = max([0] + [_longest_word(c) for c in column_cells])
    return max(header, MIN_TEXT_WIDTH if not column_cells else min(max(words, MIN_TEXT_WIDTH), WHOLE_WORD))


def fit_columns(columns: list[Column], cells: list[list], width: int) -> list[int]:
    """The indexes of the columns to show in ``width`` terminal cells: whole columns keep their
    widest value, text columns may fold down to their longest word; the lowest ``drop`` ranks
    go first until the table fits (a table that cannot fit shows every column it must)."""
    need = [_min_width(col, [row[i] for row in cells]) for i, col in enumerate(columns)]
    shown = list(range(len(columns)))
    while sum(need[i] for i in shown) + 3 * len(shown) + 1 > width:
        droppable = [i for i in shown if columns[i].drop is not None]
        if not droppable:
            break
        shown.remove(min(droppable, key=lambda i: (columns[i].drop, -i)))
    return shown


def build_table(rows: Iterable[dict], columns: list[Column], title: str | None = None, width: int | None = None):
    """A Rich table that fits the terminal without breaking an id, a status or a timestamp."""
    from rich.table import Table

    cells = [[cell(col, row) for col in columns] for row in rows]
    shown = fit_columns(columns, cells, width or console().width)
    table = Table(title=title, title_justify="left", header_style="bold")
    for i in shown:
        col = columns[i]
        least = _min_width(col, [row[i] for row in cells])
        if col.whole:
            table.add_column(col.header, justify=col.justify, no_wrap=True, min_width=least)
        else:
            table.add_column(col.header, justify=col.justify, overflow="fold", min_width=least,
                             max_width=max(col.max_width, least) if col.max_width else None)
    for row in cells:
        table.add_row(*[row[i] for i in shown])
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

    def kind(k: str) -> str:
        if k == "status":
            return "status"
        if _is_time_key(k):
            return "time"
        if k == "task" or k.endswith("id"):
            return "id"
        if all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows):
            return "number"
        return "text"

    return [Column(k, k, kind=kind(k)) for k in keys]


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


def warm_up() -> None:
    """Import what drawing `run exec`'s table needs, and draw one nobody sees (Rich loads
    more on its first drawing), ahead of the moment it is drawn for real: run exec does
    it in a thread while its workers run."""
    import io

    from rich.console import Console

    wave = {"wave_number": 1, "status": "running", "task_count": 2, "completed_count": 1, "failed_count": 0,
            "skipped_count": 0, "active_agents": 1}
    summary = {"execution_id": "ex_", "task_list_name": "", "run_number": 1, "status": "running",
               "completed_tasks": 1, "total_tasks": 2, "failed_tasks": 0, "skipped_tasks": 0, "waves": [wave]}
    Console(file=io.StringIO(), highlight=False, soft_wrap=False).print(
        live_view({"summary": summary, "running": [], "failed": []}))


def show(*renderables) -> None:
    c = console()
    for r in renderables:
        c.print(r)


def document(data: Any, as_json: bool, view: Callable[[Any], list]) -> None:
    """A show command's output: the JSON document, or the renderables ``view(data)`` draws."""
    if as_json:
        print_json(data)
    else:
        show(*view(data))


def is_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


# --------------------------------------------------------------------------- runs

def _wave_columns(*, agents_drop: int | None = None) -> list[Column]:
    """What every table of waves shows: the wave, its status, its counters and its agents."""
    return [
        Column("wave_number", "wave", kind="number", justify="right"),
        Column("status", "status", kind="status"),
        Column("task_count", "tasks", kind="number", justify="right"),
        Column("completed_count", "done", kind="number", justify="right"),
        Column("failed_count", "failed", kind="number", justify="right"),
        Column("skipped_count", "skipped", kind="number", justify="right"),
        Column("active_agents", "agents", kind="number", justify="right", drop=agents_drop),
    ]


def waves_table(summary: dict):
    """`buildctl waves`: each wave's counters and agents, with a progress bar per wave."""
    title = (f"{summary['execution_id']} · {summary['task_list_name']} #{summary['run_number']} · "
             f"{summary['status']} · {summary['completed_tasks']}/{summary['total_tasks']} done, "
             f"{summary['failed_tasks']} failed, {summary['skipped_tasks']} skipped")
    columns = [
        *_wave_columns(),
        Column("progress", "progress", kind="number", drop=1, fmt=lambda r: progress_bar(
            r["completed_count"] or 0, r["task_count"], width=14, failed=r["failed_count"] or 0)),
    ]
    return build_table(summary["waves"], columns, title=title)


def _age(seconds) -> str:
    from buildctl.durations import human

    return "" if seconds is None else human(max(0.0, float(seconds)))


def live_view(snapshot: dict):
    """`buildctl run exec`: the waves, the tasks running now with elapsed time and last
    heartbeat, and every task that failed for good with its last error."""
    from rich.console import Group

    parts = [waves_table(snapshot["summary"])]
    if snapshot["running"]:
        parts.append(_running_table(snapshot["running"]))
    if snapshot.get("failed"):
        parts.append(build_table(snapshot["failed"], [
            Column("display_id", "task", kind="id"),
            Column("wave_number", "wave", kind="number", justify="right", drop=2),
            Column("title", "title", max_width=30, drop=1),
            Column("error", "last error"),
        ], title=f"failed: {len(snapshot['failed'])}"))
    return parts[0] if len(parts) == 1 else Group(*parts)


def _running_table(running: list[dict]):
    return build_table(running, [
        Column("display_id", "task", kind="id"),
        Column("title", "title", max_width=40, drop=2),
        Column("wave_number", "wave", kind="number", justify="right", drop=3),
        Column("status", "status", kind="status"),
        Column("instance_id", "agent", kind="id"),
        Column("elapsed_s", "elapsed", kind="number", justify="right", fmt=lambda r: _age(r["elapsed_s"])),
        Column("heartbeat_age_s", "last heartbeat", kind="number", justify="right", drop=1,
               fmt=lambda r: (_age(r["heartbeat_age_s"]) + " ago") if r["heartbeat_age_s"] is not None else "none"),
    ], title=f"running now: {len(running)}")


# --------------------------------------------------------------------------- read commands (readspec)

def _human(seconds) -> str:
    from buildctl.durations import human

    return human(seconds)


RUN_COLUMNS = [
    Column("execution_id", "execution", kind="id"),
    Column("task_list_name", "list", max_width=24, drop=3),
    Column("run_number", "#", kind="number", justify="right"),
    Column("status", "status", kind="status"),
    Column("total_tasks", "tasks", kind="number", justify="right"),
    Column("completed_tasks", "done", kind="number", justify="right"),
    Column("failed_tasks", "failed", kind="number", justify="right", drop=4),
    Column("skipped_tasks", "skipped", kind="number", justify="right", drop=2),
    Column("started_at", "started (UTC)", kind="time", drop=1),
]


def _wave_tasks(w: dict) -> str:
    return " ".join(f"{t['display_id']}" + ("" if t["status"] == "pending" else f":{t['status']}") for t in w["tasks"])


SHOW_WAVE_COLUMNS = [
    *_wave_columns(agents_drop=1),
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
    Column("instance_id", "Agent", kind="id"),
    Column("execution_id", "Execution", kind="id", drop=3),
    Column("wave_number", "Wave", kind="number", justify="right", drop=4),
    Column("status", "Status", kind="status"),
    Column("task", "Task", kind="id"),
    Column("spawned_at", "Spawned", kind="time", drop=1),
    Column("last_heartbeat", "Last heartbeat", kind="time", drop=2),
    Column("seconds_since_heartbeat", "Silent", kind="number", justify="right",
           fmt=lambda r: _human(r.get("seconds_since_heartbeat"))),
]

STALE_COLUMNS = [
    Column("instance_id", "Agent", kind="id"),
    Column("execution_id", "Execution", kind="id", drop=3),
    Column("status", "Status", kind="status"),
    Column("wave_number", "Wave", kind="number", justify="right", drop=4),
    Column("last_heartbeat", "Last heartbeat", kind="time", drop=2),
    Column("spawned_at", "Spawned", kind="time", drop=1),
    Column("seconds_since_heartbeat", "Silent", kind="number", justify="right",
           fmt=lambda r: _human(r.get("seconds_since_heartbeat"))),
    Column("released", "Released", fmt=lambda r: ", ".join(
        f"#{x['assignment_id']}→{x['outcome']}" for x in r.get("released") or [])),
]

LIST_COLUMNS = [
    Column("id", "list", kind="id"),
    Column("name", "name"),
    Column("status", "status", kind="status"),
    Column("task_count", "tasks", kind="number", justify="right"),
    Column("completed_tasks", "done", kind="number", justify="right"),
    Column("run_count", "runs", kind="number", justify="right", drop=3),
    Column("max_parallel_agents", "agents", kind="number", justify="right", drop=2),
    Column("created_at", "created (UTC)", kind="time", drop=1),
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
    Column("display_id", "task", kind="id"),
    Column("title", "title", max_width=40),
    Column("status", "status", kind="status"),
    Column("depends_on", "depends on", fmt=lambda r: ", ".join(r["depends_on"])),
    Column("command", "command", max_width=40, drop=2),
    Column("timeout_s", "timeout", kind="number", justify="right", drop=1,
           fmt=lambda r: "" if r["timeout_s"] is None else f"{r['timeout_s']:g}s"),
    Column("files", "files", fmt=_task_files, drop=3),
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
    Column("task", "Task", kind="id"),
    Column("progress_percent", "Progress", kind="number", justify="right"),
    Column("memory_usage_mb", "MB", kind="number", justify="right"),
    Column("cpu_percent", "CPU %", kind="number", justify="right"),
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
    Column("task", "Task", kind="id"),
    Column("title", "Title", max_width=40, drop=2),
    Column("failure_count", "Failures", kind="number", justify="right"),
    Column("sia_triggered", "SIA", kind="id", drop=1, fmt=lambda r: "triggered" if r["sia_triggered"] else ""),
    Column("no_progress", "Progress", fmt=lambda r: "no progress" if r["no_progress"] else
           f"error changed {r['error_changes']}×"),
    Column("last_error", "Last error", max_width=60),
]

CHECKPOINT_COLUMNS = [
    Column("id", "id", kind="id"),
    Column("task", "task", kind="id"),
    Column("instance_id", "agent", kind="id", drop=3),
    Column("created_at", "created (UTC)", kind="time", drop=4),
    Column("kind", "kind", kind="id", drop=5),
    Column("branch", "branch", fmt=lambda r: r["branch"] or ("(detached)" if r["head"] else ""), drop=1),
    Column("head", "HEAD", kind="id", drop=2, fmt=lambda r: (r["head"] or "(no commits)")[:12]),
    Column("file_count", "files", kind="number", justify="right"),
    Column("message", "message", max_width=50),
]


def gc_report(report):
    """`buildctl gc`: one line per step with its count and status."""
    rows = [{"step": st.name, "count": st.count, "status": "ok" if st.ok else "failed",
             "details": st.error or ", ".join(st.details[:5]) + (f" (+{len(st.details) - 5} more)" if len(st.details) > 5 else "")}
            for st in report.steps]
    return build_table(rows, [
        Column("step", "step", kind="id"),
        Column("count", "would remove" if report.dry_run else "count", kind="number", justify="right"),
        Column("status", "status", kind="status", fmt=lambda r: styled(r["status"], "completed" if r["status"] == "ok" else "failed")),
        Column("details", "details", max_width=80),
    ], title="gc (dry run: nothing changed)" if report.dry_run else "gc")


def doctor_report(checks):
    """`buildctl doctor`: one line per check, its findings when it has any."""
    rows = [{"check": c.name, "status": "ok" if c.ok else f"{len(c.findings)} finding(s)", "ok": c.ok,
             "details": c.description if c.ok else "; ".join(c.findings[:3]) + (" …" if len(c.findings) > 3 else "")}
            for c in checks]
    return build_table(rows, [
        Column("check", "check", kind="id"),
        Column("status", "status", kind="status", fmt=lambda r: styled(r["status"], "completed" if r["ok"] else "failed")),
        Column("details", "details", max_width=100),
    ], title="doctor")


MIGRATION_COLUMNS = [
    Column("name", "migration", kind="id"),
    Column("state", "state", kind="status"),
    Column("applied_at", "applied at (UTC)", kind="time"),
]


def restore_changes(result: dict):
    """`buildctl checkpoint restore --dry-run`: what would change, one path a line."""
    rows = [{"change": c["change"], "path": c["path"],
             "mode": c["mode_checkpoint"] if c["change"] != "removed" else c["mode_now"]} for c in result["changes"]]
    return build_table(rows, [Column("change", "change", kind="id"), Column("path", "path"),
                              Column("mode", "mode", kind="id")])


# --------------------------------------------------------------------------- run timeline (issue 13)

#: One character per attempt outcome, so the chart reads without colour too (NO_COLOR, a pipe).
OUTCOME_MARKS = {"completed": ("█", "green"), "failed": ("▓", "red"), "released": ("▒", "magenta"),
                 "running": ("░", "bold blue"), "unknown": ("▒", "dim")}
BARRIER_MARK = "│"
CRITICAL_MARK = "*"
#: The critical path's table lists at most this many tasks (its longest).
CRITICAL_ROWS = 15


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


class _Gantt:
    """The bars of `run timeline`, drawn at whatever width the console has when it prints
    (so a live view re-scales with the terminal): one line per task (under its wave's
    header) or per agent, one segment per attempt, wave barriers in the empty cells."""

    def __init__(self, data: dict):
        self.data = data

    def _columns(self, width: int) -> tuple[int, int, int, int, int]:
        rows = self.data["rows"]
        by_task = self.data["by"] == "task"
        labels = [(r["task"] if by_task else (r["agent"] or "(no agent)")) for r in rows]
        label_w = min(max([len(x) for x in labels] + [4]), 16)
        status_w = max([len(r["status"] or "") for r in rows] + [1])
        count_w = max(len(f"×{r['attempts']}") for r in rows) if any(r["attempts"] > 1 for r in rows) else 0
        dur_w = max([len(_human(r["busy_s"] if not by_task else r["duration_s"] or 0)) for r in rows] + [2])
        fixed = 2 + label_w + 1 + status_w + 1 + 1 + (count_w + 1 if count_w else 0) + dur_w
        return label_w, status_w, count_w, dur_w, max(10, width - fixed)

    def _bar(self, segments: list[dict], cells: int, scale: float, barriers: list[int], by_task: bool):
        from rich.text import Text

        chars = [(" ", "")] * cells
        for b in barriers:
            chars[b] = (BARRIER_MARK, "dim")
        for seg in sorted(segments, key=lambda s: (s["offset_s"], s["duration_s"])):
            first = min(cells - 1, int(seg["offset_s"] * scale))
            # Every attempt gets at least its first cell, however short.
            last = max(first + 1, min(cells, math.ceil((seg["offset_s"] + seg["duration_s"]) * scale)))
            mark, style = OUTCOME_MARKS.get(seg["outcome"], OUTCOME_MARKS["unknown"])
            if seg["critical"]:
                style += " underline"
            label = "" if by_task else seg["task"]
            span = last - first
            for i in range(first, last):
                k = i - first
                # An agent's bar names each task it ran when the segment is wide enough.
                ch = label[k - 1] if label and span >= len(label) + 2 and 1 <= k <= len(label) else mark
                chars[i] = (ch, style + (" reverse" if ch != mark else ""))
        text = Text()
        run_chars, run_style = [], None
        for ch, style in chars:  # one append per run of a style: a row of cells costs a few calls, not one each
            if style != run_style and run_chars:
                text.append("".join(run_chars), style=run_style)
                run_chars = []
            run_chars.append(ch)
            run_style = style
        if run_chars:
            text.append("".join(run_chars), style=run_style)
        return text

    def __rich_console__(self, console, options):
        from rich.text import Text

        data = self.data
        wall = data["summary"]["wall_s"]
        if not data["started_at"]:
            yield Text("no attempt has started yet", style="dim")
            return
        by_task = data["by"] == "task"
        label_w, status_w, count_w, dur_w, cells = self._columns(options.max_width)
        scale = cells / wall if wall > 0 else 0.0
        barriers = []
        waves = data["waves"]
        for w, nxt in zip(waves, waves[1:]):
            if w["ended_at"] and nxt["started_at"]:
                barriers.append(min(cells - 1, int((w["offset_s"] + w["duration_s"]) * scale)))
        prefix = 2 + label_w + 1 + status_w + 1

        def line(mark: str, label: str, status: str | None, bar, count: str, seconds: float | None):
            text = Text()
            text.append(f"{mark} ", style="bold")
            text.append(f"{_clip(label, label_w):<{label_w}} ", style="bold" if mark.strip() else "")
            text.append(f"{status or '':<{status_w}} ", style=STATUS_STYLES.get(status or "", ""))
            text.append_text(bar)
            if count_w:
                text.append(f" {count:>{count_w}}")
            text.append(f" {_human(seconds) if seconds is not None else '':>{dur_w}}")
            return text

        current_wave = None
        for r in data["rows"]:
            if by_task and r["wave_number"] != current_wave:
                current_wave = r["wave_number"]
                yield self._wave_header(next(w for w in waves if w["wave_number"] == current_wave))
            label = r["task"] if by_task else (r["agent"] or "(no agent)")
            mark = CRITICAL_MARK if by_task and r["critical"] else " "
            yield line(mark, label, r["status"], self._bar(r["segments"], cells, scale, barriers, by_task),
                       f"×{r['attempts']}" if r["attempts"] > 1 else "", r["duration_s"] if by_task else r["busy_s"])
        axis = Text(" " * prefix, style="dim")
        end = _human(wall)
        axis.append("0s" + " " * max(1, cells - 2 - len(end)) + end, style="dim")
        yield axis

    @staticmethod
    def _wave_header(w: dict):
        from rich.text import Text

        text = Text()
        text.append(f"wave {w['wave_number']}", style="bold")
        text.append(" ")
        text.append(w["status"], style=STATUS_STYLES.get(w["status"], ""))
        if w["duration_s"] is not None:
            text.append(f" · {_human(w['duration_s'])}")
        if w["barrier_idle_s"]:
            text.append(f" · idle at its barrier {_human(w['barrier_idle_s'])} agent-time")
        if w["skipped"]:
            text.append(f" · skipped: {' '.join(w['skipped'])}", style=STATUS_STYLES["skipped"])
        return text


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 attempt', '3 attempts', '2 retries'."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def percent(fraction: float | None) -> str:
    """0.734 -> '73%'; None (no wall time yet) -> 'n/a'."""
    return "n/a" if fraction is None else f"{fraction * 100:.0f}%"


def timeline_view(data: dict):
    """`buildctl run timeline`: the Gantt chart, its legend, then the figures and the critical path."""
    from rich.console import Group
    from rich.text import Text

    from buildctl.states import RUN_ACTIVE

    s = data["summary"]
    title = Text()
    title.append(data["execution_id"], style="bold")
    title.append(f" · {data['task_list_name']} #{data['run_number']} · ")
    title.append(data["status"], style=STATUS_STYLES.get(data["status"], ""))
    title.append(f" · by {data['by']}")
    legend = Text(style="dim")
    for outcome in ("completed", "failed", "released", "running"):
        mark, style = OUTCOME_MARKS[outcome]
        legend.append(mark, style=style)
        legend.append(f" {outcome}  ")
    legend.append(f"{BARRIER_MARK} wave barrier")
    if data["by"] == "task":
        legend.append(f"  {CRITICAL_MARK} critical path")

    idle_by_wave = ", ".join(f"wave {w['wave_number']} {_human(w['barrier_idle_s'])}"
                             for w in data["waves"] if w["barrier_idle_s"])
    path = data["critical_path"]
    if not data["started_at"]:
        pairs = [("tasks", f"{plural(s['tasks'], 'task')} in {plural(s['waves'], 'wave')}; none has started")]
    else:
        pairs = [
            ("time (UTC)", f"{short_time(data['started_at'])} → {short_time(data['ended_at'])}"),
            ("wall time", _human(s["wall_s"]) + (f" (the run is {data['status']})"
                                                 if data["status"] in RUN_ACTIVE else "")),
            ("task time", f"{_human(s['task_time_s'])} in {plural(s['attempts'], 'attempt')} of "
                          f"{plural(s['tasks_run'], 'task')}"
             + (f"; {plural(s['retries'], 'retry', 'retries')} took {_human(s['retry_time_s'])}" if s["retries"] else "")),
            ("efficiency", f"{percent(s['efficiency'])} of wall × {plural(s['capacity'], 'agent')} "
                           f"(max_parallel_agents); {s['agents_used']} ran tasks"),
            ("barrier idle", f"{_human(s['barrier_idle_s'])} agent-time" + (f" ({idle_by_wave})" if idle_by_wave else "")),
            ("critical path", _chain([p["task"] for p in path]) + f" ({plural(len(path), 'task')}, "
                              f"{percent(s['critical_share'])} of wall)"),
        ]
    parts = [title, _Gantt(data)] + ([legend] if data["started_at"] else []) + [Text(), key_values(pairs)]
    if path:
        # A long path (a wide wave queued on few agents) lists its longest tasks; --json has them all.
        longest = set(sorted(range(len(path)), key=lambda i: -path[i]["duration_s"])[:CRITICAL_ROWS])
        shown = [p for i, p in enumerate(path) if i in longest]
        parts.append(build_table(shown, [
            Column("task", "critical task", kind="id"),
            Column("via", "after", kind="id", fmt=lambda r: r["via"] or "start"),
            Column("wave_number", "wave", kind="number", justify="right"),
            Column("duration_s", "duration", kind="number", justify="right", fmt=lambda r: _human(r["duration_s"])),
            Column("share", "share", kind="number", justify="right", fmt=lambda r: percent(r["share"])),
            Column("wait_s", "waited", kind="number", justify="right",
                   fmt=lambda r: _human(r["wait_s"]) if r["wait_s"] else ""),
            Column("title", "title", max_width=30),
        ], title=None if len(shown) == len(path) else f"the {len(shown)} longest of the path's {len(path)} tasks"))
    return Group(*parts)


def _chain(ids: list[str], keep: int = 4) -> str:
    """'T-001 → T-003 → T-005'; a long chain keeps its ends: 'T-001 → T-002 → … → T-099 → T-100'."""
    if len(ids) > 2 * keep:
        ids = ids[:keep // 2] + ["…"] + ids[-(keep // 2):]
    return " → ".join(ids)
