"""The performance figures for PostgreSQL, each against a baseline measured in the same run.

    python benchmarks/bench_postgres.py [--quick] [--json]

Needs a server: ``BUILDCTL_BENCH_PG_DSN`` (or ``BUILDCTL_TEST_PG_DSN``), a role that may
CREATE DATABASE; every database made here is dropped at the end. Without one, each row
says it was skipped and why.

1. Hot path: one process per `buildctl heartbeat` / `log add` / `agent finish` against
   PostgreSQL, round-robin with a bare ``python -c`` that imports psycopg, connects and
   inserts one heartbeat row (the driver's own floor; budget ≤ 1.3×), shown beside
   ``python -c pass`` and ``psql`` doing the same heartbeat write.
2. 32 writer processes (bench_writers on a PostgreSQL database): 0 errors, 0 lost rows.
3. 64 concurrent claimer processes on one run with max_parallel_agents = 3, each claiming
   as `agent claim --wait` does, running the task and reporting it as `agent done` does:
   the most tasks held at once, from the assignments' own claimed/ended times (budget ≤ 3),
   and tasks started more than once (budget 0); wall time against 3 claimers.
4. `run exec --jobs 8` on 500 no-op tasks in one wave: overhead per task over ``xargs -P 8``
   on PostgreSQL against the same on SQLite, in the same run (budget ≤ 2×).
5. For docs/SCALING.md: the server's CPU time and WAL bytes per heartbeat, log event and task
   (when the server runs on this machine), the bytes of a heartbeat row and of a log row
   (table and indexes), and expired heartbeats `buildctl gc` deletes per second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_executor  # noqa: E402
import bench_writers  # noqa: E402
import common  # noqa: E402

FIGURE = "8. PostgreSQL"
HOT_BUDGET = 1.3
EXECUTOR_BUDGET = 2.0
BASELINE = "python: import psycopg, connect, insert 1 row"
HEARTBEAT_ROW = ("INSERT INTO agent_heartbeats (instance_id, timestamp, status, progress_percent) "
                 "VALUES ('ag_bench', statement_timestamp(), 'running', 50)")


# --------------------------------------------------------------------------- 1. hot path

def _seed_hot(location: str, finishers: int) -> None:
    from buildctl import storage

    with storage.connect(location) as db, db.write():
        db.execute("INSERT INTO task_lists_v2 (id, name, status) VALUES ('tl_bench', 'bench', 'ready')")
        db.execute("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) "
                   "VALUES ('tk_bench', 'T-001', 'tl_bench', 'bench task', 'true', 0)")
        db.execute("INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, started_at) "
                   f"VALUES ('ex_bench', 'tl_bench', 1, 'running', {db.sql.now})")
        db.executemany("INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, config) "
                       "VALUES (?, 'ex_bench', 1, 'running', '{}')",
                       [("ag_bench",)] + [(f"ag_fin_{i:05d}",) for i in range(finishers)])


def hot_path(ws: common.Workspace, quick: bool) -> list[dict]:
    rounds, warmup = (8, 1) if quick else (30, 3)
    location = common.pg_database(ws, "hot")
    _seed_hot(location, rounds + warmup)
    env = common.env(location)
    py, bc = common.python(), common.buildctl()
    finishers = iter(f"ag_fin_{i:05d}" for i in range(rounds + warmup))
    argv = {
        "python -c pass": lambda: [py, "-c", "pass"],
        BASELINE: lambda: [py, "-c", "import psycopg, sys\nwith psycopg.connect(sys.argv[1]) as c:\n"
                                     f"    c.execute({HEARTBEAT_ROW!r})", location],
        "psql heartbeat write": lambda: ["psql", "-qX", "-v", "ON_ERROR_STOP=1", location, "-c",
                                         f"BEGIN; {HEARTBEAT_ROW}; UPDATE build_agent_instances SET last_heartbeat = "
                                         "statement_timestamp() WHERE instance_id = 'ag_bench'; COMMIT"],
        "buildctl heartbeat (PostgreSQL)": lambda: bc + ["heartbeat", "ag_bench", "--progress", "50"],
        "buildctl log add (PostgreSQL)": lambda: bc + ["log", "add", "ex_bench", "info", "bench event", "--task", "T-001"],
        "buildctl agent finish (PostgreSQL)": lambda: bc + ["agent", "finish", next(finishers), "--status", "completed"],
    }
    if not shutil.which("psql"):
        del argv["psql heartbeat write"]
    common.log(f"postgres: hot path, {rounds} rounds of {', '.join(argv)}")
    samples = common.time_round_robin({k: (lambda make=make: common.run_timed(make(), env)) for k, make in argv.items()},
                                      rounds, warmup)
    base = common.median(samples[BASELINE])
    rows = []
    for name, xs in samples.items():
        row = common.result(name, common.median(xs), "ms", baseline=BASELINE, baseline_value=base, samples=xs,
                            figure=FIGURE)
        if name.startswith("buildctl"):
            row.update(budget=f"<= {HOT_BUDGET}x", met=row["ratio"] <= HOT_BUDGET)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- 3. 64 claimers

#: One claimer process (tests/claimer.py, shared with the 64-claimer test): claims as
#: `agent claim --wait`, runs the command, reports as `agent done`, until nothing is left.
CLAIMER = str(common.REPO / "tests" / "claimer.py")


def _claim_round(ws: common.Workspace, claimers: int, tasks: int, label: str) -> dict:
    """``claimers`` processes on a run of ``tasks`` tasks (each `sleep 0.05`), max_parallel_agents 3."""
    import json

    from buildctl import storage

    location = common.pg_database(ws, label)
    env = common.env(location)
    listing = ws.dir("postgres") / f"{label}.json"
    listing.write_text(json.dumps({"name": label, "max_parallel_agents": 3, "tasks": [
        {"id": f"T-{i:03d}", "title": f"task {i}", "command": "sleep 0.05"} for i in range(1, tasks + 1)]}))
    ex = subprocess.run(common.buildctl() + ["run", "start", str(listing)], env=env, capture_output=True, text=True,
                        check=True).stdout.strip()
    procs = [subprocess.Popen([common.python(), CLAIMER, location, ex, "600"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(claimers)]
    try:
        with storage.connect(location) as db:
            while db.scalar("SELECT COUNT(*) FROM build_agent_instances") < claimers:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a claimer died before the start: " + next(
                        p.stderr.read() for p in procs if p.poll() is not None)[-400:])
                time.sleep(0.05)
        started = time.perf_counter()
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(timeout=600)
        wall = time.perf_counter() - started
        failed = [p.stderr.read()[-300:] for p in procs if p.returncode != 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with storage.connect(location) as db:
        spans = db.execute("SELECT a.assigned_at, a.completed_at FROM wave_task_assignments a "
                           "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id WHERE w.execution_id = ?",
                           (ex,)).fetchall()
        twice = db.scalar("SELECT COUNT(*) FROM (SELECT task_id FROM task_execution_log WHERE execution_id = ? "
                          "AND event_type = 'task_started' GROUP BY task_id HAVING COUNT(*) > 1) AS again", (ex,))
        status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,))
    instants = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    held = most = 0
    for _, step in instants:
        held += step
        most = max(most, held)
    return {"wall_s": wall, "max_held": most, "twice": twice, "status": status, "failed": failed}


def claimers(ws: common.Workspace, quick: bool) -> list[dict]:
    tasks = 30 if quick else 90
    common.log(f"postgres: 3 claimers, then 64, on {tasks} tasks with max_parallel_agents 3")
    few = _claim_round(ws, 3, tasks, "claim3")
    many = _claim_round(ws, 64, tasks, "claim64")
    ok = many["status"] == "completed" and not many["failed"]
    notes = (f"{tasks} tasks of `sleep 0.05`, run {many['status']}"
             + (f"; {len(many['failed'])} claimers failed: {many['failed'][0]}" if many["failed"] else ""))
    return [
        common.result("64 claimers: wall time", many["wall_s"], "s", baseline="3 claimers", baseline_value=few["wall_s"],
                      figure=FIGURE, notes=notes + f"; {tasks / many['wall_s']:.1f} tasks/s"),
        common.result("64 claimers: most tasks held at once", float(many["max_held"]), "tasks", baseline="-",
                      budget="<= 3 (max_parallel_agents)", met=ok and many["max_held"] <= 3, figure=FIGURE, digits=0,
                      notes="from the assignments' own claimed/ended times"),
        common.result("64 claimers: tasks started twice", float(many["twice"]), "tasks", baseline="-", budget="0",
                      met=ok and many["twice"] == 0, figure=FIGURE, digits=0,
                      notes="task_started events beyond one per task"),
    ]


# --------------------------------------------------------------------------- 4. run exec

def executor(ws: common.Workspace, quick: bool) -> list[dict]:
    if not shutil.which("xargs"):
        return [common.skipped("run exec overhead per task", FIGURE, "skipped: xargs is not installed")]
    work = ws.dir("postgres-executor")
    lite_db = work / "exec.db"
    common.migrate(lite_db)
    lite = bench_executor.Case(work, lite_db, "lite", 500, 1, 8)
    pg = bench_executor.Case(work, common.pg_database(ws, "exec"), "pg", 500, 1, 8)
    reps = 1 if quick else 3
    common.log(f"postgres: run exec --jobs 8 on 500 no-op tasks, SQLite and PostgreSQL, {reps} repetitions")
    t = common.time_round_robin({"sqlite": lite.buildctl, "postgres": pg.buildctl, "xargs": lite.xargs}, reps, warmup=0)
    xargs = common.median(t["xargs"])
    per_task = {k: (common.median(t[k]) - xargs) / 500 for k in ("sqlite", "postgres")}
    return [
        common.result("500 tasks, 1 wave: run exec --jobs 8 (PostgreSQL)", common.median(t["postgres"]) / 1000, "s",
                      baseline="same on SQLite", baseline_value=common.median(t["sqlite"]) / 1000,
                      samples=[x / 1000 for x in t["postgres"]], figure=FIGURE, digits=3),
        common.result("500 tasks, 1 wave: overhead per task (PostgreSQL)", per_task["postgres"], "ms/task",
                      baseline="same on SQLite", baseline_value=per_task["sqlite"], figure=FIGURE,
                      budget=f"<= {EXECUTOR_BUDGET}x", met=per_task["postgres"] <= EXECUTOR_BUDGET * per_task["sqlite"],
                      notes=f"(run exec wall - xargs -P 8 wall {xargs / 1000:.2f} s) / 500, each engine"),
    ]


# --------------------------------------------------------------------------- 5. server cost per operation (docs/SCALING.md)

def _backend_cpu_ms(pid: int) -> float:
    """CPU time (user + system) of one server backend, from /proc (the server runs here)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def server_costs(ws: common.Workspace, quick: bool) -> list[dict]:
    """The server's CPU time and WAL bytes per heartbeat, per log event and per task
    (claim and start, then complete), each made by buildctl's domain calls on one open
    connection, as a long-running worker makes them. Needs the server on this machine
    (its backend's /proc entry); skipped otherwise."""
    import json

    from buildctl import agents, assignments, execlog, storage

    n, tasks = (500, 100) if quick else (3000, 500)
    location = common.pg_database(ws, "costs")
    with storage.connect(location) as db:
        pid = db.scalar("SELECT pg_backend_pid()")
        if not os.path.exists(f"/proc/{pid}/stat"):
            return [common.skipped("server CPU per operation", FIGURE, "skipped: the server does not run on this machine")]
        listing = ws.dir("postgres") / "costs.json"
        listing.write_text(json.dumps({"name": "costs", "max_parallel_agents": 8, "tasks": [
            {"id": f"T-{i:04d}", "title": "t", "command": "true"} for i in range(1, tasks + 1)]}))
        ex = subprocess.run(common.buildctl() + ["run", "start", str(listing)], env=common.env(location),
                            capture_output=True, text=True, check=True).stdout.strip()
        agent = agents.spawn(db, ex)

        def task_cycle(_i: int) -> None:
            claim = assignments.claim_next(db, ex, agent, start=True)
            assignments.complete(db, claim["assignment_id"], instance_id=agent, context={"exit_code": 0})

        ops = {"heartbeat": (n, lambda i: agents.heartbeat(db, agent, status="running", progress=i % 100)),
               "log event": (n, lambda i: execlog.add(db, ex, "info", f"event {i}", agent=agent)),
               "task (claim + start, complete)": (tasks, task_cycle),
               # What an idle worker does about 10 times a second, and once whenever anything committed.
               "idle look (data_version)": (n, lambda i: db.data_version()),
               "idle look (run_state)": (n, lambda i: assignments.run_state(db, ex)),
               # Every worker's heartbeat thread, 4 times a second (Worker._check): the run's status,
               # and the held assignment's while a task runs.
               "fencing check": (n, lambda i: (
                   db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,)),
                   db.one("SELECT status, instance_id FROM wave_task_assignments WHERE id = ?", (1,)))),
               # An idle worker's lease look, at most once a second (agents.recover, nothing stale).
               "lease look (nothing stale)": (n // 5, lambda i: agents.recover(db, 600, ex))}
        rows = []
        for name, (count, op) in ops.items():
            common.log(f"postgres: server cost of {count:,} x {name}")
            lsn = db.scalar("SELECT CAST(pg_current_wal_lsn() AS text)")
            cpu, started = _backend_cpu_ms(pid), time.perf_counter()
            for i in range(count):
                op(i)
            wall = (time.perf_counter() - started) * 1000 / count
            cpu = (_backend_cpu_ms(pid) - cpu) / count
            wal = db.scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(? AS pg_lsn))", (lsn,)) / count
            rows.append(common.result(f"server CPU per {name}", cpu, "ms", baseline="-", figure=FIGURE, digits=3,
                                      notes=f"{wal:,.0f} WAL bytes each; {wall:.2f} ms wall from a client on one "
                                            f"open connection; {count:,} in a row"))
    return rows


