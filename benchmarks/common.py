"""Helpers shared by the benchmarks: the tools under test, timing, statistics, seeding.

Every benchmark module exposes ``run(quick: bool) -> list[dict]``; each dict has the keys
``name, value, unit, baseline, ratio, notes`` and, where known, ``lo``/``hi`` (the p10–p90
spread, or min–max when there are few samples), ``n`` (samples), ``baseline_value``,
``budget`` (text) and ``met`` (True/False/None). ``result()`` builds one.

Stdlib only; buildctl itself is imported only by the modules that call its domain code.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # a source checkout works even before `pip install -e .`
    sys.path.insert(1, str(REPO))


# --------------------------------------------------------------------------- the tools under test

def python() -> str:
    """The interpreter buildctl is installed with (the harness must run under it)."""
    return sys.executable


def buildctl() -> list[str]:
    """The installed console script next to this interpreter, as scripts call it."""
    exe = Path(sys.executable).with_name("buildctl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "buildctl"]


def sqlite_utils() -> str | None:
    exe = Path(sys.executable).with_name("sqlite-utils")
    return str(exe) if exe.exists() else None


def env(db: Path | str | None = None, **extra: str) -> dict:
    """The environment of every measured process: bytecode on, no debug, no colors."""
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "BUILDCTL_DEBUG")}
    out["NO_COLOR"] = "1"
    out["COLUMNS"] = "120"
    if db is not None:
        out["BUILDCTL_DB"] = str(db)
    out.update(extra)
    return out


def migrate(db: Path | str) -> None:
    p = subprocess.run(buildctl() + ["migrate"], env=env(db), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"buildctl migrate failed: {p.stderr.strip()}")


def connect(db: Path | str) -> sqlite3.Connection:
    """A raw connection for seeding and checking (autocommit; we BEGIN ourselves)."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=60)
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


def copy_db(src: Path, dst: Path) -> None:
    """Copy a closed, checkpointed database file (and nothing of its WAL), flushed to disk:
    otherwise the first fsync of the measured process (a checkpoint's) writes the whole
    copy back (0.6 s for the 1.4 GB fleet) and is counted against it."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of every CPU since boot (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)


def settle(max_wait_s: float = 30.0, idle_share: float = 0.9, window_s: float = 0.5) -> dict:
    """Before a group is timed: write back what earlier groups left dirty (os.sync), then
    wait until the CPUs have been idle for ``idle_share`` of a ``window_s`` window, or
    ``max_wait_s`` passed. Without it the executor group ran straight after 32 writers
    and a deleted 1.4 GB fleet, against their leftovers (load 12; xargs itself 20 % slower).
    Returns what it waited and the last window's idle share, for the record."""
    started = time.monotonic()
    os.sync()
    idle = None
    while True:
        before = _cpu_times()
        time.sleep(window_s)
        after = _cpu_times()
        if before is None or after is None or after[1] == before[1]:
            break
        idle = (after[0] - before[0]) / (after[1] - before[1])
        if idle >= idle_share or time.monotonic() - started >= max_wait_s:
            break
    return {"waited_s": round(time.monotonic() - started, 1), "idle": None if idle is None else round(idle, 2)}


