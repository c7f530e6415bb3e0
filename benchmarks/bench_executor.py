"""Executor overhead: `buildctl run exec` against tools that record nothing (issue 7).

    python benchmarks/bench_executor.py [--quick] [--json]

Case A: 500 no-op tasks (`true`) in one wave, list max_parallel_agents = 8,
``buildctl run exec EXEC --jobs 8`` (wall time of the command, from start to exit, with the
run completed) against, on the same 500 commands: ``xargs -P 8`` (each line run by
``sh -c``, as buildctl's workers do), ``make -j8`` (one phony target per command) and GNU
``parallel -j8`` ("not installed" when it is absent: ``apt-get install parallel``).
Budget: buildctl ≤ 0.5× GNU parallel and ≤ 2.5× xargs. Per-task overhead =
(buildctl wall − xargs wall) / 500.

Case B (issue 7): 200 tasks of `true` across 10 waves (each wave's tasks depend on the
previous wave), max_parallel_agents = 4, ``--jobs 4`` against ``xargs -P 4`` on the 200
commands at once, and (shown beside it) ``xargs -P 4`` once per wave, which keeps the same
barriers. Budget (issue 14): the same per-task overhead as the 500-task case may have,
(2.5 − 1) × the 500-task xargs wall / 500.

Each repetition runs a fresh run of a freshly imported list; the tools run round-robin.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = "6. executor overhead"
#: The budget: run exec's wall at most this share of GNU parallel's, and this multiple of xargs's.
PARALLEL_SHARE, XARGS_MULTIPLE = 0.5, 2.5
INSTALL_PARALLEL = "GNU parallel is not installed (apt-get install parallel)"


def _task_list(path: Path, name: str, tasks: int, waves: int, jobs: int) -> None:
    per_wave = tasks // waves
    items = []
    for i in range(tasks):
        item = {"id": f"T-{i + 1:04d}", "title": f"no-op {i + 1}", "command": "true"}
        if i >= per_wave:
            item["depends_on"] = [f"T-{i + 1 - per_wave:04d}"]
        items.append(item)
    path.write_text(json.dumps({"name": name, "max_parallel_agents": jobs, "tasks": items}))


def _epoch(stamp) -> float:
    """A log timestamp (UTC, as either engine stores it) as seconds since the epoch."""
    from datetime import timezone

    from buildctl.timeline import parse_time

    return parse_time(stamp).replace(tzinfo=timezone.utc).timestamp()


def _makefile(path: Path, tasks: int) -> None:
    names = " ".join(f"t{i}" for i in range(tasks))
    path.write_text(f".PHONY: all {names}\nall: {names}\n" + "".join(f"t{i}:\n\ttrue\n" for i in range(tasks)))


class Case:
    """One task-list shape, run by buildctl (on the database at ``db``: a file or a URL) and by
    the tools that record nothing."""

    def __init__(self, work: Path, db: Path | str, label: str, tasks: int, waves: int, jobs: int):
        self.work, self.db, self.label, self.tasks, self.waves, self.jobs = work, db, label, tasks, waves, jobs
        self.env = common.env(db)
        self.n = 0
        #: Per buildctl repetition: (start -> first task_started, last task_completed -> exit), ms.
        self.phases: list[tuple[float, float]] = []
        self.cmds = work / f"{label}.cmds"
        self.cmds.write_text("true\n" * tasks)
        per_wave = tasks // waves
        self.wave_files = []
        for w in range(waves):
            f = work / f"{label}.wave{w}.cmds"
            f.write_text("true\n" * per_wave)
            self.wave_files.append(f)
        _makefile(work / f"{label}.mk", tasks)

    def buildctl(self) -> float:
        import subprocess

        self.n += 1
        lst = self.work / f"{self.label}-{self.n}.json"
        _task_list(lst, f"{self.label}-{self.n}", self.tasks, self.waves, self.jobs)
        p = subprocess.run(common.buildctl() + ["run", "start", str(lst)], env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"run start failed: {p.stderr.strip()}")
        ex = p.stdout.strip()
        started = time.time()
        ms = common.run_timed(common.buildctl() + ["run", "exec", ex, "--jobs", str(self.jobs)], self.env,
                              cwd=self.work, timeout=600)
        ended = started + ms / 1000
        from buildctl import storage

        with storage.connect(str(self.db)) as conn:  # a SQLite file or a PostgreSQL URL
            status, done = conn.execute("SELECT status, completed_tasks FROM task_list_execution_runs "
                                        "WHERE execution_id = ?", (ex,)).fetchone()
            first, last = conn.execute(
                "SELECT MIN(CASE WHEN event_type = 'task_started' THEN timestamp END), "
                "MAX(CASE WHEN event_type = 'task_completed' THEN timestamp END) "
                "FROM task_execution_log WHERE execution_id = ?", (ex,)).fetchone()
        if status != "completed" or done != self.tasks:
            raise RuntimeError(f"run {ex} ended {status} with {done}/{self.tasks} tasks completed")
        self.phases.append(((_epoch(first) - started) * 1000, (ended - _epoch(last)) * 1000))
        return ms

    def phase_note(self) -> str:
        """Where the fixed cost sits: from the start of `run exec` to its first task_started, and
        from its last task_completed to its exit (medians; the log's timestamps)."""
        if not self.phases:
            return ""
        head = common.median([h for h, _ in self.phases])
        tail = common.median([t for _, t in self.phases])
        return (f"start to the first task_started {head:.0f} ms, the last task_completed to exit {tail:.0f} ms "
                f"(medians)")

    def xargs(self) -> float:
        with open(self.cmds, "rb") as f:
            return common.run_timed(["xargs", "-P", str(self.jobs), "-n", "1", "sh", "-c"], common.env(), stdin=f)

    def xargs_per_wave(self) -> float:
        total = 0.0
        for wf in self.wave_files:
            with open(wf, "rb") as f:
                total += common.run_timed(["xargs", "-P", str(self.jobs), "-n", "1", "sh", "-c"], common.env(), stdin=f)
        return total

    def make(self) -> float:
        return common.run_timed(["make", "-s", f"-j{self.jobs}", "-f", str(self.work / f"{self.label}.mk")],
                                common.env(), cwd=self.work)

    def parallel(self) -> float:
        with open(self.cmds, "rb") as f:
            return common.run_timed(["parallel", "--will-cite", f"-j{self.jobs}"], common.env(), stdin=f)


def run(quick: bool = False) -> list[dict]:
    ws = common.Workspace.get()
    work = ws.dir("executor")
    db = work / "exec.db"
    common.migrate(db)
    have_parallel = shutil.which("parallel") is not None
    have_xargs, have_make = shutil.which("xargs") is not None, shutil.which("make") is not None
    results = []
    missing = [t for t, ok in (("xargs -P 8", have_xargs), ("make -j8", have_make), ("GNU parallel -j8", have_parallel))
               if not ok]

    a = Case(work, db, "one-wave", 500, 1, 8)
    cases = {"buildctl run exec --jobs 8": a.buildctl}
    if have_xargs:
        cases["xargs -P 8"] = a.xargs
    if have_make:
        cases["make -j8"] = a.make
    if have_parallel:
        cases["GNU parallel -j8"] = a.parallel
    reps = 1 if quick else 5
    common.log(f"executor: 500 no-op tasks in one wave, {reps} repetitions of {', '.join(cases)}")
    t = common.time_round_robin(cases, reps, warmup=0)
    xargs = common.median(t["xargs -P 8"]) if have_xargs else None
    par = common.median(t["GNU parallel -j8"]) if have_parallel else None
    bc = common.median(t["buildctl run exec --jobs 8"])
    base_name = "GNU parallel -j8" if par else "xargs -P 8" if xargs else "buildctl run exec --jobs 8"
    base_ms = par or xargs or bc
    for name, xs in t.items():
        med = common.median(xs)
        row = common.result(f"500 tasks, 1 wave: {name}", med / 1000, "s", baseline=base_name,
                            baseline_value=base_ms / 1000, samples=[x / 1000 for x in xs], figure=FIGURE, digits=3)
        if name.startswith("buildctl"):
            row["budget"] = f"<= {PARALLEL_SHARE}x GNU parallel -j8, <= {XARGS_MULTIPLE}x xargs -P 8"
            if par and xargs:
                row["met"] = bc <= PARALLEL_SHARE * par and bc <= XARGS_MULTIPLE * xargs
            row["notes"] = ((f"{bc / xargs:.2f}x xargs -P 8; per-task overhead vs xargs -P 8: {(bc - xargs) / 500:.2f} "
                             f"ms/task ((buildctl {bc / 1000:.2f} s - xargs {xargs / 1000:.2f} s) / 500); " if xargs else "")
                            + a.phase_note() + ("" if par else f"; {INSTALL_PARALLEL}: budget not checked"))
        results.append(row)
    for tool in missing:
        results.append(common.result(f"500 tasks, 1 wave: {tool}", None, "s", baseline="-", figure=FIGURE,
                                     notes=INSTALL_PARALLEL if tool.startswith("GNU") else "not installed"))
    if xargs:
        results.append(common.result("500 tasks, 1 wave: buildctl overhead per task", (bc - xargs) / 500, "ms/task",
                                     baseline="xargs -P 8", baseline_value=xargs / 500, figure=FIGURE, digits=2,
                                     notes="(buildctl wall - xargs wall) / 500; baseline = xargs wall / 500"))

    if not have_xargs:
        return results
    b = Case(work, db, "ten-waves", 200, 10, 4)
    cases = {"buildctl run exec --jobs 4": b.buildctl, "xargs -P 4": b.xargs,
             "xargs -P 4, once per wave": b.xargs_per_wave}
    reps = 1 if quick else 5
    common.log(f"executor: 200 no-op tasks in 10 waves, {reps} repetitions of {', '.join(cases)}")
    t = common.time_round_robin(cases, reps, warmup=0)
    xargs4 = common.median(t["xargs -P 4"])
    bc4 = common.median(t["buildctl run exec --jobs 4"])
    for name, xs in t.items():
        med = common.median(xs)
        row = common.result(f"200 tasks, 10 waves: {name}", med / 1000, "s", baseline="xargs -P 4",
                            baseline_value=xargs4 / 1000, samples=[x / 1000 for x in xs], figure=FIGURE, digits=3)
        if name.startswith("buildctl"):
            row["notes"] = f"per-task overhead vs xargs -P 4: {(bc4 - xargs4) / 200:.2f} ms/task; {b.phase_note()}"
        results.append(row)
    allowance = (XARGS_MULTIPLE - 1) * xargs / 500
    results.append(common.result(
        "200 tasks, 10 waves: buildctl overhead per task", (bc4 - xargs4) / 200, "ms/task", baseline="xargs -P 4",
        baseline_value=xargs4 / 200, figure=FIGURE, digits=2,
        budget=f"<= the 500-task allowance, {allowance:.2f} ms/task", met=(bc4 - xargs4) / 200 <= allowance,
        notes=f"(buildctl wall - xargs -P 4 wall) / 200; allowance = ({XARGS_MULTIPLE} - 1) x xargs -P 8 wall / 500"))
    return results


def main(argv: list[str] | None = None) -> int:
    return common.standalone(__doc__, argv, lambda args: run(args.quick))

if __name__ == "__main__":
    sys.exit(main())
