"""Reads stay flat as tables grow: small database vs a large one, same run.

    python benchmarks/bench_reads.py [--quick] [--json]

Two databases seeded by ``common.seed_fleet`` with runs of the same shape (20 tasks in 4
waves, 10 agents, 500 heartbeats per agent, 1,000 log events): the small one holds 5 runs,
the large one 1,000 runs = 1 M log rows, 5 M heartbeats, 10 k agents (``--quick``: 100
runs = 100 k log rows, 500 k heartbeats, 1 k agents). The target run sits in the middle of
the data (by time and by row id) and returns the same rows from both databases.

For ``waves``, ``log tail -n 500``, ``agent stale`` and ``run show`` it measures the wall
time of the CLI (one process per call, as people type it) and the in-process domain call,
and for the named read queries (sql/queries/: those of these commands and of ``log
failures``) the query alone. The baseline of each large-database figure is the same figure
on the small database, measured round-robin in the same run; budget: ratio ≤ 1.3. (The
"every other command ≤ 350 ms" budget is figure 2b, bench_commands.py, which measures
every command on a small database.)

Then ``EXPLAIN QUERY PLAN`` of each of those queries on the large database, before and
after ``ANALYZE`` (what gc's ``PRAGMA optimize`` may do): any full SCAN of a table with
≥ 1,000 rows is reported.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = "2. read latency"
RATIO_BUDGET = 1.3
SMALL_RUNS = 5
LARGE_RUNS, QUICK_RUNS = 1000, 100
#: A table this big (in the large database) must be reached by an index, never SCANned whole.
BIG_TABLE_ROWS = 1_000

#: The named read queries (sql/queries/) and the parameters the commands give them.
B8 = ("stale_agents", "execution_log_tail", "wave_summary", "consecutive_failures", "progress_between_attempts")


def _params(name: str, target: str, task: str) -> dict:
    return {
        "stale_agents": {"threshold": "-60 seconds", "execution_id": None},
        "execution_log_tail": {"execution_id": target, "limit": 500},
        "wave_summary": {"execution_id": target},
        "consecutive_failures": {"execution_id": target, "task_id": None, "min_failures": 3},
        "progress_between_attempts": {"execution_id": target, "task_id": task},
    }[name]


def _aliases(sql: str) -> dict[str, str]:
    """alias -> table for every FROM/JOIN of a query (our queries name tables plainly)."""
    out = {}
    for table, alias in re.findall(r"\b(?:FROM|JOIN)\s+([a-z_0-9]+)(?:\s+(?:AS\s+)?([a-z_0-9]+))?", sql, re.I):
        out[table] = table
        if alias and alias.upper() not in ("WHERE", "ON", "LEFT", "JOIN", "GROUP", "ORDER", "LIMIT", "AND"):
            out[alias] = table
    return out


def explain(db_path: Path, target: str, task: str) -> tuple[dict[str, list[str]], list[str]]:
    """EXPLAIN QUERY PLAN of each named query in ``B8``; returns (plans, full scans of big tables)."""
    from buildctl import storage

    db = storage.connect(str(db_path))
    try:
        sizes = {t: db.scalar(f"SELECT COUNT(*) FROM {t}") for t in
                 ("agent_heartbeats", "task_execution_log", "build_agent_instances", "wave_task_assignments",
                  "task_list_execution_runs", "parallel_execution_waves", "tasks")}
        big = {t for t, n in sizes.items() if n >= BIG_TABLE_ROWS}
        plans, scans = {}, []
        for name in B8:
            sql = storage.query_text(name)
            aliases = _aliases(sql)
            rows = db.execute("EXPLAIN QUERY PLAN " + sql, _params(name, target, task)).fetchall()
            lines = [r[3] for r in rows]
            plans[name] = lines
            for line in lines:
                m = re.match(r"SCAN (\w+)", line)
                if m and aliases.get(m.group(1), m.group(1)) in big:
                    scans.append(f"{name}: {line} ({aliases.get(m.group(1), m.group(1))}, "
                                 f"{sizes[aliases.get(m.group(1), m.group(1))]:,} rows)")
        return plans, scans
    finally:
        db.close()


def run(quick: bool = False) -> list[dict]:
    from buildctl import agents, execlog, runs as runs_mod, storage

    ws = common.Workspace.get()
    small_db, small = common.fleet(ws, SMALL_RUNS)
    large_runs = QUICK_RUNS if quick else LARGE_RUNS
    large_db, large = common.fleet(ws, large_runs)
    scale = (f"large = {large['runs']:,} runs, {large['log_rows']:,} log rows, {large['heartbeats']:,} heartbeats, "
             f"{large['agents']:,} agents" + (" (--quick: 1/10 of the full run's size)" if quick else "")
             + f"; small = {small['runs']} runs, {small['log_rows']:,} log rows, {small['heartbeats']:,} heartbeats")
    rounds, warmup = (2, 0) if quick else (12, 1)
    bc = common.buildctl()

    def cli(db: Path, shape: dict) -> dict[str, list[str]]:
        t = shape["target"]
        return {"waves": bc + ["waves", t], "log tail -n 500": bc + ["log", "tail", t, "-n", "500"],
                "agent stale": bc + ["agent", "stale"], "run show": bc + ["run", "show", t]}

    cases = {}
    for label, db, shape in (("small", small_db, small), ("large", large_db, large)):
        e = common.env(db)
        for name, argv in cli(db, shape).items():
            cases[(name, label)] = (lambda argv=argv, e=e: common.run_timed(argv, e))
    common.log(f"reads: CLI, {rounds} rounds of {len(cases)} commands")
    cli_times = common.time_round_robin(cases, rounds, warmup)

    # In-process: the domain call and the named query alone, one warm connection per database.
    conns = {"small": storage.connect(str(small_db)), "large": storage.connect(str(large_db))}
    shapes = {"small": small, "large": large}
    task = {}
    history = {}
    for label, db in conns.items():
        task[label] = db.scalar("SELECT task_id FROM task_execution_log WHERE execution_id = ? AND "
                                "event_type = 'task_failed' ORDER BY id LIMIT 1", (shapes[label]["target"],))
        history[label] = db.scalar("SELECT COUNT(*) FROM task_execution_log WHERE task_id = ?", (task[label],))
    domain = {
        "waves": lambda db, s: runs_mod.wave_summary(db, s["target"]),
        "log tail -n 500": lambda db, s: execlog.tail(db, s["target"], 500),
        "agent stale": lambda db, s: agents.stale(db, 60),
        "run show": lambda db, s: runs_mod.show_run(db, s["target"]),
    }
    inproc = {}
    for label, db in conns.items():
        for name, fn in domain.items():
            inproc[(f"{name} (domain call)", label)] = (lambda fn=fn, db=db, s=shapes[label]:
                                                        common.in_process_ms(lambda: fn(db, s)))
        for name in B8:
            params = _params(name, shapes[label]["target"], task[label])
            inproc[(f"{name}.sql (query)", label)] = (lambda db=db, name=name, params=params:
                                                      common.in_process_ms(lambda: db.named(name, params)))
    n_in = 10 if quick else 40
    in_times = common.time_round_robin(inproc, n_in, 3)
    # Same answers from both databases (the shape is the same): a sanity check of the setup.
    def size(name: str, out) -> int:
        return len(out["waves"]) if isinstance(out, dict) else len(out)

    same = {name: f"{size(name, fn(conns['small'], small))}/{size(name, fn(conns['large'], large))}"
            for name, fn in domain.items()}
    for db in conns.values():
        db.close()

    results = []
    for (name, label), xs in cli_times.items():
        if label != "large":
            continue
        small_xs = cli_times[(name, "small")]
        base, med = common.median(small_xs), common.median(xs)
        results.append(common.result(
            f"{name} (CLI), large db", med, "ms", baseline="same on small db", baseline_value=base, samples=xs,
            budget=f"<= {RATIO_BUDGET}x", met=med / base <= RATIO_BUDGET, figure=FIGURE,
            notes=f"small db p10-p90/min-max {common.spread(small_xs)[0]:.0f}-{common.spread(small_xs)[1]:.0f} ms"))
    for (name, label), xs in in_times.items():
        if label != "large":
            continue
        small_xs = in_times[(name, "small")]
        base, med = common.median(small_xs), common.median(xs)
        results.append(common.result(
            f"{name}, large db", med, "ms", baseline="same on small db", baseline_value=base, samples=xs, digits=3,
            budget=f"<= {RATIO_BUDGET}x", met=med / base <= RATIO_BUDGET, figure=FIGURE,
            notes=(f"rows small/large {same[name.split(' (')[0]]}" if name.split(" (")[0] in same else
                   f"the task's log rows over every run of its list: {history['small']:,} on the small db, "
                   f"{history['large']:,} on the large (only this run's 50 are needed)"
                   if name.startswith(("consecutive_failures", "progress_between")) else "")))
    results[0]["notes"] = scale + "; " + results[0]["notes"]

    # EXPLAIN QUERY PLAN on the large database, before and after ANALYZE.
    plans, scans = explain(large_db, large["target"], task["large"])
    conn = common.connect(large_db)
    conn.execute("ANALYZE")
    conn.close()
    plans_after, scans_after = explain(large_db, large["target"], task["large"])
    # What a changed plan costs: the named queries on the large database with the statistics.
    db = storage.connect(str(large_db))
    after_ms = {}
    for name in B8:
        params = _params(name, large["target"], task["large"])
        after_ms[name] = common.median([common.in_process_ms(lambda: db.named(name, params))
                                        for _ in range(n_in)])
    db.close()
    # The harness shares this database with later benchmarks: drop the statistics again.
    conn = common.connect(large_db)
    conn.execute("DELETE FROM sqlite_stat1")
    conn.execute("ANALYZE sqlite_schema")
    conn.close()
    all_scans = [f"before ANALYZE: {s}" for s in scans] + [f"after ANALYZE: {s}" for s in scans_after]
    results.append(common.result(
        "named queries' EXPLAIN: full SCANs of big tables", float(len(all_scans)), "scans",
        baseline="-", budget="0", met=not all_scans, figure=FIGURE, digits=0,
        notes=("; ".join(all_scans) if all_scans else
               f"every table with >= {BIG_TABLE_ROWS:,} rows is reached by an index (SEARCH), before and after ANALYZE")
        + "; query time on the large db after ANALYZE (before): " + ", ".join(
            f"{name} {after_ms[name]:.3f} ms ({common.median(in_times[(name + '.sql (query)', 'large')]):.3f})"
            for name in B8),
        plans={"before ANALYZE": plans, "after ANALYZE": plans_after}))
    return results


def main(argv: list[str] | None = None) -> int:
    return common.standalone(__doc__, argv, lambda args: run(args.quick))

if __name__ == "__main__":
    sys.exit(main())
