"""One command for every performance figure, each against a baseline measured in the same run.

    python benchmarks/run.py [--quick] [--json PATH] [--only NAME,...]

Run it with the interpreter buildctl is installed with (its venv's ``python``): the
benchmarks call the ``buildctl`` console script next to that interpreter and the same
``python``. It seeds its own databases in a temporary folder, prints a table (median,
spread over repeated runs, the baseline, the ratio, the budget) and writes the results as
JSON (default ``benchmarks/results/latest.json``, git-ignored). Progress goes to stderr.

Benchmarks, in order (``--only`` takes their names):

  hotpath   1. write hot path per call vs ``python -c pass``, sqlite3 CLI, sqlite-utils insert
  reads     2. waves / log tail / agent stale / run show: large vs small database; EXPLAIN QUERY PLAN
  commands  2b. every command (and every --help) on a small database vs the 350 ms budget
  planning  3. wave planning of 10,000 tasks / 50,000 dependencies vs a Kahn topological sort
  gc        4. gc rows/s on millions of expired heartbeats, a concurrent writer's waits, per batch size
  writers   5. 32 concurrent writer processes: rows/s, errors, lost rows
  executor  6. run exec on 500 no-op tasks vs xargs / make / GNU parallel; 200 tasks in 10 waves
  memory    7. peak RSS of agent work, gc on the large database, log tail --follow
  postgres  8. the PostgreSQL figures: hot path vs a bare psycopg insert, 32 writers,
               64 claimers under max_parallel_agents, run exec overhead vs SQLite's; skipped
               (each row says why) without BUILDCTL_BENCH_PG_DSN or BUILDCTL_TEST_PG_DSN

``--quick`` scales the data down by 10 (100 k log rows, 500 k heartbeats), shortens the
timed windows and repeats less, to finish in under 2 minutes on 2 cores; the full run takes
7-10 minutes (most of it seeding 5 M heartbeats and deleting them four times). Exit status: 0 when every benchmark ran (budgets missed or not: it measures),
1 when a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

BENCHMARKS = {
    "hotpath": ("bench_hotpath", "1. write hot path"),
    "reads": ("bench_reads", "2. read latency"),
    "commands": ("bench_commands", "2b. command start-up (small db)"),
    "planning": ("bench_planning", "3. wave planning"),
    "gc": ("bench_gc", "4. gc throughput"),
    "writers": ("bench_writers", "5. 32 concurrent writers"),
    "executor": ("bench_executor", "6. executor overhead"),
    "memory": ("bench_memory", "7. peak memory"),
    "postgres": ("bench_postgres", "8. PostgreSQL"),
}
DEFAULT_JSON = HERE / "results" / "latest.json"


# --------------------------------------------------------------------------- the machine

def _version(argv: list[str]) -> str | None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip().splitlines()
    return text[0] if text else None


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    except OSError:
        pass
    try:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
    except OSError:
        cpu = None
    commit = _version(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"])
    try:
        from buildctl import __version__ as bv
    except Exception:
        bv = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "sqlite_library": sqlite3.sqlite_version,
        "sqlite3_cli": _version(["sqlite3", "--version"]),
        "buildctl": bv,
        "git_commit": (commit + ("+uncommitted changes" if dirty else "")) if commit else None,
        "gnu_parallel": _version(["parallel", "--version"]) if shutil.which("parallel") else "not installed",
        "make": _version(["make", "--version"]),
        "xargs": _version(["xargs", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# --------------------------------------------------------------------------- the table

def _num(x, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int, float)):
        ax = abs(x)
        if ax >= 10000:
            s = f"{x:,.0f}"
        elif ax >= 100:
            s = f"{x:.0f}"
        elif ax >= 10:
            s = f"{x:.1f}"
        elif ax >= 1:
            s = f"{x:.2f}"
        else:
            s = f"{x:.3f}"
        return f"{s} {unit}".strip()
    return str(x)


def _baseline(r: dict) -> str:
    name = r.get("baseline_name") or (r["baseline"] if isinstance(r.get("baseline"), str) else None)
    bv = r.get("baseline_value")
    if bv is None and isinstance(r.get("baseline"), (int, float)):
        bv = r["baseline"]
    if name in (None, "-") and bv is None:
        return "-"
    unit = r.get("unit", "")
    if unit in ("ms p99",):
        unit = "ms"
    return f"{name} = {_num(bv, unit)}" if bv is not None else str(name)


def _status(r: dict) -> str:
    if r.get("met") is None:
        return (f"not checked ({r['budget']})" if r.get("budget") else "")
    return ("met" if r["met"] else "MISSED") + (f" ({r['budget']})" if r.get("budget") else "")


def print_table(results: list[dict], out=sys.stdout) -> None:
    current = None
    w = 58
    print(f"{'measurement':<{w}} {'median':>14} {'spread':>21} {'ratio':>7}  {'baseline (same run)':<44} budget",
          file=out)
    for r in results:
        if r.get("figure") != current:
            current = r.get("figure")
            print(f"\n== {current}", file=out)
        spread = (f"{_num(r['lo'])}-{_num(r['hi'])} {r.get('spread', '')}" if r.get("lo") is not None else "")
        ratio = f"{r['ratio']:.2f}x" if isinstance(r.get("ratio"), (int, float)) else "-"
        print(f"{r['name'][:w]:<{w}} {_num(r['value'], r['unit']):>14} {spread:>21} {ratio:>7}  "
              f"{_baseline(r)[:44]:<44} {_status(r)}", file=out)
        if r.get("notes"):
            print(f"    {r['notes']}", file=out)


def print_plans(results: list[dict], out=sys.stdout) -> None:
    for r in results:
        for when, plans in (r.get("plans") or {}).items():
            print(f"\nEXPLAIN QUERY PLAN of the named queries on the large database ({when}):", file=out)
            for name, lines in plans.items():
                print(f"  {name}.sql", file=out)
                for line in lines:
                    print(f"    {line}", file=out)


def summary(results: list[dict]) -> list[str]:
    missed = [f"{r['name']} ({_num(r['value'], r['unit'])}, budget {r.get('budget')})"
              for r in results if r.get("met") is False]
    met = sum(1 for r in results if r.get("met") is True)
    return [f"budgets met: {met}, missed: {len(missed)}"] + [f"  MISSED: {m}" for m in missed]


def _finite(obj):
    """NaN and infinities become null: the JSON stays strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer repetitions (about 2 minutes)")
    ap.add_argument("--json", metavar="PATH", default=str(DEFAULT_JSON),
                    help=f"where to write the JSON results (default: {DEFAULT_JSON.relative_to(HERE.parent)})")
    ap.add_argument("--only", metavar="NAME,...", help=f"run only these: {','.join(BENCHMARKS)}")
    args = ap.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not Path(sys.executable).with_name("buildctl").exists():
        common.log(f"warning: no buildctl console script next to {sys.executable}; using `python -m buildctl` "
                   "(run this with the python of the venv buildctl is installed in)")

    started = time.time()
    meta = machine()
    meta["command"] = "python benchmarks/run.py" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    meta["quick"] = args.quick
    common.log(f"{meta['command']}: {', '.join(names)} on {meta['nproc']} CPUs, load {meta['load_average_at_start']}")
    results: list[dict] = []
    modules: dict[str, dict] = {}
    failed = False
    try:
        for name in names:
            module_name, figure = BENCHMARKS[name]
            quiet = common.settle()
            t0 = time.time()
            common.log(f"--- {figure} ({module_name}); waited {quiet['waited_s']} s for a quiet machine "
                       f"(CPUs {'?' if quiet['idle'] is None else round(100 * quiet['idle'])} % idle)")
            try:
                mod = importlib.import_module(module_name)
                rows = mod.run(args.quick)
                for r in rows:
                    r.setdefault("figure", figure)
                    r["benchmark"] = name
                results.extend(rows)
                modules[name] = {"elapsed_s": round(time.time() - t0, 1), "ok": True, "quiet_before": quiet}
            except Exception as exc:  # one broken benchmark must not hide the others
                failed = True
                tb = traceback.format_exc()
                common.log(f"{name} FAILED: {exc}\n{tb}")
                modules[name] = {"elapsed_s": round(time.time() - t0, 1), "ok": False, "error": str(exc)}
                results.append({"name": f"{name}: benchmark failed to run", "value": None, "unit": "",
                                "baseline": "-", "ratio": None, "notes": str(exc)[-500:], "figure": figure,
                                "benchmark": name, "met": False, "budget": "runs"})
            common.log(f"--- {name} done in {modules[name]['elapsed_s']:.0f} s")
    finally:
        common.Workspace.close()
    elapsed = time.time() - started
    meta["elapsed_s"] = round(elapsed, 1)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None

    print(f"buildctl benchmarks — {meta['command']}")
    print(f"machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['memory']}, Python {meta['python']}, "
          f"SQLite {meta['sqlite_library']}, load {meta['load_average_at_start']} -> {meta['load_average_at_end']}, "
          f"{meta['date']}, commit {meta['git_commit']}")
    print("every ratio is against a baseline measured in this same run; spread = p10-p90 (min-max under 10 samples)\n")
    print_table(results)
    print_plans(results)
    print()
    for line in summary(results):
        print(line)
    print(f"\nwall time {elapsed:.0f} s (" + ", ".join(f"{k} {v['elapsed_s']:.0f} s" for k, v in modules.items()) + ")")

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "modules": modules, "results": results}
    path.write_text(json.dumps(_finite(doc), indent=2, default=str) + "\n")
    print(f"results written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
