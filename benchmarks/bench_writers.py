"""32 concurrent writer processes: zero errors, zero lost rows.

    python benchmarks/bench_writers.py [--quick] [--json] [--writers 32] [--seconds 20]

Each writer is its own process with its own connection (``storage.connect``) and its own
registered agent of one running run. From a common start time until the end, it alternates
``agents.heartbeat`` and ``execlog.add`` (the domain functions `buildctl heartbeat` and
`buildctl log add` run), counting each write that returned and each error, and timing each
call. Afterwards the rows are counted in the database: lost rows = rows reported written
minus rows found (must be 0), errors must be 0 (no "database is locked" may reach a user).

Baseline: one writer alone for a quarter of the time, in the same run: rows/s of the 32
writers together against one writer's rows/s (SQLite has one write lock: the ratio tells
how much throughput contention costs or gains).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = "5. 32 concurrent writers"
EXEC = "ex_writers0000"


def _child(db_path: str, agent: str, start_at: float, seconds: float, out: str) -> int:
    from buildctl import agents, execlog, storage

    db = storage.connect(db_path)
    late = time.time() - start_at
    while time.time() < start_at:
        time.sleep(min(0.005, max(0.0, start_at - time.time())))
    end = start_at + seconds
    hb = logs = 0
    errors: list[str] = []
    lat: list[float] = []
    i = 0
    while time.time() < end:
        t0 = time.perf_counter()
        try:
            if i % 2 == 0:
                agents.heartbeat(db, agent, status="running", progress=i % 100)
                hb += 1
            else:
                execlog.add(db, EXEC, "info", f"writer {agent} event {i}", agent=agent)
                logs += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        lat.append((time.perf_counter() - t0) * 1000.0)
        i += 1
    db.close()
    Path(out).write_text(json.dumps({"agent": agent, "heartbeats": hb, "logs": logs, "errors": errors,
                                     "latencies": lat, "late_s": late}))
    return 0


def _seed(location: str, agents: int) -> list[str]:
    from buildctl import storage

    ids = [f"ag_writer{i:04d}" for i in range(agents)]
    with storage.connect(location) as db, db.write():
        db.execute("INSERT INTO task_lists_v2 (id, name, status) VALUES ('tl_writers', 'writers', 'in_progress')")
        db.execute("INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, started_at) "
                   f"VALUES ('{EXEC}', 'tl_writers', 1, 'running', {db.sql.now})")
        db.executemany("INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, config) "
                       f"VALUES (?, '{EXEC}', 1, 'running', '{{}}')", [(a,) for a in ids])
    return ids


def fresh_sqlite(work: Path) -> str:
    """A new migrated SQLite file for one round."""
    db = work / "writers.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    common.migrate(db)
    return str(db)


def _round(location: str, agents: list[str], seconds: float, work: Path) -> dict:
    """One round of ``agents`` writer processes on the migrated database at ``location``
    (either engine)."""
    from buildctl import storage

    ids = _seed(location, len(agents))
    env = common.env(location)
    me = str(Path(__file__).resolve())
    start_at = time.time() + 1.0 + 0.07 * len(ids)  # time for every process to start on a busy 2-core box
    procs = []
    for i, a in enumerate(ids):
        out = work / f"w{i}.json"
        out.unlink(missing_ok=True)
        procs.append((subprocess.Popen([common.python(), me, "--child", location, a, repr(start_at), repr(seconds),
                                        str(out)], env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
    crashed = []
    for p, out in procs:
        p.wait(timeout=seconds + 120)
        if p.returncode != 0:
            crashed.append(p.stderr.read().decode(errors="replace").strip()[-400:])
    reports = [json.loads(out.read_text()) for p, out in procs if out.exists()]
    with storage.connect(location) as conn:
        found_hb = dict(conn.execute("SELECT instance_id, COUNT(*) FROM agent_heartbeats GROUP BY instance_id").fetchall())
        found_log = dict(conn.execute("SELECT instance_id, COUNT(*) FROM task_execution_log WHERE instance_id IS NOT NULL "
                                      "AND message LIKE 'writer %' GROUP BY instance_id").fetchall())
        integrity = (conn.scalar("PRAGMA integrity_check") if conn.sql.name == "sqlite"
                     else "not applicable (the server's)")
    reported = sum(r["heartbeats"] + r["logs"] for r in reports)
    found = sum(found_hb.values()) + sum(found_log.values())
    lost = sum(max(0, r["heartbeats"] - found_hb.get(r["agent"], 0)) + max(0, r["logs"] - found_log.get(r["agent"], 0))
               for r in reports)
    errors = [e for r in reports for e in r["errors"]] + [f"writer crashed: {c}" for c in crashed]
    lat = [x for r in reports for x in r["latencies"]]
    return {"writers": len(ids), "seconds": seconds, "reported": reported, "found": found, "lost": lost,
            "errors": errors, "latencies": lat, "late": max((r["late_s"] for r in reports), default=0.0),
            "integrity": integrity, "rows_per_s": reported / seconds}


def run(quick: bool = False, writers: int = 32, seconds: float | None = None) -> list[dict]:
    work = common.Workspace.get().dir("writers")
    return measure(lambda: fresh_sqlite(work), work, quick, writers, seconds, FIGURE)


def measure(fresh, work: Path, quick: bool, writers: int, seconds: float | None, figure: str,
            prefix: str = "") -> list[dict]:
    """Both rounds (1 writer, then ``writers``), each on a new database from ``fresh()``; the rows."""
    seconds = seconds or (5.0 if quick else 20.0)
    single_s = max(1.5, seconds / 4)
    common.log(f"{prefix}writers: 1 writer for {single_s:g} s (baseline)")
    one = _round(fresh(), ["a"], single_s, work)
    common.log(f"{prefix}writers: {writers} writer processes for {seconds:g} s")
    many = _round(fresh(), ["a"] * writers, seconds, work)
    common.log(f"{prefix}writers: {many['reported']:,} rows, {len(many['errors'])} errors, {many['lost']} lost")
    lat = many["latencies"] or [0.0]
    errs = f"; first error: {many['errors'][0]}" if many["errors"] else ""
    shape = f"{writers} processes x {seconds:g} s" + (" (--quick: the full run's 20 s cut to 5 s)" if quick else "")
    return [
        common.result(f"{prefix}{writers} writers: rows/s", many["rows_per_s"], "rows/s", baseline="1 writer alone rows/s",
                      baseline_value=one["rows_per_s"], figure=figure, digits=0,
                      notes=f"{shape}; {many['reported']:,} rows reported, {many['found']:,} found; "
                            f"integrity_check {many['integrity']}; " + (
                                "every process was ready before the start line" if many["late"] <= 0 else
                                f"the last process started {many['late']:.2f} s after the start line")),
        common.result(f"{prefix}{writers} writers: errors", float(len(many["errors"])), "errors", baseline="-",
                      budget="0", met=not many["errors"], figure=figure, digits=0,
                      notes=f"heartbeat/log add calls that raised{errs}"),
        common.result(f"{prefix}{writers} writers: lost rows", float(many["lost"]), "rows", baseline="-",
                      budget="0", met=many["lost"] == 0, figure=figure, digits=0,
                      notes="rows a writer reported written but the database does not hold"),
        common.result(f"{prefix}{writers} writers: per-call latency p50", common.pct(lat, 0.5), "ms",
                      baseline="1 writer alone p50", baseline_value=common.pct(one["latencies"] or [0.0], 0.5),
                      samples=lat, figure=figure,
                      notes=f"p99 {common.pct(lat, 0.99):.1f} ms, max {max(lat):.1f} ms over {len(lat):,} calls "
                            "(a heartbeat or a log add, each one transaction)"),
    ]


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--child":
        return _child(argv[1], argv[2], float(argv[3]), float(argv[4]), argv[5])

    def extra(ap):
        ap.add_argument("--writers", type=int, default=32)
        ap.add_argument("--seconds", type=float)

    return common.standalone(__doc__, argv, lambda args: run(args.quick, args.writers, args.seconds), extra=extra)

if __name__ == "__main__":
    sys.exit(main())