def checkpoint_and_close(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


# --------------------------------------------------------------------------- timing

def run_timed(argv: list[str], env_: dict, *, check: bool = True, stdin=subprocess.DEVNULL,
              cwd: str | Path | None = None, timeout: float | None = None) -> float:
    """Wall time of one process, in ms."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env_, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
                       timeout=timeout)
    ms = (time.perf_counter() - t0) * 1000.0
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace').strip()[-800:]}")
    return ms


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def spread(xs: list[float]) -> tuple[float, float, str]:
    """(lo, hi, label): p10–p90 with 10 or more samples, else min–max."""
    if len(xs) >= 10:
        return pct(xs, 0.1), pct(xs, 0.9), "p10-p90"
    return min(xs), max(xs), "min-max"


def result(name: str, value: float, unit: str, *, baseline: str, baseline_value: float | None = None,
           ratio: float | None = None, samples: list[float] | None = None, notes: str = "",
           budget: str | None = None, met: bool | None = None, figure: str | None = None,
           digits: int = 2, **extra) -> dict:
    """One result row in the harness contract (see the module docstring)."""
    if ratio is None and baseline_value:
        ratio = value / baseline_value
    row = {"name": name, "value": round(value, digits) if isinstance(value, float) else value, "unit": unit,
           "baseline": baseline, "ratio": None if ratio is None else round(ratio, 3), "notes": notes}
    if baseline_value is not None:
        row["baseline_value"] = round(baseline_value, digits) if isinstance(baseline_value, float) else baseline_value
    if samples:
        lo, hi, label = spread(samples)
        row.update(lo=round(lo, digits), hi=round(hi, digits), n=len(samples), spread=label)
    if budget is not None:
        row["budget"] = budget
    if met is not None:
        row["met"] = bool(met)
    if figure is not None:
        row["figure"] = figure
    row.update(extra)
    return row


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def time_round_robin(cases: dict, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call each zero-argument function (returning ms) once per round, in turn, so that a noisy
    neighbour slows them all alike; the warm-up rounds are dropped."""
    out: dict[str, list[float]] = {k: [] for k in cases}
    for i in range(warmup + rounds):
        for name, fn in cases.items():
            ms = fn()
            if i >= warmup:
                out[name].append(ms)
    return out


def in_process_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


# --------------------------------------------------------------------------- shared workspace

class Workspace:
    """A temporary folder for one harness run, with databases seeded once and shared.

    Benchmarks that need the same large database (reads, memory) ask for it here, so
    that the harness seeds it once; a benchmark run on its own gets its own workspace.
    """

    _current: "Workspace | None" = None

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="buildctl-bench-")
        self.path = Path(self._tmp.name)
        self.cache: dict = {}
        self.pg_databases: list[str] = []  # made on the PostgreSQL server, dropped by close()

    @classmethod
    def get(cls) -> "Workspace":
        if cls._current is None:
            cls._current = Workspace()
        return cls._current

    @classmethod
    def close(cls) -> None:
        if cls._current is not None:
            try:
                _drop_pg_databases(cls._current.pg_databases)
            finally:
                cls._current._tmp.cleanup()
                cls._current = None

    def dir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d


# --------------------------------------------------------------------------- PostgreSQL

#: Where the PostgreSQL rows run: a role that may CREATE DATABASE (each benchmark makes its
#: own databases on that server and drops them at the end).
PG_DSN_VARIABLES = ("BUILDCTL_BENCH_PG_DSN", "BUILDCTL_TEST_PG_DSN")
PG_SKIP_REASON = ("skipped: no PostgreSQL server configured; set BUILDCTL_BENCH_PG_DSN (or BUILDCTL_TEST_PG_DSN), "
                  "e.g. postgresql://postgres@127.0.0.1:5432/postgres, a role that may CREATE DATABASE")


def pg_dsn() -> str | None:
    return next((os.environ[v] for v in PG_DSN_VARIABLES if os.environ.get(v)), None)


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(sql)


def pg_database(ws: "Workspace", label: str) -> str:
    """A new database on the configured server, migrated by the real `buildctl migrate`, as
    a postgresql:// location; dropped when the workspace closes."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    name = f"buildctl_bench_{os.getpid()}_{secrets.token_hex(3)}_{label}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    ws.pg_databases.append(name)
    location = urlunsplit(urlsplit(pg_dsn())._replace(path="/" + name))
    migrate(location)
    return location


def _drop_pg_databases(names: list[str]) -> None:
    for name in names:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    names.clear()


def skipped(name: str, figure: str, reason: str = PG_SKIP_REASON) -> dict:
    """A row for a measurement that could not run here, saying why."""
    return result(name, None, "", baseline="-", figure=figure, notes=reason)


def log(msg: str) -> None:
    """Progress for people, on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- seeding a fleet

#: The shape of one run in a seeded "fleet" database. Every run has the same shape, so
#: the small and the large database differ only in how many runs (and so rows) they hold,
#: and a query of the target run returns the same rows from either.
TASKS_PER_LIST = 20
WAVES_PER_RUN = 4
AGENTS_PER_RUN = 10
LOGS_PER_RUN = 1000
HEARTBEATS_PER_AGENT = 500
RUNS_PER_LIST = 20
SPAN_DAYS = 30.0


