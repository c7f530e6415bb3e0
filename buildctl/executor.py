"""`buildctl run exec`: drive a run on this machine with N worker processes.

The workers are real processes (`buildctl agent work EXEC --agent ID`), this process's
children. The first one is forked from `run exec` before it opens the database
(Zygote.fork; started as a new interpreter where that cannot be), and forks the others
once told to (worker.fork_peers): a worker's start is mostly its interpreter's and its
imports' (~40 ms of CPU each), more than a few hundred short tasks cost. While it
forks, this process is a child subreaper, so that each fork re-parents here. This
module registers each worker's agent itself, so that it knows whose worker died: a
worker that exits while its agent is still live (SIGKILL, the OOM killer, a crash) is
noticed at once — its agent is marked failed with the signal in ``error_context``,
its task released in the same transaction (the attempt counts), what is left of the
task's processes killed, and a replacement started while the run has work (runs heal
themselves, with no cron). It samples the database for the live view, and on Ctrl-C,
SIGTERM or SIGHUP cancels the run so that every worker stops its task and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from buildctl import storage
from buildctl.storage import Database

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from typing import Callable

#: A worker that dies within this many seconds of its start, or before its agent did
#: anything (no heartbeat, no task) however long that took, counts as a quick death;
#: after MAX_QUICK_DEATHS of them in a row no replacement is started (a worker that
#: crashes at start must not be respawned forever). The second rule keeps a loaded
#: machine, whose interpreters start slowly, from restarting the count.
QUICK_DEATH_S = 3.0
MAX_QUICK_DEATHS = 3
#: The signals that end `run exec` like Ctrl-C (CI runners and systemd send SIGTERM; a
#: closed terminal, SIGHUP).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ExecResult:
    """How a `run exec` went. (Plain classes here, not dataclasses: importing dataclasses
    costs ~8 ms, on a command whose start-up is part of every run.)"""

    def __init__(self, execution_id: str, status: str):
        self.execution_id = execution_id
        self.status = status
        self.worker_codes: list[int] = []
        #: Per worker that said something: its stderr; and one line per worker that died.
        self.worker_errors: list[str] = []
        self.interrupted = False
        #: The signal that ended `run exec` (SIGINT, SIGTERM, SIGHUP), or None: the command
        #: exits 128 + signal, as a shell reports a process the signal killed.
        self.signal: int | None = None
        self.snapshot: dict | None = None


def snapshot(db: Database, execution_id: str) -> dict:
    """What the live view shows: the wave summary and the tasks held right now."""
    from buildctl import runs, states

    summary = runs.wave_summary(db, execution_id)
    running = db.query(
        f"""
        SELECT t.display_id, t.title, a.status, a.instance_id, w.wave_number, a.assigned_at, b.last_heartbeat,
               {db.sql.age_s('a.assigned_at')} AS elapsed_s,
               {db.sql.age_s('COALESCE(b.last_heartbeat, b.spawned_at)')} AS heartbeat_age_s
        FROM wave_task_assignments a
        JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
        JOIN tasks t ON t.id = a.task_id
        LEFT JOIN build_agent_instances b ON b.instance_id = a.instance_id
        WHERE w.execution_id = ? AND a.status IN {states.sql_list(states.ASSIGNMENT_HELD)}
        ORDER BY a.assigned_at, a.id
        """,
        (execution_id,),
    )
    return {"summary": summary, "running": running, "failed": failed_tasks(db, execution_id)}


def failed_tasks(db: Database, execution_id: str) -> list[dict]:
    """The run's tasks that failed for good, each with the error of its last attempt."""
    from buildctl import jsonstrict

    rows = db.query(
        "SELECT t.id AS task_id, t.display_id, t.title, w.wave_number FROM wave_task_assignments a "
        "JOIN parallel_execution_waves w ON w.wave_id = a.wave_id JOIN tasks t ON t.id = a.task_id "
        "WHERE w.execution_id = ? AND a.status = 'failed' ORDER BY w.wave_number, t.position", (execution_id,))
    for r in rows:
        last = db.one("SELECT message, context FROM task_execution_log WHERE execution_id = ? AND task_id = ? "
                      "AND event_type = 'task_failed' ORDER BY id DESC LIMIT 1", (execution_id, r["task_id"]))
        context = jsonstrict.stored(last["context"], {}) if last else {}
        error = context.get("error") if isinstance(context, dict) else None
        r["error"] = error or (last["message"] if last else "")
    return rows


