"""Peak memory (RSS) of the long-running commands (issue 8), each its own process.

    python benchmarks/bench_memory.py [--quick] [--json]

Each command runs as its own process; its peak resident set size is its ``ru_maxrss``
(the largest the process, or any of its waited-for children, ever was), read by GNU time
(else by polling /proc VmHWM). Measured:

* ``agent work`` — one worker through a whole run of 200 no-op tasks (``--quick``: 50);
  ``python -m buildctl agent work`` when the console script is not there;
* ``gc`` — ``buildctl gc`` with its defaults on a copy of the large fleet database
  (5 M heartbeats, 1 M log rows; ``--quick``: 500 k / 100 k), also timed;
* ``log tail --follow`` — on the same large database, following the target run while
  this process appends an event every 50 ms for a few seconds, then cancels the run (the
  follower then exits by itself).

Baseline: ``python -c pass`` of the same interpreter (ratio = RSS / its RSS); ``sqlite3``
CLI and a one-command Typer read (``buildctl run list``) are shown beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = "7. peak memory"
FULL_RUNS, QUICK_RUNS = 1000, 100


GNU_TIME = "/usr/bin/time"


def _gnu_time() -> bool:
    try:
        return subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


def peak(argv: list[str], env: dict, *, cwd: Path | None = None, stdout=subprocess.DEVNULL, during=None,
         timeout: float = 900) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, method) of one child process.

    Not ``os.wait4`` of a child of this process: Linux hands a process the RSS high-water
    mark of the address space it replaced at exec, i.e. this (large) harness process's.
    GNU time (a small C program) reads the child's own ``ru_maxrss``; without it, the
    child's ``VmHWM`` is read from /proc every 5 ms until it exits.
    """
    use_time = _gnu_time()
    out = Path(env.get("TMPDIR", "/tmp")) / f"buildctl-bench-rss-{os.getpid()}.txt"
    full = [GNU_TIME, "-q", "-o", str(out), "-f", "%M"] + argv if use_time else argv
    t0 = time.perf_counter()
    p = subprocess.Popen(full, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE)
    hwm = 0
    if during is not None:
        during(p)
    deadline = time.time() + timeout
    while p.poll() is None:
        if not use_time:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]))
            except (OSError, ValueError):
                pass
        if time.time() > deadline:
            p.kill()
        time.sleep(0.005)
    secs = time.perf_counter() - t0
    try:
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}: "
                               f"{p.stderr.read().decode(errors='replace').strip()[-600:]}")
        if use_time:
            hwm = int(out.read_text().split()[-1])
    finally:
        out.unlink(missing_ok=True)
    return hwm / 1024, secs, "GNU time %M" if use_time else "/proc VmHWM polling"


def _agent_work_argv(db: Path, ex: str) -> tuple[list[str], str]:
    probe = subprocess.run(common.buildctl() + ["agent", "work", "--help"], env=common.env(db), capture_output=True)
    if probe.returncode == 0:
        return common.buildctl() + ["agent", "work", ex], "buildctl agent work"
    return [common.python(), "-m", "buildctl", "agent", "work", ex, "--db", str(db)], "python -m buildctl agent work"


