"""`buildctl metrics`: the state of every run, agent and the log in Prometheus's text
exposition format (version 0.0.4), for a scrape or node_exporter's textfile collector
(issue 13).

Every value is a gauge read from the database at that moment (gc deletes log rows,
so even the event counts go down). The per-run task series cover the runs that are
active and each task list's newest run, so their number stays bounded however many
runs the database keeps. Time comes from the database clock.

Stdlib only; never prints.
"""

from __future__ import annotations

import math
import os

from buildctl import states
from buildctl.agents import DEFAULT_STALE_S
from buildctl.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from buildctl.storage import Database

PREFIX = "buildctl_"


def _family(name: str, help_text: str, samples: list[tuple[dict, float]]) -> dict:
    return {"name": PREFIX + name, "type": "gauge", "help": help_text, "samples": samples}


def _by(rows: list[dict], key: str, every: tuple, label: str) -> list[tuple[dict, float]]:
    """One sample per value of ``every`` (0 when absent: a series must not vanish when its count drops to
    nothing), then any stored value outside the list."""
    counts = {r[key]: r["n"] for r in rows}
    values = list(every) + sorted((v for v in counts if v not in every), key=str)
    return [({label: str(v)}, counts.get(v, 0)) for v in values]


def collect(db: Database, stale_after_s: float = DEFAULT_STALE_S) -> list[dict]:
    """The metric families: [{name, type, help, samples: [(labels, value)]}], in a stable order."""
    from buildctl.durations import offset

    if stale_after_s is None or not math.isfinite(stale_after_s) or stale_after_s < 0:
        raise UsageError(f"invalid stale threshold {stale_after_s!r}: must be zero or more seconds")
    live = states.sql_list(states.AGENT_LIVE)
    with db.read():
        runs = db.query("SELECT status, COUNT(*) AS n FROM task_list_execution_runs GROUP BY status")
        tasks = db.query(
            "SELECT r.execution_id, l.name AS task_list, r.run_number, a.status, COUNT(a.id) AS n "
            "FROM task_list_execution_runs r JOIN task_lists_v2 l ON l.id = r.task_list_id "
            "LEFT JOIN parallel_execution_waves w ON w.execution_id = r.execution_id "
            "LEFT JOIN wave_task_assignments a ON a.wave_id = w.wave_id "
            f"WHERE r.status IN {states.sql_list(states.RUN_ACTIVE)} "
            "   OR r.run_number = (SELECT MAX(n.run_number) FROM task_list_execution_runs n "
            "                      WHERE n.task_list_id = r.task_list_id) "
            "GROUP BY r.execution_id, l.name, r.run_number, a.status ORDER BY r.execution_id, a.status")
        agents = db.query("SELECT status, COUNT(*) AS n FROM build_agent_instances GROUP BY status")
        oldest = db.scalar(
            f"SELECT MAX({db.sql.age_s('COALESCE(last_heartbeat, spawned_at)')}) FROM build_agent_instances "
            f"WHERE status IN {live}")
        stale = len(db.named("stale_agents", {"threshold": offset(stale_after_s), "execution_id": None}))
        events = db.query("SELECT event_type, COUNT(*) AS n FROM task_execution_log GROUP BY event_type")
        size = db.size_bytes()

    per_run: dict[str, dict] = {}
    for t in tasks:
        run = per_run.setdefault(t["execution_id"], {"labels": {"execution_id": t["execution_id"],
                                                                "task_list": t["task_list"],
                                                                "run_number": str(t["run_number"])}, "counts": {}})
        if t["status"] is not None:
            run["counts"][t["status"]] = t["n"]
    task_samples = [({**run["labels"], "status": status}, run["counts"].get(status, 0))
                    for run in per_run.values() for status in states.ASSIGNMENT_STATUSES]
    return [
        _family("runs", "Execution runs by status.", _by(runs, "status", states.RUN_STATUSES, "status")),
        _family("run_tasks", "Tasks of each active run and of each task list's newest run, by assignment status.",
                task_samples),
        _family("agents", "Build agents by status.", _by(agents, "status", states.AGENT_STATUSES, "status")),
        _family("oldest_heartbeat_age_seconds",
                "Seconds since the oldest live agent's last heartbeat (its spawn when it never sent one); "
                "0 when no agent is live.", [({}, round(max(0.0, float(oldest or 0.0)), 3))]),
        _family("stale_agents", "Live agents silent for longer than buildctl_stale_threshold_seconds.",
                [({}, stale)]),
        _family("stale_threshold_seconds", "The silence after which a live agent counts as stale.",
                [({}, float(stale_after_s))]),
        _family("log_events", "Events stored in the execution log, by type (gc deletes the events of old runs).",
                _by(events, "event_type", states.EVENT_TYPES, "type")),
        _family("database_size_bytes", "Size of the database.", [({}, size)]),
    ]


# --------------------------------------------------------------------------- the text format

def _label_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def text_format(families: list[dict]) -> str:
    """The families in the text exposition format: HELP and TYPE lines, then one line per sample."""
    lines = []
    for f in families:
        lines.append(f"# HELP {f['name']} " + f["help"].replace("\\", "\\\\").replace("\n", "\\n"))
        lines.append(f"# TYPE {f['name']} {f['type']}")
        for labels, value in f["samples"]:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{f['name']}{{{text}}} {_number(value)}" if text else f"{f['name']} {_number(value)}")
    return "\n".join(lines) + "\n"


def exposition(db: Database, stale_after_s: float = DEFAULT_STALE_S) -> str:
    return text_format(collect(db, stale_after_s))


def write_textfile(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, fsynced, then
    renamed over ``path`` (node_exporter's textfile collector never reads half a file, and reads
    only ``*.prom``, which the temporary name is not). The file gets the mode a shell redirection
    would give it (0666 less the umask)."""
    import tempfile

    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    try:  # the rename itself survives a crash once the folder is synced
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


__all__ = ["collect", "exposition", "text_format", "write_textfile", "PREFIX"]