def worker_command(execution_id: str, agent_id: str, *, repo: str | None, checkpoints: bool) -> list[str]:
    """`buildctl agent work EXEC --agent ID`, run by this interpreter. The database goes in
    the environment (BUILDCTL_DB), not in argv, where `ps` would show a URL's password."""
    cmd = [sys.executable, "-m", "buildctl", "agent", "work", execution_id, "--agent", agent_id]
    if repo:
        cmd += ["--repo", repo]
    if checkpoints:
        cmd.append("--checkpoints")
    return cmd


class _Worker:
    """One worker of the pool: its agent, its process (None while the zygote has yet to
    report its fork, see worker.fork_peers) and the file its stderr goes to."""

    def __init__(self, agent_id: str, stderr, started: float):
        self.agent_id = agent_id
        self.proc = None
        self.exited: int | None = None
        self.stderr = stderr  # a temporary file
        self.started = started

    def attach(self, proc) -> None:
        """``proc``: a subprocess.Popen, or an _Adopted fork."""
        self.proc = proc
        try:  # readable the moment the worker exits (Linux); see _Pool.wait
            self.exited = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.exited = None

    def running(self) -> bool:
        return self.proc is None or self.proc.returncode is None

    def close(self) -> None:
        if self.exited is not None:
            os.close(self.exited)
            self.exited = None


class _Adopted:
    """A worker this process forked (Zygote.fork), or one the zygote forked and this process
    adopted (its child, as a subreaper): the part of subprocess.Popen that _Pool uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours to wait for after all: gone, its code unknown
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                import subprocess

                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _child_subreaper(on: bool) -> bool:
    """Make this process the one its orphaned descendants re-parent to (Linux
    PR_SET_CHILD_SUBREAPER), or stop being it; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0  # 36: PR_SET_CHILD_SUBREAPER
    except (ImportError, OSError, AttributeError):
        return False


def _children() -> list[int]:
    """This process's children (every thread's), from /proc."""
    out = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(pid) for pid in f.read().split()]
    except OSError:
        pass
    return out