def fleet_shape(runs: int) -> dict:
    return {"runs": runs, "lists": max(1, -(-runs // RUNS_PER_LIST)), "agents": runs * AGENTS_PER_RUN,
            "log_rows": runs * LOGS_PER_RUN, "heartbeats": runs * AGENTS_PER_RUN * HEARTBEATS_PER_AGENT,
            "target": f"ex_{runs // 2:012x}", "live": f"ex_{runs - 1:012x}"}


def seed_fleet(db: Path, runs: int) -> dict:
    """Seed a migrated database with ``runs`` runs shaped like real ones, in one transaction.

    Runs follow each other over the last 30 days, each with 20 tasks in 4 waves, 10 agents,
    500 heartbeats per agent and 1,000 execution-log events, all inserted in time order
    (as a real database grows) by INSERT … SELECT over recursive CTEs. Every run has ended
    (completed, a few failed) except two: the target run, in the middle of the data, is
    `running` with its agents silent (stale) and wave 3 in progress; the newest run is
    `running` with fresh heartbeats. Returns the shape (and the two execution ids).
    """
    shape = fleet_shape(runs)
    L, T, W, A, G, H = shape["lists"], TASKS_PER_LIST, WAVES_PER_RUN, AGENTS_PER_RUN, LOGS_PER_RUN, HEARTBEATS_PER_AGENT
    target, live = runs // 2, runs - 1
    conn = connect(db)
    now = conn.execute("SELECT unixepoch('now')").fetchone()[0]
    span = SPAN_DAYS * 86400 / runs  # seconds per run
    p = {"R": runs, "L": L, "T": T, "W": W, "A": A, "G": G, "H": H, "base": now - SPAN_DAYS * 86400, "span": span,
         "target": target, "live": live, "now": now}
    # A run's time window is [base + i*span, base + (i+0.9)*span]; ts(i, f) is fraction f of it.
    ts = "strftime('%Y-%m-%d %H:%M:%f', :base + ({i}) * :span + ({f}) * 0.9 * :span, 'unixepoch')"
    status = ("CASE WHEN {i} IN (:target, :live) THEN 'running' WHEN ({i}) % 37 = 5 THEN 'failed' "
              "ELSE 'completed' END")
    conn.execute("PRAGMA foreign_keys = OFF")  # the rows are consistent; checked by tests of the shapes
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :L) "
            "INSERT INTO task_lists_v2 (id, name, status, max_parallel_agents, created_at, updated_at) "
            "SELECT printf('tl_%012x', x), printf('service-%03d', x), 'in_progress', 4, "
            + ts.format(i="x", f="0") + ", " + ts.format(i="x", f="0") + " FROM n", p)
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :L * :T) "
            "INSERT INTO tasks (id, display_id, task_list_id, title, command, position, status, created_at, updated_at) "
            "SELECT printf('tk_%08x%04x', x / :T, x % :T), printf('T-%03d', x % :T + 1), printf('tl_%012x', x / :T), "
            "printf('build step %d of service %d', x % :T + 1, x / :T), 'make step', x % :T, 'pending', "
            + ts.format(i="x / :T", f="0") + ", " + ts.format(i="x / :T", f="0") + " FROM n", p)
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :L * :T) "
            "INSERT INTO task_relationships (source_task_id, target_task_id) "
            "SELECT printf('tk_%08x%04x', x / :T, x % :T), printf('tk_%08x%04x', x / :T, x % :T - :T / :W) "
            "FROM n WHERE x % :T >= :T / :W", p)
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :R) "
            "INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, started_at, "
            "completed_at, triggered_by, total_tasks, completed_tasks, failed_tasks, skipped_tasks) "
            "SELECT printf('ex_%012x', i), printf('tl_%012x', i % :L), i / :L + 1, " + status.format(i="i") + ", "
            + ts.format(i="i", f="0") + ", CASE WHEN i IN (:target, :live) THEN NULL ELSE "
            + ts.format(i="i", f="1") + " END, 'user', :T, "
            "CASE WHEN i IN (:target, :live) THEN 2 * :T / :W WHEN i % 37 = 5 THEN :T - 1 ELSE :T END, "
            "CASE WHEN i % 37 = 5 AND i NOT IN (:target, :live) THEN 1 ELSE 0 END, 0 FROM n", p)
        # Waves: ended runs all ended; the two running runs have waves 1-2 done, 3 running, 4 pending.
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :R * :W) "
            "INSERT INTO parallel_execution_waves (wave_id, execution_id, wave_number, status, started_at, "
            "completed_at, task_count, completed_count, failed_count) "
            "SELECT printf('wv_%08x%04x', x / :W, x % :W), printf('ex_%012x', x / :W), x % :W + 1, "
            "CASE WHEN x / :W IN (:target, :live) THEN CASE WHEN x % :W < 2 THEN 'completed' WHEN x % :W = 2 "
            "THEN 'running' ELSE 'pending' END WHEN (x / :W) % 37 = 5 AND x % :W = :W - 1 THEN 'failed' "
            "ELSE 'completed' END, " + ts.format(i="x / :W", f="(x % :W) * 1.0 / :W") + ", "
            + ts.format(i="x / :W", f="(x % :W + 1) * 1.0 / :W") + ", :T / :W, "
            "CASE WHEN x / :W IN (:target, :live) AND x % :W >= 2 THEN 0 "
            "WHEN (x / :W) % 37 = 5 AND x % :W = :W - 1 THEN :T / :W - 1 ELSE :T / :W END, "
            "CASE WHEN (x / :W) % 37 = 5 AND x % :W = :W - 1 AND x / :W NOT IN (:target, :live) THEN 1 ELSE 0 END "
            "FROM n", p)
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :R * :A) "
            "INSERT INTO build_agent_instances (instance_id, execution_id, current_task_id, wave_number, status, "
            "spawned_at, completed_at, last_heartbeat, config) "
            "SELECT printf('ag_%08x%04x', i / :A, i % :A), printf('ex_%012x', i / :A), "
            "CASE WHEN i / :A IN (:target, :live) AND i % :A < 3 "
            "     THEN printf('tk_%08x%04x', (i / :A) % :L, 2 * :T / :W + i % :A) END, "
            "CASE WHEN i / :A IN (:target, :live) THEN 3 ELSE :W END, "
            "CASE WHEN i / :A IN (:target, :live) THEN CASE WHEN i % :A < 3 THEN 'running' ELSE 'idle' END "
            "     ELSE 'completed' END, " + ts.format(i="i / :A", f="0") + ", "
            "CASE WHEN i / :A IN (:target, :live) THEN NULL ELSE " + ts.format(i="i / :A", f="1") + " END, "
            "CASE WHEN i / :A = :live THEN strftime('%Y-%m-%d %H:%M:%f', 'now') ELSE "
            + ts.format(i="i / :A", f="(:H - 1) * 1.0 / :H") + " END, "
            "'{\"heartbeatIntervalMs\": 30000, \"maxRetries\": 3}' FROM n", p)
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :R * :T) "
            "INSERT INTO wave_task_assignments (wave_id, task_id, instance_id, status, assigned_at, completed_at) "
            "SELECT printf('wv_%08x%04x', x / :T, (x % :T) / (:T / :W)), "
            "printf('tk_%08x%04x', (x / :T) % :L, x % :T), "
            "CASE WHEN x / :T IN (:target, :live) AND x % :T >= 3 * :T / :W THEN NULL "
            "     WHEN x / :T IN (:target, :live) AND x % :T >= 2 * :T / :W + 3 THEN NULL "
            "     ELSE printf('ag_%08x%04x', x / :T, x % :A) END, "
            "CASE WHEN x / :T IN (:target, :live) THEN CASE WHEN x % :T < 2 * :T / :W THEN 'completed' "
            "       WHEN x % :T < 2 * :T / :W + 3 THEN 'running' ELSE 'pending' END "
            "     WHEN (x / :T) % 37 = 5 AND x % :T = :T - 1 THEN 'failed' ELSE 'completed' END, "
            + ts.format(i="x / :T", f="(x % :T) * 1.0 / :T") + ", "
            "CASE WHEN x / :T IN (:target, :live) AND x % :T >= 2 * :T / :W THEN NULL ELSE "
            + ts.format(i="x / :T", f="(x % :T + 0.9) * 1.0 / :T") + " END FROM n", p)
        # Heartbeats in time order: run i, beat j, agent k.
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :R * :A * :H) "
            "INSERT INTO agent_heartbeats (instance_id, timestamp, status, current_task_id, progress_percent, "
            "memory_usage_mb, cpu_percent) "
            "SELECT printf('ag_%08x%04x', x / (:A * :H), x % :A), "
            + ts.format(i="x / (:A * :H)", f="((x / :A) % :H) * 1.0 / :H") + ", 'running', "
            "printf('tk_%08x%04x', (x / (:A * :H)) % :L, ((x / :A) % :H) * :T / :H), "
            "((x / :A) % :H) * 100 / :H, 40 + x % 200, (x % 1000) / 10.0 FROM n", p)
        # The execution log in time order: run i, event j.
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < :R * :G) "
            "INSERT INTO task_execution_log (execution_id, task_id, instance_id, timestamp, event_type, message, "
            "context) "
            "SELECT printf('ex_%012x', x / :G), printf('tk_%08x%04x', (x / :G) % :L, (x % :G) * :T / :G), "
            "printf('ag_%08x%04x', x / :G, x % :A), " + ts.format(i="x / :G", f="(x % :G) * 1.0 / :G") + ", "
            "CASE x % 20 WHEN 0 THEN 'task_started' WHEN 1 THEN 'checkpoint_created' WHEN 2 THEN 'validation_run' "
            "  WHEN 17 THEN 'warning' WHEN 18 THEN 'task_failed' WHEN 19 THEN 'task_completed' "
            "  WHEN 9 THEN 'discovery_recorded' ELSE 'info' END, "
            "printf('step %d of run %d: compiled %d files, %d warnings', x % :G, x / :G, x % 97, x % 7), "
            "CASE WHEN x % 20 = 18 THEN json_object('attempt', 1 + (x / 20) % 3, 'exit_code', 2, "
            "  'error', 'error: undefined reference to `frobnicate''') END FROM n", p)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    checkpoint_and_close(conn)
    return shape


