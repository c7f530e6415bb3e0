"""Per-call latency of the write hot path, against baselines measured in the same run.

    python benchmarks/bench_hotpath.py [--quick] [--json]

Measures the median wall time (and the p10–p90 spread) of one process per call:

* ``buildctl heartbeat``, ``buildctl log add``, ``buildctl agent finish`` — the
  installed console script next to this interpreter, as scripts call it;
* baselines: the same venv's ``python -c pass``; the ``sqlite3`` CLI doing the same
  heartbeat write (insert + last_heartbeat update in one transaction);
  ``sqlite-utils insert`` inserting the same heartbeat row; a stdlib-only Python
  script doing the heartbeat write (the floor for any Python implementation).

Commands run round-robin (one call of each, then again) so that a noisy neighbour
slows them all alike. The ratio is against ``python -c pass``; target ≤ 2.5×.
Bytecode is written (PYTHONDONTWRITEBYTECODE is unset for the measured processes, and
each command is warmed up first), as for any normally installed package.

``run(quick) -> list[dict]`` (name, value, unit, baseline, ratio, notes) is the
entry point for a benchmark harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 2.5
BASELINE = "python -c pass"


def _buildctl() -> list[str]:
    exe = Path(sys.executable).with_name("buildctl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "buildctl"]


def _env(db: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "BUILDCTL_DEBUG")}
    env["BUILDCTL_DB"] = str(db)
    env["NO_COLOR"] = "1"
    return env


def _seed(db: Path, finishers: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO task_lists_v2 (id, name, status) VALUES ('tl_bench', 'bench', 'ready')")
    conn.execute("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) "
                 "VALUES ('tk_bench', 'T-001', 'tl_bench', 'bench task', 'true', 0)")
    conn.execute("INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, started_at) "
                 "VALUES ('ex_bench', 'tl_bench', 1, 'running', datetime('now'))")
    agents = ["ag_bench"] + [f"ag_fin_{i:05d}" for i in range(finishers)]
    conn.executemany("INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, config) "
                     "VALUES (?, 'ex_bench', 1, 'running', '{}')", [(a,) for a in agents])
    conn.execute("COMMIT")
    conn.close()


def _commands(db: Path, tmp: Path, finishers: list[str]) -> dict:
    py = sys.executable
    heartbeat_sql = (
        "PRAGMA busy_timeout=30000; BEGIN IMMEDIATE; "
        "INSERT INTO agent_heartbeats (instance_id, timestamp, status, progress_percent) "
        "VALUES ('ag_bench', strftime('%Y-%m-%d %H:%M:%f','now'), 'running', 50); "
        "UPDATE build_agent_instances SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f','now') "
        "WHERE instance_id = 'ag_bench'; COMMIT;"
    )
    row = tmp / "row.json"
    row.write_text(json.dumps({"instance_id": "ag_bench", "status": "running", "progress_percent": 50,
                               "timestamp": "2026-01-01 00:00:00.000"}))
    stdlib = tmp / "stdlib_heartbeat.py"
    stdlib.write_text(
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "for p in ('busy_timeout = 30000', 'journal_mode = WAL', 'foreign_keys = ON', 'synchronous = NORMAL'):\n"
        "    c.execute('PRAGMA ' + p)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"INSERT INTO agent_heartbeats (instance_id, timestamp, status, progress_percent) "
        "VALUES ('ag_bench', strftime('%Y-%m-%d %H:%M:%f','now'), 'running', 50)\")\n"
        "c.execute(\"UPDATE build_agent_instances SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f','now') "
        "WHERE instance_id = 'ag_bench'\")\n"
        "c.execute('COMMIT')\n"
    )
    bc = _buildctl()
    fin = iter(finishers)
    cmds = {
        BASELINE: lambda: [py, "-c", "pass"],
        "sqlite3 CLI heartbeat write": lambda: ["sqlite3", str(db), heartbeat_sql],
        "sqlite-utils insert heartbeat row": lambda: [str(Path(py).with_name("sqlite-utils")), "insert", str(db),
                                                      "agent_heartbeats", str(row)],
        "python stdlib sqlite3 heartbeat write": lambda: [py, str(stdlib), str(db)],
        "buildctl heartbeat": lambda: bc + ["heartbeat", "ag_bench", "--progress", "50"],
        "buildctl log add": lambda: bc + ["log", "add", "ex_bench", "info", "bench event", "--task", "T-001"],
        "buildctl agent finish": lambda: bc + ["agent", "finish", next(fin), "--status", "completed"],
    }
    if not shutil.which("sqlite3"):
        del cmds["sqlite3 CLI heartbeat write"]
    if not Path(py).with_name("sqlite-utils").exists():
        del cmds["sqlite-utils insert heartbeat row"]
    return cmds


def _time_once(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return elapsed * 1000.0


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run(quick: bool = False) -> list[dict]:
    """Measure every command; returns one dict per command (name, value, unit, baseline, ratio, notes)."""
    rounds, warmup = (8, 1) if quick else (40, 3)
    with tempfile.TemporaryDirectory(prefix="buildctl-bench-") as tmp_s:
        tmp = Path(tmp_s)
        db = tmp / "bench.db"
        env = _env(db)
        subprocess.run(_buildctl() + ["migrate"], env=env, check=True, capture_output=True)
        finishers = [f"ag_fin_{i:05d}" for i in range(rounds + warmup)]
        _seed(db, len(finishers))
        cmds = _commands(db, tmp, finishers)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        for i in range(warmup + rounds):
            for name, make in cmds.items():
                t = _time_once(make(), env)
                if i >= warmup:
                    samples[name].append(t)
        base = statistics.median(samples[BASELINE])
        results = []
        for name, xs in samples.items():
            med = statistics.median(xs)
            ratio = med / base
            note = f"p10 {_pct(xs, 0.1):.1f} ms, p90 {_pct(xs, 0.9):.1f} ms, n={len(xs)}"
            if name.startswith("buildctl"):
                note += f"; target <= {TARGET_RATIO}x: {'ok' if ratio <= TARGET_RATIO else 'OVER'}"
            row = {"name": name, "value": round(med, 2), "unit": "ms", "baseline": BASELINE,
                   "ratio": round(ratio, 2), "notes": note,
                   # for the harness (benchmarks/run.py): the spread and the budget, as numbers
                   "lo": round(_pct(xs, 0.1), 2), "hi": round(_pct(xs, 0.9), 2), "n": len(xs), "spread": "p10-p90",
                   "baseline_value": round(base, 2)}
            if name.startswith("buildctl"):
                row.update(budget=f"<= {TARGET_RATIO}x", met=ratio <= TARGET_RATIO)
            results.append(row)
        return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about 8 calls of each command)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    results = run(args.quick)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    width = max(len(r["name"]) for r in results)
    print(f"{'command':<{width}}  {'median':>9}  {'ratio':>6}  spread")
    for r in results:
        print(f"{r['name']:<{width}}  {r['value']:>6.1f} ms  {r['ratio']:>5.2f}x  {r['notes']}")
    over = [r["name"] for r in results if r["name"].startswith("buildctl") and r["ratio"] > TARGET_RATIO]
    print(f"\nratios against `{BASELINE}` (same interpreter: {sys.executable}); target <= {TARGET_RATIO}x"
          + (f"; over target: {', '.join(over)}" if over else "; all within target"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