class Zygote:
    """A run's first worker, waiting for its word (worker.fork_peers), with what it needs to
    fork the others: their agents (ids made here, registered later), a spool file each for
    their stderr, the go pipe, the pipe the forks report on. Either forked from `run exec`
    itself (``fork``), before it opens its database — no connection may cross a fork — so
    that its start costs a fork instead of an interpreter's and overlaps `run exec`'s own;
    or started as `buildctl agent work` (_Pool.start, for a worker started later)."""

    def __init__(self, count: int):
        from buildctl import ids
        from buildctl.worker import spool_file

        now = time.monotonic()
        self.workers = [_Worker(ids.new_id("agent"), spool_file(), now) for _ in range(count)]
        self.first = self.workers[0]
        self.go_read, self.go = os.pipe()
        self.reports, self.report_write = os.pipe() if count > 1 else (None, None)
        if self.reports is not None:
            os.set_blocking(self.reports, False)

    @classmethod
    def fork(cls, count: int, serve: Callable[[list[str]], int]) -> "Zygote | None":
        """Fork the first worker of ``count`` from this process, which must have no
        connection open; it becomes `buildctl agent work` through ``serve``
        (worker.serve_forked) once it has its word. None where a fork is not safe (another
        thread runs, whose locks would be copied held: a test runner, a program calling
        buildctl in-process) or fails: the first worker is then started as a new process."""
        from buildctl import worker

        if threading.active_count() > 1 or not hasattr(os, "fork"):
            return None
        zygote = cls(count)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write it again
        try:
            pid = os.fork()
        except OSError:  # no process to be had now (EAGAIN, ENOMEM): start it later, or say why then
            zygote.started()
            zygote.dismiss()
            return None
        if pid == 0:
            os.close(zygote.go)
            if zygote.reports is not None:
                os.close(zygote.reports)
            worker.serve_forked(zygote.go_read, zygote.report_write,
                                [(w.agent_id, w.stderr.fileno()) for w in zygote.workers], serve)
        zygote.first.attach(_Adopted(pid))
        zygote.started()
        return zygote

    @property
    def passed(self) -> tuple[int, ...]:
        """The descriptors a started first worker inherits."""
        if self.reports is None:
            return (self.go_read,)
        return (self.go_read, self.report_write, *(w.stderr.fileno() for w in self.workers[1:]))

    def started_env(self) -> dict:
        """The environment that tells a started first worker where its word and peers are."""
        from buildctl.worker import FORK_AGENTS_ENV, FORK_GO_ENV, FORK_REPORT_ENV

        env = {FORK_GO_ENV: str(self.go_read)}
        if self.reports is not None:
            env[FORK_AGENTS_ENV] = ",".join(f"{w.agent_id}:{w.stderr.fileno()}" for w in self.workers[1:])
            env[FORK_REPORT_ENV] = str(self.report_write)
        return env

    def started(self) -> None:
        """The first worker holds its ends of the pipes now: close ours."""
        os.close(self.go_read)
        if self.report_write is not None:
            os.close(self.report_write)

    def send(self, word: str, **message) -> None:
        from buildctl.worker import send_message

        go, self.go = self.go, None
        send_message(go, {"word": word, **message})

    def dismiss(self) -> None:
        """No word (once the word is sent, nothing): the first worker leaves without touching
        the database, and is waited for here; what the workers were to have is closed."""
        if self.go is None:
            return
        os.close(self.go)
        self.go = None
        if self.reports is not None:
            os.close(self.reports)
            self.reports = None
        for w in self.workers[1:]:
            w.stderr.close()
        if self.first.proc is not None:
            self.first.proc.wait()  # its start, at most
            self.first.close()
        self.first.stderr.close()