def fleet(ws: Workspace, runs: int) -> tuple[Path, dict]:
    """A migrated fleet database of ``runs`` runs (``seed_fleet``), seeded once per workspace.

    Shared read-only by the read benchmark; benchmarks that change it (gc, memory) work on
    a copy (``copy_db``) or run last.
    """
    key = ("fleet", runs)
    if key not in ws.cache:
        db = ws.dir("fleet") / f"fleet-{runs}.db"
        log(f"seeding a fleet database of {runs:,} runs ({runs * LOGS_PER_RUN:,} log rows, "
            f"{runs * AGENTS_PER_RUN * HEARTBEATS_PER_AGENT:,} heartbeats, {runs * AGENTS_PER_RUN:,} agents)")
        migrate(db)
        t0 = time.perf_counter()
        shape = seed_fleet(db, runs)
        shape["seed_s"] = round(time.perf_counter() - t0, 1)
        shape["mb"] = round(db.stat().st_size / 1e6)
        log(f"seeded in {shape['seed_s']:.1f} s ({shape['mb']} MB)")
        ws.cache[key] = (db, shape)
    return ws.cache[key]


def standalone(doc: str, argv: list[str] | None, run, *, extra=None) -> int:
    """`python benchmarks/bench_X.py [--quick] [--json] …` for one module: parse, run in a
    temporary workspace, print one line per figure (or JSON). ``extra(ap)`` adds options;
    ``run(args)`` gets the parsed arguments."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer repetitions")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    try:
        results = run(args)
    finally:
        Workspace.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    width = max((len(r["name"]) for r in results), default=0)
    for r in results:
        print(f"{r['name']:<{width}} {r['value']:>10} {r['unit']:<7} ratio {r['ratio']}  {r.get('notes', '')}")
    return 0
