"""Every command's start-up on a small database (the budget: every command, migrate,
agent spawn, agent work and --help included, <= 350 ms per call), against baselines
measured in the same run.

    python benchmarks/bench_commands.py [--quick] [--json]

Every command declared in ``buildctl.cli.commands()`` — none is left out: a declared
command without a case here is a failure of this benchmark, not a row it skips — runs
as people and scripts call it, one process per call, with representative arguments on a
small database (a few runs of three no-op tasks): what it needs (a running run, an agent
holding a task, a fresh task-list file, a git repository, a new database for ``migrate``)
is made before each timed call, never during it. ``agent spawn`` runs both bare and with
``--next -- true``; ``migrate`` both on an up-to-date database and creating a new one;
``run exec`` and ``agent work`` each run a one-task run. Then ``--help`` of every command
and of every group, ``buildctl --help`` and the bare ``buildctl`` (usage, exit 2).

Baseline: the same interpreter's ``python -c pass``. Budget: <= 350 ms for every call (the
hot-path commands — heartbeat, log add, agent finish — also have their own, tighter budget
in figure 1). Calls run round-robin (one of each, then again) so that a noisy neighbour
slows them all alike; the first round is a warm-up (bytecode written, files cached).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = "2b. command start-up (small db)"
BUDGET_MS = 350.0
BASELINE = "python -c pass"


class Bench:
    """The small database, the files the commands need, and one case per call."""

    def __init__(self, work: Path):
        self.work = work
        self.db = work / "commands.db"
        self.env = common.env(self.db)
        self.n = 0
        common.migrate(self.db)
        self.repo = work / "repo"
        self.repo.mkdir()
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True, env=self.env)
        (self.repo / "a.txt").write_text("a\n")
        # A finished run (for the commands that look at one), and a live one.
        self.done_run = self.new_run()
        self.cli("run", "exec", self.done_run, "--jobs", "2")
        self.list_id = self.cli("run", "show", self.done_run, "--json", parse=True)["task_list_id"]
        self.live_run = self.new_run()
        self.agent = self.cli("agent", "spawn", self.live_run)
        self.cli("heartbeat", self.agent)
        self.cli("checkpoint", "create", self.live_run, "--task", "T-001", "--repo", str(self.repo))
        self.checkpoint = self.cli("checkpoint", "list", self.live_run, "--json", parse=True)[0]["id"]

    # -- helpers (never timed)
    def cli(self, *args: str, parse: bool = False, env: dict | None = None):
        p = subprocess.run(common.buildctl() + list(args), env=env or self.env, capture_output=True, text=True,
                           cwd=self.work)
        if p.returncode != 0:
            raise RuntimeError(f"buildctl {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
        return json.loads(p.stdout) if parse else p.stdout.strip()

    def list_file(self, tasks: int = 3) -> Path:
        """A new task-list file (a new list each time: a list has one active run at most)."""
        self.n += 1
        path = self.work / f"list-{self.n}.json"
        items = [{"id": f"T-{i:03d}", "title": f"no-op {i}", "command": "true"} for i in range(1, tasks + 1)]
        path.write_text(json.dumps({"name": f"bench-{self.n}", "max_parallel_agents": 2, "tasks": items}))
        return path

    def new_run(self, tasks: int = 3) -> str:
        return self.cli("run", "start", str(self.list_file(tasks)))

    def holding_agent(self) -> str:
        run = self.new_run(1)
        agent = self.cli("agent", "spawn", run)
        self.cli("agent", "claim", agent)
        return agent

    def paused_run(self) -> str:
        run = self.new_run()
        self.cli("run", "pause", run)
        return run

    def new_database(self) -> dict:
        self.n += 1
        return common.env(self.work / f"fresh-{self.n}.db")

    # -- the cases: name -> a function that prepares one call and returns (argv, env or None, exit code)
    def cases(self) -> dict:
        d, live, r = self.done_run, self.live_run, str(self.repo)
        plain = lambda *a: (lambda: (list(a), None, 0))  # noqa: E731
        c = {
            "tasks import": lambda: (["tasks", "import", str(self.list_file())], None, 0),
            "tasks list": plain("tasks", "list"),
            "tasks show": plain("tasks", "show", self.list_id),
            "run start": lambda: (["run", "start", str(self.list_file())], None, 0),
            "run list": plain("run", "list"),
            "run show": plain("run", "show", d),
            "run pause": lambda: (["run", "pause", self.new_run()], None, 0),
            "run resume": lambda: (["run", "resume", self.paused_run()], None, 0),
            "run cancel": lambda: (["run", "cancel", self.new_run()], None, 0),
            "run exec": lambda: (["run", "exec", self.new_run(1), "--jobs", "1"], None, 0),
            "run timeline": plain("run", "timeline", d),
            "run report": plain("run", "report", d, "--output", str(self.work / "report.html")),
            "waves": plain("waves", d),
            "heartbeat": plain("heartbeat", self.agent, "--progress", "50"),
            "agent spawn": plain("agent", "spawn", live),
            "agent spawn -- CMD": lambda: (["agent", "spawn", self.new_run(1), "--next", "--", "true"], None, 0),
            "agent claim": lambda: (["agent", "claim", self.cli("agent", "spawn", self.new_run(1))], None, 0),
            "agent done": lambda: (["agent", "done", self.holding_agent(), "--status", "completed"], None, 0),
            "agent work": lambda: (["agent", "work", self.new_run(1)], None, 0),
            "agent list": plain("agent", "list"),
            "agent show": plain("agent", "show", self.agent),
            "agent stale": plain("agent", "stale"),
            "agent finish": lambda: (["agent", "finish", self.cli("agent", "spawn", live), "--status", "completed"],
                                     None, 0),
            "log add": plain("log", "add", live, "info", "bench event", "--task", "T-001"),
            "log tail": plain("log", "tail", d, "-n", "500"),
            "log failures": plain("log", "failures", d),
            "checkpoint create": plain("checkpoint", "create", live, "--task", "T-001", "--repo", r),
            "checkpoint list": plain("checkpoint", "list", live),
            "checkpoint restore": plain("checkpoint", "restore", self.checkpoint, "--repo", r),
            "migrate": plain("migrate"),
            "migrate (new database)": lambda: (["migrate"], self.new_database(), 0),
            "gc": plain("gc"),
            "doctor": plain("doctor"),
            "metrics": plain("metrics"),
        }
        return c


def help_cases() -> dict:
    """``--help`` of every command and group, ``buildctl --help`` and the bare ``buildctl``."""
    from buildctl.cli import commands, groups

    c = {"buildctl (bare: usage)": ([], 2), "buildctl --help": (["--help"], 0)}
    for group, members in groups().items():
        if members:
            c[f"{group} --help"] = ([group, "--help"], 0)
    for path in commands():
        c[f"{' '.join(path)} --help"] = ([*path, "--help"], 0)
    return {name: (lambda a=argv, code=rc: (a, None, code)) for name, (argv, rc) in c.items()}


def _timed(argv: list[str], env: dict, code: int, cwd: Path) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd=cwd)
    ms = (time.perf_counter() - t0) * 1000.0
    if p.returncode != code:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode} (expected {code}): "
                           f"{p.stderr.decode(errors='replace').strip()[-500:]}")
    return ms


def run(quick: bool = False) -> list[dict]:
    from buildctl.cli import commands

    work = common.Workspace.get().dir("commands")
    bench = Bench(work)
    cases = bench.cases()
    declared = {" ".join(path) for path in commands()}
    missing = sorted(declared - {name.split(" (")[0].replace(" -- CMD", "") for name in cases})
    if missing:
        raise RuntimeError(f"no case for the declared command(s): {', '.join(missing)}: every command is measured")
    cases.update(help_cases())
    cases = {BASELINE: lambda: ([sys.executable, "-c", "pass"], None, 0), **cases}
    rounds = 2 if quick else 5
    common.log(f"commands: {len(cases) - 1} calls ({len(declared)} commands with arguments, the rest --help), "
               f"{rounds} rounds after a warm-up")
    bc = common.buildctl()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(1 + rounds):
        for name, prepare in cases.items():
            argv, env, code = prepare()
            ms = _timed(argv if name == BASELINE else bc + argv, env or bench.env, code, work)
            if i:
                times[name].append(ms)
    base = common.median(times[BASELINE])
    results = []
    for name, xs in times.items():
        med = common.median(xs)
        row = common.result(name if name == BASELINE else f"buildctl {name}", med, "ms", baseline=BASELINE,
                            baseline_value=base, samples=xs, figure=FIGURE, digits=1)
        if name != BASELINE:
            row.update(budget=f"<= {BUDGET_MS:.0f} ms", met=med <= BUDGET_MS)
        results.append(row)
    over = [r["name"] for r in results if r.get("met") is False]
    results.append(common.result(
        "commands over 350 ms", len(over), "calls", baseline="-", figure=FIGURE, digits=0,
        budget="0", met=not over,
        notes=(f"{len(results) - 1} calls measured, {len(declared)} declared commands; slowest "
               + ", ".join(f"{r['name']} {r['value']:.0f} ms" for r in
                           sorted(results[1:], key=lambda r: -r["value"])[:3])
               + ("; over: " + ", ".join(over) if over else ""))))
    return results


def main(argv: list[str] | None = None) -> int:
    return common.standalone(__doc__, argv, lambda args: run(args.quick))


if __name__ == "__main__":
    sys.exit(main())