class _Pool:
    """The worker processes of one `run exec`, each working as an agent registered here."""

    def __init__(self, db: Database, location: str, execution_id: str, result: ExecResult, *, repo: str | None,
                 checkpoints: bool, config: dict | None):
        self.db, self.location, self.execution_id, self.result = db, location, execution_id, result
        self.repo, self.checkpoints, self.config = repo, checkpoints, config
        self.workers: list[_Worker] = []
        self.quick_deaths = 0
        self.gave_up = False
        #: The zygote's report pipe (worker.fork_peers) while forks are awaited, and what
        #: has been read of it; whether this process was ever a subreaper.
        self.reports: int | None = None
        self.report_text = b""
        self.adopting = False

    def alive(self) -> list[_Worker]:
        return [w for w in self.workers if w.running()]

    def wait(self, timeout: float) -> None:
        """Sleep until a worker exits (or the zygote reports a fork) or ``timeout`` passes:
        the last worker's exit ends `run exec` at once, not at the next tick (that tick
        was a quarter of a second of every run; a plain sleep where pidfds are missing)."""
        started = [w for w in self.alive() if w.proc is not None]
        exits = [w.exited for w in started]
        if None not in exits:
            import select

            select.select(exits + ([self.reports] if self.reports is not None else []), [], [], timeout)
        else:
            time.sleep(timeout)

    def start(self, count: int = 1, zygote: Zygote | None = None) -> bool:
        """Start ``count`` workers (``zygote``'s, when given: forked before the database was
        opened) and register their agents (one transaction); False when the run takes no new
        agents. The first worker is started before the agents are registered, so that its
        start overlaps that, and waits for our word (worker.fork_peers): "fork" the others,
        "go" alone, or nothing (it stands down)."""
        from buildctl import agents
        from buildctl.errors import Conflict, ConnectionLost

        if zygote is None:
            zygote = Zygote(count)
            try:
                self._popen(zygote.first, zygote.started_env(), pass_fds=zygote.passed)
            except BaseException:
                zygote.dismiss()
                raise
            finally:
                zygote.started()
        else:
            self.workers.append(zygote.first)
        agent_ids = [w.agent_id for w in zygote.workers]

        def register() -> None:
            try:
                agents.spawn_many(self.db, self.execution_id, agent_ids, config=self.config)
            except ConnectionLost:  # registered or not (all or none)? look, on a new connection
                if not _again(lambda: self.db.scalar("SELECT 1 FROM build_agent_instances WHERE instance_id = ?",
                                                     (agent_ids[0],))):
                    raise  # not registered: send it again

        try:
            _again(register)
        except BaseException as exc:
            zygote.dismiss()  # no word: the first worker leaves without touching the database
            self.workers.remove(zygote.first)
            if not isinstance(exc, Conflict):
                raise
            return False  # the run ended (or was cancelled) meanwhile
        # The first worker forks the others: one interpreter's start instead of ``count``.
        # Each fork re-parents here (as a subreaper) and reports "ID PID" once it is our child.
        # (A first worker gone already cannot read its word: reap() settles its agent, and
        # starts the peers it did not fork.)
        peers = zygote.workers[1:]
        adopting = bool(peers) and _child_subreaper(True)
        zygote.send("fork" if adopting else "go",
                    argv=worker_command(self.execution_id, zygote.first.agent_id, repo=self.repo,
                                        checkpoints=self.checkpoints),
                    location=self.location)
        if adopting:
            self.adopting = True
            self.reports = zygote.reports
            self.workers += peers
            return True
        if zygote.reports is not None:
            os.close(zygote.reports)
        for w in peers:
            self._popen(w)
        return True

    def _popen(self, w: _Worker, extra_env: dict | None = None, pass_fds: tuple = ()) -> None:
        """Start ``w``'s worker as a new `buildctl agent work` process."""
        import subprocess

        env = {**os.environ, "BUILDCTL_DB": self.location, **(extra_env or {})}
        # Their own session: a Ctrl-C (or a terminal's SIGHUP) reaches only us, and we
        # cancel the run cleanly.
        w.attach(subprocess.Popen(worker_command(self.execution_id, w.agent_id, repo=self.repo,
                                                 checkpoints=self.checkpoints),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w.stderr,
                                  start_new_session=True, env=env, pass_fds=pass_fds))
        if w not in self.workers:
            self.workers.append(w)

    def _read_reports(self) -> None:
        """Adopt the forks the zygote reported; once it is done (the pipe's end), start as
        new processes the workers it did not fork, and stop being a subreaper."""
        while self.reports is not None:
            try:
                data = os.read(self.reports, 4096)
            except BlockingIOError:
                return
            if data:
                self.report_text += data
                *lines, self.report_text = self.report_text.split(b"\n")
                for line in lines:
                    agent_id, _, pid = line.decode().partition(" ")
                    w = next((w for w in self.workers if w.agent_id == agent_id and w.proc is None), None)
                    if w is not None:
                        if pid.isdigit():
                            w.attach(_Adopted(int(pid)))
                        else:
                            self._popen(w)  # the fork could not be our child
                continue
            os.close(self.reports)
            self.reports = None
            _child_subreaper(False)
            for w in [w for w in self.workers if w.proc is None]:
                self._popen(w)  # the zygote ended before it forked these

    def _reap_strays(self) -> None:
        """Orphans that re-parented here while this process was a subreaper (a worker's task
        watcher, a task's detached process) stay its children: wait for those that ended,
        so that none stays a zombie."""
        ours = {w.proc.pid for w in self.workers if w.proc is not None}
        for pid in _children():
            if pid not in ours:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def reap(self, *, replace: bool) -> None:
        """Deal with every worker that exited since the last look; with ``replace``, start
        a replacement for each while the run still has work."""
        from buildctl import assignments

        self._read_reports()
        if self.adopting and self.reports is None:  # every fork is known by now: none is taken for a stray
            self._reap_strays()
        for w in [w for w in self.workers if w.proc is not None and w.proc.returncode is None
                  and w.proc.poll() is not None]:
            lived = time.monotonic() - w.started
            died = self._settle(w)
            if died and (died == "at start" or lived < QUICK_DEATH_S):
                self.quick_deaths += 1
            else:
                self.quick_deaths = 0
            if not replace or self.gave_up or assignments.run_state(self.db, self.execution_id) == "done":
                continue
            if self.quick_deaths >= MAX_QUICK_DEATHS:
                self.gave_up = True
                self.result.worker_errors.append(
                    f"{self.quick_deaths} workers in a row died within {QUICK_DEATH_S:g} s of starting "
                    "or before their first heartbeat; no replacement started")
                continue
            self.start()

    def _settle(self, w: _Worker) -> str | None:
        """A worker exited: collect what it said; if its agent is still live, it died —
        kill what is left of its task, mark the agent failed and release its task (one
        transaction). None when it did not die or fail; "at start" when its agent had done
        nothing yet (no heartbeat: a worker sends its first as it starts its work); else
        "died"."""
        from buildctl import agents, states
        from buildctl.errors import Conflict
        from buildctl.worker import agent_marker, kill_marked

        code = w.proc.returncode
        w.close()
        w.stderr.seek(0)
        # Only its error lines: the summary `agent work` prints for a person at its end
        # ("agent …: 3 task(s) run") is noise under run exec, which shows the whole run.
        errors = [line for line in w.stderr.read().decode("utf-8", "replace").splitlines()
                  if line.startswith("error: ")]
        w.stderr.close()
        if errors:
            self.result.worker_errors.append("\n".join(errors))
        agent = _again(lambda: self.db.one(
            "SELECT status, last_heartbeat FROM build_agent_instances WHERE instance_id = ?", (w.agent_id,))) or {}
        status = agent.get("status")
        died = "at start" if agent.get("last_heartbeat") is None else "died"
        if status not in states.AGENT_LIVE:
            return died if status == "failed" and code != 0 else None
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            how, extra = f"killed by {name}", {"signal": -code}
        else:
            how, extra = f"exited with code {code} while its agent was live", {"exitCode": code}
        message = f"worker pid {w.proc.pid} {how}"
        # Its task's processes die first, here, before the task is released (the worker's
        # watcher kills them too, but in its own time), so the retry never overlaps.
        kill_marked(agent_marker(w.agent_id))
        try:
            ended = _again(lambda: agents.finish(self.db, w.agent_id, "failed", error=message,
                                                 context={"code": "worker_died", "pid": w.proc.pid, **extra}))
        except Conflict:
            return died  # ended meanwhile (a peer found it stale, or our finish whose reply was lost)
        released = ", ".join(f"assignment {r['assignment_id']} {r['outcome']}" for r in ended["released"])
        # The command prints these as `worker: …`.
        self.result.worker_errors.append(f"pid {w.proc.pid} {how}; agent {w.agent_id} marked failed"
                                         + (f"; its task was released ({released})" if released else ""))
        return died

    def terminate(self) -> None:
        for w in self.alive():
            if w.proc is not None:
                w.proc.terminate()

    def stop(self) -> None:
        """Leave no worker behind: SIGTERM (each stops its task), then SIGKILL after 30 s."""
        deadline = time.monotonic() + 30
        while self.reports is not None and time.monotonic() < deadline:  # every fork known first
            self._read_reports()
            if self.reports is not None:
                import select

                select.select([self.reports], [], [], 0.05)
        self.terminate()
        for w in self.workers:
            if w.proc is None or w.proc.poll() is not None:
                continue
            # Imported only where needed (~3 ms): a run's workers are forks, not Popens, and
            # `run exec` sends the first its word sooner without it.
            import subprocess

            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        self.reap(replace=False)
        self.result.worker_codes = [w.proc.returncode for w in self.workers if w.proc is not None]


