"""`buildctl run report`: one self-contained HTML page of a run, to attach to an e-mail or keep
as a CI artifact (issue 13).

``collect`` gathers everything the page shows from the database (plain data, never
prints); ``html`` turns it into the page. The page fetches nothing: CSS, SVG and the
few lines of JavaScript (the tooltips) are inline, and its Content-Security-Policy
forbids every request and every script but that one (by its hash), so even text that
slipped through unescaped could neither load nor run anything. Every piece of stored
text (titles, errors, names) is escaped all the same. It prints readably (print CSS:
no tooltips, colours kept, sections not split).
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

from buildctl import durations, execlog, states, timeline
from buildctl.render import percent, plural, short_time

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from buildctl.storage import Database

#: Heartbeats drawn per agent chart at most (every k-th is kept, and the last).
CHART_POINTS = 300
#: Newest error and warning events listed.
PROBLEM_EVENTS = 200

_PROBLEM_TYPES = states.sql_list(("error", "warning"))


def collect(db: Database, execution_id: str) -> dict:
    """Everything the page shows, for a full execution id: the timeline (both groupings),
    the agents with their heartbeats' memory and CPU, the SIA findings, the newest
    error and warning events."""
    from buildctl import __version__

    data = timeline.build_both(db, execution_id)
    with db.read():
        agents = db.query(
            "SELECT instance_id, agent_type, status, spawned_at, completed_at, last_heartbeat, error_context "
            "FROM build_agent_instances WHERE execution_id = ? ORDER BY spawned_at, instance_id", (execution_id,))
        beats = db.query(
            "SELECT h.instance_id, h.timestamp, h.memory_usage_mb, h.cpu_percent, h.progress_percent "
            "FROM agent_heartbeats h JOIN build_agent_instances b ON b.instance_id = h.instance_id "
            "WHERE b.execution_id = ? ORDER BY h.instance_id, h.timestamp, h.id", (execution_id,))
        problems = db.query(
            "SELECT l.timestamp, l.event_type, t.display_id AS task, l.instance_id, l.message "
            "FROM task_execution_log l LEFT JOIN tasks t ON t.id = l.task_id "
            f"WHERE l.execution_id = ? AND l.event_type IN {_PROBLEM_TYPES} "
            "ORDER BY l.timestamp DESC, l.id DESC LIMIT ?", (execution_id, PROBLEM_EVENTS))
    by_agent: dict[str, list[dict]] = {}
    for b in beats:
        by_agent.setdefault(b.pop("instance_id"), []).append(b)
    for a in agents:
        a["error"] = timeline.context_of(a.pop("error_context")).get("message")
        a["heartbeat_count"] = len(by_agent.get(a["instance_id"], []))
        a["heartbeats"] = _thin(by_agent.get(a["instance_id"], []))
    problems.reverse()
    data.update(agents=agents, sia=execlog.failures(db, execution_id), problems=problems, version=__version__)
    return data


def _thin(points: list[dict]) -> list[dict]:
    """At most CHART_POINTS of the points, evenly spread, the last one kept."""
    if len(points) <= CHART_POINTS:
        return points
    step = len(points) / CHART_POINTS
    kept = [points[int(i * step)] for i in range(CHART_POINTS - 1)]
    return kept + [points[-1]]


# --------------------------------------------------------------------------- the page

def _e(value) -> str:
    """Escaped text for an element or a quoted attribute; None is empty."""
    return "" if value is None else escape(str(value), quote=True)


def _token(value) -> str:
    """A CSS class fragment from a stored status: letters, digits and underscores only."""
    return "".join(c for c in str(value or "none") if c.isascii() and (c.isalnum() or c == "_"))


def _human(seconds) -> str:
    if seconds is None:
        return ""
    return durations.human(seconds) if seconds > 0 else "0s"


def _time(ts) -> str:
    return _e(short_time(ts))


_CSS = """
:root { --ok: #2e7d32; --bad: #c62828; --rel: #8e24aa; --run: #1565c0; --unk: #9e9e9e; --ink: #1b1b1b;
        --mute: #666; --line: #ddd; --band: #f5f6f8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; padding: 24px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
code, .mono, td.id { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
.sub { color: var(--mute); margin: 0 0 16px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; background: var(--unk);
         font-size: 12px; vertical-align: middle; }
.s-completed { background: var(--ok); } .s-failed, .s-stuck { background: var(--bad); }
.s-running, .s-in_progress, .s-assigned { background: var(--run); } .s-cancelled, .s-skipped, .s-paused { background: #ef6c00; }
dl.figures { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.figures dt { color: var(--mute); } dl.figures dd { margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid var(--line); }
th { font-weight: 600; background: var(--band); } td.num, th.num { text-align: right; white-space: nowrap; }
td.err { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, Menlo, Consolas, monospace;
         font-size: 12px; max-width: 520px; }
.nowrap { white-space: nowrap; }
svg { display: block; max-width: 100%; height: auto; } svg#timeline { width: 100%; }
svg text { font: 11px system-ui, sans-serif; fill: var(--ink); } svg text.mono { font-family: ui-monospace, Menlo, monospace; }
svg .band { fill: var(--band); } svg .grid { stroke: var(--line); } svg .axis { fill: var(--mute); }
svg .barrier { stroke: var(--ink); stroke-dasharray: 3 3; stroke-width: 1; opacity: .6; }
svg .attempt { stroke: none; } svg .attempt:hover, svg .attempt:focus { stroke: var(--ink); stroke-width: 1.5; outline: none; }
svg .completed { fill: var(--ok); } svg .failed { fill: var(--bad); } svg .released { fill: var(--rel); }
svg .running { fill: var(--run); } svg .unknown { fill: var(--unk); }
svg .critical { stroke: #f9a825; stroke-width: 2; } svg text.critical { font-weight: 700; stroke: none; }
svg .mem { stroke: var(--run); fill: none; stroke-width: 1.5; } svg .cpu { stroke: #ef6c00; fill: none; stroke-width: 1.5; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 12px; height: 12px;
  vertical-align: -1px; margin-right: 4px; border-radius: 2px; }
.legend .completed { background: var(--ok); } .legend .failed { background: var(--bad); }
.legend .released { background: var(--rel); } .legend .running { background: var(--run); }
.legend .critical { border: 2px solid #f9a825; } .legend .barrier { border-left: 2px dashed var(--ink); width: 2px; }
#tip { position: fixed; z-index: 10; max-width: 480px; padding: 6px 9px; border-radius: 4px; background: #222; color: #fff;
       font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; pointer-events: none; }
.empty { color: var(--mute); font-style: italic; }
@media print {
  body { padding: 0; max-width: none; font-size: 10.5pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  #tip { display: none !important; }
  section { break-inside: avoid-page; } tr, svg { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"""

_SCRIPT = """(function () {
  var tip = document.getElementById('tip');
  function place(x, y) {
    var w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(4, Math.min(x + 14, window.innerWidth - w - 4)) + 'px';
    tip.style.top = Math.max(4, Math.min(y + 14, window.innerHeight - h - 4)) + 'px';
  }
  function show(event) {
    var bar = event.currentTarget;
    tip.textContent = bar.getAttribute('data-tip');
    tip.hidden = false;
    if (event.clientX !== undefined) { place(event.clientX, event.clientY); }
    else { var r = bar.getBoundingClientRect(); place(r.left, r.bottom); }
  }
  function hide() { tip.hidden = true; }
  var bars = document.querySelectorAll('.attempt');
  for (var i = 0; i < bars.length; i++) {
    var title = bars[i].querySelector('title');
    if (title) { bars[i].setAttribute('aria-label', title.textContent); title.remove(); }
    bars[i].addEventListener('mouseenter', show);
    bars[i].addEventListener('mousemove', show);
    bars[i].addEventListener('focus', show);
    bars[i].addEventListener('mouseleave', hide);
    bars[i].addEventListener('blur', hide);
  }
})();"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    return (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; img-src data:; "
            "base-uri 'none'; form-action 'none'")


def _tip(seg: dict) -> str:
    lines = [f"{seg['task']} · attempt {seg['attempt']} · {seg['outcome']}",
             f"agent {seg['agent'] or '(none)'}",
             f"{short_time(seg['started_at'])} → {short_time(seg['ended_at'])} UTC ({_human(seg['duration_s'])})"]
    if seg["exit_code"] is not None:
        lines.append(f"exit code {seg['exit_code']}")
    if seg["error"]:
        lines.append(f"error: {seg['error']}")
    return "\n".join(lines)


def _timeline_svg(data: dict) -> str:
    """One row per task under its wave's band, one <rect class="attempt"> per attempt."""
    rows, waves = data["task_rows"], data["waves"]
    wall = data["summary"]["wall_s"] or 0.0
    if not data["started_at"]:
        return '<p class="empty">No attempt has started yet.</p>'
    width, label_w, right = 1000, 150, 20
    chart_w = width - label_w - right
    row_h, head_h, top = 20, 22, 24
    scale = chart_w / wall if wall > 0 else 0.0

    def x(seconds: float) -> float:
        return round(label_w + seconds * scale, 2)

    body, y = [], top
    for w in waves:
        members = [r for r in rows if r["wave_number"] == w["wave_number"]]
        body.append(f'<rect class="band" x="0" y="{y}" width="{width}" height="{head_h}"/>')
        head = f"Wave {w['wave_number']} · {w['status']}"
        if w["duration_s"] is not None:
            head += f" · {_human(w['duration_s'])}"
        if w["barrier_idle_s"]:
            head += f" · idle at its barrier {_human(w['barrier_idle_s'])} agent-time"
        body.append(f'<text x="6" y="{y + 15}">{_e(head)}</text>')
        y += head_h
        for r in members:
            cls = " critical" if r["critical"] else ""
            mark = "★ " if r["critical"] else ""
            body.append(f'<text class="mono{cls}" x="6" y="{y + 14}">{_e(mark + r["task"])}'
                        f'<title>{_e(r["title"])}</title></text>')
            for seg in r["segments"]:
                seg_w = max(1.5, round(seg["duration_s"] * scale, 2))
                crit = " critical" if seg["critical"] else ""
                body.append(
                    f'<rect class="attempt {_token(seg["outcome"])}{crit}" x="{x(seg["offset_s"])}" y="{y + 3}" '
                    f'width="{seg_w}" height="{row_h - 6}" rx="2" tabindex="0" data-task="{_e(seg["task"])}" '
                    f'data-attempt="{_e(seg["attempt"])}" data-outcome="{_e(seg["outcome"])}" data-tip="{_e(_tip(seg))}">'
                    f'<title>{_e(_tip(seg))}</title></rect>')
            if not r["segments"]:
                body.append(f'<text class="axis" x="{label_w + 4}" y="{y + 14}">{_e(r["status"])}</text>')
            y += row_h
    bottom = y
    grid = []
    for i in range(6):
        seconds = wall * i / 5
        gx = x(seconds)
        grid.append(f'<line class="grid" x1="{gx}" x2="{gx}" y1="{top}" y2="{bottom}"/>')
        anchor = "start" if i == 0 else ("end" if i == 5 else "middle")
        grid.append(f'<text class="axis" x="{gx}" y="{top - 8}" text-anchor="{anchor}">{_e(_human(seconds))}</text>')
    for w, nxt in zip(waves, waves[1:]):
        if w["ended_at"] and nxt["started_at"]:
            bx = x(w["offset_s"] + w["duration_s"])
            grid.append(f'<line class="barrier" x1="{bx}" x2="{bx}" y1="{top}" y2="{bottom}">'
                        f'<title>wave {_e(w["wave_number"])} barrier</title></line>')
    height = bottom + 8
    return (f'<svg id="timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'aria-label="Timeline of the run">' + "".join(grid) + "".join(body) + "</svg>")


def _sparkline(points: list[dict]) -> str:
    """Memory (MB) and CPU (%) over the agent's heartbeats, each scaled to its own maximum."""
    if not points:
        return '<span class="empty">no heartbeats</span>'
    stamps = [timeline.parse_time(p["timestamp"]) for p in points]
    known = [(s, p) for s, p in zip(stamps, points) if s is not None]
    if not known:
        return '<span class="empty">no readable heartbeats</span>'
    t0 = known[0][0]
    span = max((known[-1][0] - t0).total_seconds(), 1e-9)
    w, h, pad = 260, 54, 3

    def line(key: str) -> tuple[str, float | None]:
        values = [(s, p[key]) for s, p in known if isinstance(p[key], (int, float)) and not isinstance(p[key], bool)]
        if not values:
            return "", None
        top = max(max(v for _, v in values), 1e-9)
        pts = " ".join(f"{round(pad + (s - t0).total_seconds() / span * (w - 2 * pad), 1)},"
                       f"{round(h - pad - v / top * (h - 2 * pad), 1)}" for s, v in values)
        return pts, max(v for _, v in values)

    mem, mem_max = line("memory_usage_mb")
    cpu, cpu_max = line("cpu_percent")
    if not mem and not cpu:
        return f'<span class="empty">no memory or CPU samples in {plural(len(points), "heartbeat")}</span>'
    parts = [f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="memory and CPU over time">', f'<rect class="band" x="0" y="0" width="{w}" height="{h}"/>']
    if mem:
        parts.append(f'<polyline class="mem" points="{mem}"><title>memory, max {mem_max:g} MB</title></polyline>')
    if cpu:
        parts.append(f'<polyline class="cpu" points="{cpu}"><title>CPU, max {cpu_max:g}%</title></polyline>')
    parts.append("</svg>")
    caption = []
    if mem_max is not None:
        caption.append(f'<span style="color:#1565c0">memory ≤ {mem_max:g} MB</span>')
    if cpu_max is not None:
        caption.append(f'<span style="color:#ef6c00">CPU ≤ {cpu_max:g}%</span>')
    return "".join(parts) + "<div>" + " · ".join(caption) + f" · {plural(len(points), 'heartbeat')} over " \
        f"{_human(span)}</div>"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), empty: str = "none") -> str:
    """A table from cells that are already HTML."""
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell for cell in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>"


def _badge(status) -> str:
    return f'<span class="badge s-{_token(status)}">{_e(status)}</span>'


def html(data: dict) -> str:
    """The page: summary, timeline, waves, tasks, agents, failures and SIA findings, problems."""
    s = data["summary"]
    title = f"{data['task_list_name']} #{data['run_number']} · {data['execution_id']}"
    path = " → ".join(p["task"] for p in data["critical_path"])
    figures = [
        ("execution", f"<code>{_e(data['execution_id'])}</code>"),
        ("task list", f"{_e(data['task_list_name'])} <code>{_e(data['task_list_id'])}</code>"),
        ("time (UTC)", f"{_time(data['started_at'])} → {_time(data['ended_at'])}" if data["started_at"] else "not started"),
        ("wall time", _e(_human(s["wall_s"]))),
        ("task time", _e(f"{_human(s['task_time_s'])} in {plural(s['attempts'], 'attempt')} of "
                         f"{plural(s['tasks_run'], 'task')}"
                         + (f"; retries took {_human(s['retry_time_s'])}" if s["retries"] else ""))),
        ("parallel efficiency", _e(f"{percent(s['efficiency'])} — task time ÷ (wall time × {s['capacity']} agents, the "
                                   f"list's max_parallel_agents); {s['agents_used']} agents ran tasks")),
        ("idle at barriers", _e(f"{_human(s['barrier_idle_s'])} agent-time")),
        ("critical path", _e(f"{path} ({percent(s['critical_share'])} of the wall time)") if path else "none yet"),
    ]
    if data["unreadable_events"]:
        figures.append(("unreadable log rows", _e(data["unreadable_events"])))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_csp())}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e('buildctl · ' + title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(data['task_list_name'])} · run #{_e(data['run_number'])} {_badge(data['status'])}</h1>",
        f'<p class="sub">Report generated {_time(data["generated_at"])} UTC from the database by buildctl '
        f"{_e(data['version'])}.</p></header>",
        '<section id="summary"><h2>Summary</h2><dl class="figures">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in figures) + "</dl></section>",
        '<section id="timeline-section"><h2>Timeline</h2>',
        '<p class="legend"><span><i class="completed"></i>completed</span><span><i class="failed"></i>failed</span>'
        '<span><i class="released"></i>released</span><span><i class="running"></i>running</span>'
        '<span><i class="critical"></i>critical path (★)</span><span><i class="barrier"></i>wave barrier</span></p>',
        _timeline_svg(data),
        "</section>",
        _waves_section(data),
        _tasks_section(data),
        _agents_section(data),
        _failures_section(data),
        _problems_section(data),
        '<div id="tip" role="tooltip" hidden></div>',
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _waves_section(data: dict) -> str:
    rows = [[_td(w["wave_number"], "num"), f"<td>{_badge(w['status'])}</td>", _td(w["task_count"], "num"),
             _td(" ".join(w["tasks"]), "mono"), _td(" ".join(w["skipped"]), "mono"),
             f'<td class="nowrap">{_time(w["started_at"])}</td>', f'<td class="nowrap">{_time(w["ended_at"])}</td>',
             _td(_human(w["duration_s"]), "num"), _td(_human(w["barrier_idle_s"]) if w["barrier_idle_s"] else "", "num")]
            for w in data["waves"]]
    return ('<section id="waves"><h2>Waves</h2>' +
            _table(["wave", "status", "tasks", "task ids", "skipped", "started (UTC)", "barrier (UTC)", "duration",
                    "idle at barrier"], rows, {0, 2, 7, 8}, "no waves") + "</section>")


def _tasks_section(data: dict) -> str:
    rows = []
    for r in data["task_rows"]:
        attempts = "<br>".join(
            _e(f"#{g['attempt']} {g['outcome']} {_human(g['duration_s'])}"
               + (f" exit {g['exit_code']}" if g["exit_code"] is not None else "") + f" on {g['agent'] or '(none)'}")
            for g in r["segments"])
        last_error = next((g["error"] for g in reversed(r["segments"]) if g["error"]), None)
        rows.append([
            _td(("★ " if r["critical"] else "") + r["task"], "mono nowrap"), _td(r["title"]), _td(r["wave_number"], "num"),
            f"<td>{_badge(r['status'])}</td>", f'<td class="mono nowrap">{attempts}</td>',
            _td(_human(r["duration_s"]), "num"), _td(last_error, "err")])
    return ('<section id="tasks"><h2>Tasks</h2>' +
            _table(["task", "title", "wave", "status", "attempts", "duration", "last error"], rows, {2, 5}, "no tasks")
            + "</section>")


def _agents_section(data: dict) -> str:
    lanes = {r["agent"]: r for r in data["agent_rows"]}
    rows = []
    for a in data["agents"]:
        lane = lanes.get(a["instance_id"], {})
        rows.append([
            _td(a["instance_id"], "mono nowrap"), f"<td>{_badge(a['status'])}</td>",
            f'<td class="nowrap">{_time(a["spawned_at"])}</td>', f'<td class="nowrap">{_time(a["completed_at"])}</td>',
            f'<td class="nowrap">{_time(a["last_heartbeat"])}</td>',
            _td(" ".join(lane.get("tasks", [])), "mono"), _td(_human(lane.get("busy_s")), "num"),
            f"<td>{_sparkline(a['heartbeats'])}</td>", _td(a["error"], "err")])
    return ('<section id="agents"><h2>Agents</h2>' +
            _table(["agent", "status", "spawned (UTC)", "ended (UTC)", "last heartbeat (UTC)", "tasks", "busy",
                    "memory and CPU over time", "error"], rows, {6}, "no agents") + "</section>")


def _failures_section(data: dict) -> str:
    failed = [g for r in data["task_rows"] for g in r["segments"] if g["outcome"] in ("failed", "released", "unknown")]
    failed.sort(key=lambda g: (g["started_at"], g["task"]))
    rows = [[_td(g["task"], "mono nowrap"), _td(g["attempt"], "num"), _td(g["outcome"]), _td(g["agent"], "mono"),
             f'<td class="nowrap">{_time(g["ended_at"])}</td>', _td(g["exit_code"], "num"), _td(g["error"], "err")]
            for g in failed]
    sia = [[_td(f["task"], "mono nowrap"), _td(f["title"]), _td(f["failure_count"], "num"),
            _td("no progress (same error each time)" if f["no_progress"] else f"error changed {f['error_changes']}×"),
            _td(f["last_error"], "err")] for f in data["sia"]]
    return ('<section id="failures"><h2>Failures</h2>' +
            _table(["task", "attempt", "outcome", "agent", "ended (UTC)", "exit code", "error"], rows, {1, 5},
                   "no failed attempts") +
            "<h2>SIA findings</h2><p class=\"sub\">Tasks with 3 or more consecutive failed attempts (the "
            "self-improvement agent's trigger).</p>" +
            _table(["task", "title", "failures", "progress", "last error"], sia, {2}, "no task hit the SIA trigger")
            + "</section>")


def _problems_section(data: dict) -> str:
    rows = [[f'<td class="nowrap">{_time(p["timestamp"])}</td>', _td(p["event_type"]), _td(p["task"], "mono"),
             _td(p["instance_id"], "mono"), _td(p["message"], "err")] for p in data["problems"]]
    return ('<section id="problems"><h2>Errors and warnings</h2>' +
            _table(["time (UTC)", "type", "task", "agent", "message"], rows, set(), "no error or warning events")
            + "</section>")


def save(path: str, page: str) -> None:
    """Write the page atomically (a reader never sees half a file)."""
    from buildctl.metrics import write_textfile

    write_textfile(path, page)


__all__ = ["collect", "html", "save"]