def run(quick: bool = False) -> list[dict]:
    from buildctl import execlog, runs, storage

    ws = common.Workspace.get()
    work = ws.dir("memory")
    rows = []

    reps = 2 if quick else 5
    tasks = 50 if quick else 200
    # Baselines.
    small = work / "small.db"
    common.migrate(small)
    base_runs = [peak([common.python(), "-c", "pass"], common.env()) for _ in range(reps)]
    base_mb = [r[0] for r in base_runs]
    base = common.median(base_mb)
    rows.append(common.result("python -c pass", base, "MB", baseline="python -c pass", baseline_value=base,
                              samples=base_mb, figure=FIGURE, digits=1,
                              notes=f"peak RSS read by {base_runs[0][2]}"))
    if shutil.which("sqlite3"):
        mb = [peak(["sqlite3", str(small), "SELECT count(*) FROM tasks"], common.env())[0] for _ in range(reps)]
        rows.append(common.result("sqlite3 CLI (one SELECT)", common.median(mb), "MB", baseline="python -c pass",
                                  baseline_value=base, samples=mb, figure=FIGURE, digits=1))
    mb = [peak(common.buildctl() + ["run", "list"], common.env(small))[0] for _ in range(reps)]
    rows.append(common.result("buildctl run list (a Typer command)", common.median(mb), "MB",
                              baseline="python -c pass", baseline_value=base, samples=mb, figure=FIGURE, digits=1))

    # agent work: one worker through a whole run of no-op tasks.
    lst = work / "work.json"
    lst.write_text(json.dumps({"name": "memory-work", "max_parallel_agents": 1,
                               "tasks": [{"id": f"T-{i:03d}", "title": f"no-op {i}", "command": "true"}
                                         for i in range(1, tasks + 1)]}))
    p = subprocess.run(common.buildctl() + ["run", "start", str(lst)], env=common.env(small), capture_output=True,
                       text=True, check=True)
    ex = p.stdout.strip()
    argv, label = _agent_work_argv(small, ex)
    common.log(f"memory: {label} through {tasks} tasks")
    mb, secs, _ = peak(argv, common.env(small), cwd=work)
    conn = common.connect(small)
    done = conn.execute("SELECT completed_tasks FROM task_list_execution_runs WHERE execution_id = ?", (ex,)).fetchone()[0]
    conn.close()
    rows.append(common.result(f"agent work: 1 worker through {tasks} tasks", mb, "MB", baseline="python -c pass",
                              baseline_value=base, figure=FIGURE, digits=1,
                              notes=f"measured as `{label}`; {done}/{tasks} tasks completed in {secs:.1f} s"))

    # log tail --follow, then gc, on a copy of the large fleet database.
    template, shape = common.fleet(ws, QUICK_RUNS if quick else FULL_RUNS)
    big = work / "large.db"
    common.copy_db(template, big)
    follow_s = 2.0 if quick else 5.0
    out = work / "follow.out"
    written = []

    def feed(proc: subprocess.Popen) -> None:
        db = storage.connect(str(big))
        try:
            time.sleep(1.0)  # let it print the tail and start following
            end = time.time() + follow_s
            while time.time() < end and proc.poll() is None:
                written.append(execlog.add(db, shape["target"], "info", f"memory benchmark event {len(written)}"))
                time.sleep(0.05)
            runs.cancel(db, shape["target"])
        finally:
            db.close()

    common.log(f"memory: log tail --follow for {follow_s:g} s on {shape['log_rows']:,} log rows")
    with open(out, "wb") as f:
        mb, secs, _ = peak(common.buildctl() + ["log", "tail", shape["target"], "--follow", "--json"],
                           common.env(big), stdout=f, during=feed, timeout=120)
    printed = sum(1 for line in out.read_text().splitlines() if line.strip())
    rows.append(common.result("log tail --follow (large db)", mb, "MB", baseline="python -c pass", baseline_value=base,
                              figure=FIGURE, digits=1,
                              notes=f"followed {secs:.1f} s; printed {printed} events (500 of the tail, "
                                    f"{len(written)} appended, then the cancel's own events); exited 0 when the run ended"))

    common.log(f"memory: buildctl gc on {shape['heartbeats']:,} heartbeats")
    jf = work / "gc.json"
    with open(jf, "wb") as f:
        mb, secs, _ = peak(common.buildctl() + ["gc", "--json"], common.env(big), stdout=f)
    try:
        report = json.loads(jf.read_text())
        counts = ", ".join(f"{s['step']} {s['count']:,}" for s in report.get("steps", []))
    except (ValueError, KeyError, TypeError):
        counts = "report not parsed"
    rows.append(common.result("gc (large db, defaults)", mb, "MB", baseline="python -c pass", baseline_value=base,
                              figure=FIGURE, digits=1, notes=f"{secs:.1f} s; {counts}"))
    for suffix in ("", "-wal", "-shm"):
        Path(str(big) + suffix).unlink(missing_ok=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    return common.standalone(__doc__, argv, lambda args: run(args.quick))

if __name__ == "__main__":
    sys.exit(main())