def execute(location: str, execution_id: str, *, jobs: int, repo: str | None = None, checkpoints: bool = False,
            config: dict | None = None, on_tick: Callable[[dict], None] | None = None,
            on_started: Callable[[], None] | None = None, tick_s: float = 0.25,
            db: Database | None = None, zygote: Zygote | None = None) -> ExecResult:
    """Start ``jobs`` workers and wait for them, replacing those that die while the run
    has work. On Ctrl-C, SIGTERM or SIGHUP cancel the run and wait for the workers to
    stop their tasks (a second signal SIGTERMs them now); ``result.signal`` names the
    first signal. No worker is left behind when this returns. ``on_started()`` runs once
    the first workers are started; ``on_tick(snapshot)`` at every look. ``db``: the
    caller's connection to ``location``, used instead of a new one and left open;
    ``zygote``: the first worker, forked before that connection was opened (Zygote.fork)."""
    from buildctl import agentstate, runs
    from buildctl.errors import ConnectionLost

    borrowed = db is not None
    if db is None:
        db = storage.connect(location)
    # A lost connection is opened again on the next statement, for as long as a worker waits.
    db.reconnect_s = agentstate.stale_after_s(agentstate.parse_config(config))
    result = ExecResult(execution_id, "")
    pool = _Pool(db, location, execution_id, result, repo=repo, checkpoints=checkpoints, config=config)
    signals = _StopSignals()
    try:
        if not signals.count:
            pool.start(jobs, zygote)
        if on_started is not None:
            on_started()
        terminated = False
        while True:
            if signals.count and not result.interrupted:
                result.interrupted, result.signal = True, signals.first
                try:
                    runs.cancel(db, execution_id)  # every worker sees it and stops its task
                except Exception:
                    pass  # already ended: the workers are leaving anyway
            if signals.count >= 2 and not terminated:
                pool.terminate()
                terminated = True
            try:
                if on_tick is not None:
                    on_tick(snapshot(db, execution_id))
                pool.reap(replace=not result.interrupted)
            except ConnectionLost:
                pass  # the next tick reconnects and looks again
            if not pool.alive():
                break
            pool.wait(tick_s)
        if signals.count and not result.interrupted:
            result.interrupted, result.signal = True, signals.first
        result.status = _again(lambda: db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?",
                                                 (execution_id,)))
        result.snapshot = _again(lambda: snapshot(db, execution_id))
    finally:
        try:
            pool.stop()
        finally:
            signals.restore()
            if not borrowed:
                db.close()
    return result


#: How many times ``_again`` sends a call whose connection was lost while it ran.
AGAIN_TRIES = 10


def _again(call):
    """``call()``, again after each connection lost while it ran (the connection reconnects
    on its next statement, with backoff), up to AGAIN_TRIES times: for reads, and writes
    that refuse to run twice (Conflict). Once was not enough: with every connection
    terminated every 0.3 s, a multi-statement call could lose its new connection too."""
    from buildctl.errors import ConnectionLost

    for _ in range(AGAIN_TRIES - 1):
        try:
            return call()
        except ConnectionLost:
            pass
    return call()


class _StopSignals:
    """Counts Ctrl-C, SIGTERM and SIGHUP and remembers the first; the loop acts on them at
    its next tick. (A handler that raised could cut a transaction or the clean-up short.)
    Off the main thread Python cannot install handlers: the caller's stay in force."""

    def __init__(self):
        self.count, self.first = 0, None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    def _on_signal(self, signum, frame) -> None:
        self.first = self.first or signum
        self.count += 1

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