# --------------------------------------------------------------------------- 6. gc and row sizes (docs/SCALING.md)

def gc_and_sizes(ws: common.Workspace, quick: bool) -> list[dict]:
    """What docs/SCALING.md needs beyond the budgeted figures: the bytes a heartbeat and a log
    row take (table and indexes), and how fast `buildctl gc` deletes expired heartbeats."""
    import json

    from buildctl import storage

    rows_n = 100_000 if quick else 1_000_000
    location = common.pg_database(ws, "gc")
    with storage.connect(location) as db:
        with db.write():
            db.execute("INSERT INTO task_lists_v2 (id, name, status) VALUES ('tl_gc', 'gc', 'ready')")
            db.execute("INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status) "
                       "VALUES ('ex_gc', 'tl_gc', 1, 'running')")
            db.executemany("INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, config) "
                           "VALUES (?, 'ex_gc', 1, 'running', '{}')", [(f"ag_gc_{i:04d}",) for i in range(100)])
        common.log(f"postgres: {rows_n:,} heartbeats and log rows two days old")
        db.execute(  # heartbeats as a worker writes them, two days old, spread over 100 agents
            "INSERT INTO agent_heartbeats (instance_id, timestamp, status, current_task_id, progress_percent, "
            "memory_usage_mb, cpu_percent) SELECT 'ag_gc_' || lpad(CAST(i % 100 AS text), 4, '0'), "
            "statement_timestamp() - interval '2 days' + i * interval '1 millisecond', 'running', 'tk_gc_task_0001', "
            "i % 100, 120, 3.5 FROM generate_series(1, ?) AS i", (rows_n,))
        db.execute(
            "INSERT INTO task_execution_log (execution_id, task_id, instance_id, timestamp, event_type, message, context) "
            "SELECT 'ex_gc', NULL, 'ag_gc_' || lpad(CAST(i % 100 AS text), 4, '0'), statement_timestamp(), "
            "'task_completed', 'T-' || i || ' completed', '{\"attempt\": 1, \"wave\": 3, \"assignment_id\": ' || i || '}' "
            "FROM generate_series(1, ?) AS i", (rows_n,))
        db.execute("VACUUM ANALYZE agent_heartbeats")
        db.execute("VACUUM ANALYZE task_execution_log")
        size = {t: db.scalar("SELECT pg_total_relation_size(?)", (t,)) / rows_n
                for t in ("agent_heartbeats", "task_execution_log")}
        lsn = db.scalar("SELECT CAST(pg_current_wal_lsn() AS text)")
    started = time.perf_counter()
    p = subprocess.run(common.buildctl() + ["gc", "--json", "--stale-after", "365d"], env=common.env(location),
                       capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if p.returncode != 0:
        raise RuntimeError(f"gc failed: {p.stderr.strip()}")
    deleted = {s["step"]: s["count"] for s in json.loads(p.stdout)["steps"]}["heartbeats"]
    with storage.connect(location) as db:
        wal = db.scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(? AS pg_lsn))", (lsn,)) / max(1, deleted)
    return [
        common.result("heartbeat row, table + indexes", size["agent_heartbeats"], "bytes", baseline="-",
                      figure=FIGURE, digits=0, notes=f"pg_total_relation_size / {rows_n:,} rows, after VACUUM"),
        common.result("log row, table + indexes", size["task_execution_log"], "bytes", baseline="-", figure=FIGURE,
                      digits=0, notes=f"a task_completed event with its usual context; {rows_n:,} rows"),
        common.result("gc: expired heartbeats deleted per second", deleted / wall, "rows/s", baseline="-",
                      figure=FIGURE, digits=0,
                      notes=f"`buildctl gc` deleted {deleted:,} rows in {wall:.1f} s (batches of 10,000, each "
                            f"under the advisory lock), then ANALYZE; {wal:,.0f} WAL bytes per row deleted"),
    ]


# --------------------------------------------------------------------------- harness

def run(quick: bool = False) -> list[dict]:
    if not common.pg_dsn():
        return [common.skipped(name, FIGURE) for name in (
            "buildctl heartbeat / log add / agent finish (PostgreSQL)", "32 writers (PostgreSQL)",
            "64 claimers, max_parallel_agents 3", "run exec overhead per task (PostgreSQL)",
            "gc and row sizes (PostgreSQL)")]
    ws = common.Workspace.get()
    rows = hot_path(ws, quick)
    rows += bench_writers.measure(lambda: common.pg_database(ws, "writers"), ws.dir("postgres-writers"), quick, 32,
                                  None, FIGURE, prefix="PostgreSQL: ")
    rows += claimers(ws, quick)
    rows += executor(ws, quick)
    rows += server_costs(ws, quick)
    rows += gc_and_sizes(ws, quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    return common.standalone(__doc__, argv, lambda args: run(args.quick))


if __name__ == "__main__":
    sys.exit(main())
