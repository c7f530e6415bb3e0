"""`buildctl agent work`: the worker loop that runs a run's tasks as real processes.

One worker = one registered agent. It claims the next assignment (the wave barrier
and the run's max_parallel_agents are enforced atomically by assignments.claim_next),
optionally checkpoints the repository, runs the task's command through the shell,
runs its validation, reports, retries with backoff (restoring the checkpoint first),
and moves on until the run has nothing left for it.

A background thread heartbeats every heartbeatIntervalMs with the child's memory and
CPU. It also fences the worker: if the assignment was taken away (the agent was
marked stale and the task released) or the run was cancelled, it stops the child at
once; if it cannot write a heartbeat for longer than the stale threshold, it stops
the child and the worker exits, so that a task never runs twice at once. A worker
whose agent was marked stuck (by a peer, or because its task made no progress) stops.

While it waits for work, a worker also recovers its run's stale peers (a lease that
expires): a worker that died with nobody to notice has its task handed back once its
heartbeats are older than staleAfterMs. The task's processes die with their worker,
detached ones included (see _WATCHER).

Stdlib only at module level: `run exec` starts workers as `buildctl agent work EXEC --agent ID`, which comes here without Typer.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import sqlite3
import sys
import threading
import time

from buildctl import agents, agentstate, assignments, execlog, exitcodes, ids, states, storage
from buildctl.errors import BuildctlError, Conflict, ConnectionLost, DatabaseError, InvalidInput, NotFound, UsageError

STDERR_TAIL_LINES = 20
#: A worker waiting at the barrier looks every poll_min_s for this long, then less and less
#: often: the wave's last tasks of a fast run end within it (a pause grown to 40 ms in a
#: short quiet spell had a worker leave a finished run 45 ms after the others).
BRISK_WAIT_S = 0.25
#: An idle worker looks for stale peers of its run at most this often (the lease check).
RECOVERY_INTERVAL_S = 1.0
#: The workers of a database checkpoint its WAL at most this often between them
#: (storage.pace_checkpoints): often enough that the WAL starts over while a short run goes,
#: and what is left to copy and delete when the run's last connection closes is small (that
#: is part of run exec's end: ~50 ms at 1 s, ~18 ms at 0.25 s per worker, on 500 no-op tasks;
#: 0.05 s for all of them took 15-20 ms more off the end of 200 tasks in 10 waves).
CHECKPOINT_PACE_S = 0.05


class Options:
    """How `agent work` (or `agent spawn -- CMD`) works. (Plain classes, not dataclasses:
    importing dataclasses costs a worker ~8 ms of its start, and `run exec` starts many.)"""

    def __init__(self, execution_id: str, *, agent_id: str | None = None, repo: str | None = None,
                 checkpoints: bool = False, max_tasks: int | None = None, config: dict | None = None,
                 poll_min_s: float = 0.005, poll_max_s: float = 1.0):
        self.execution_id = execution_id
        #: Work as this registered agent instead of registering one (`run exec` registers
        #: its workers' agents itself, so that it knows whose worker died).
        self.agent_id = agent_id
        self.repo = repo
        self.checkpoints = checkpoints
        self.max_tasks = max_tasks
        self.config = config
        #: While the barrier holds: how often to look for a commit by anyone, and how long
        #: to go without one before looking at the run again anyway.
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s


class Outcome:
    """What a worker did, for its last line and its exit code."""

    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        self.tasks_run = 0
        self.completed = 0
        self.failed = 0
        self.reason = ""
        self.exit_code = 0


#: `run exec`'s first worker is the others' zygote (issue 14): a new interpreter spends
#: ~40 ms of CPU importing what a worker needs, eight of them more than the 500 no-op
#: tasks they then run. `run exec` forks it from itself first thing, before it opens the
#: database (serve_forked; where it must start one later, a replacement, it starts
#: `buildctl agent work` as a new process), so that its start overlaps `run exec`'s own
#: work, and sends it its word down the go pipe (FORK_GO_ENV in a started worker) once
#: the agents exist, as one JSON line: "go" (work as its own agent), "fork" (first fork
#: the other workers), with the worker's command line and database; or nothing at all
#: (the pipe's end: the agents were not registered; it leaves without touching the
#: database). To fork, once imported and before it opens any connection or thread, it
#: forks one worker for each other agent named in FORK_AGENTS_ENV ("ID:FD,…": the agent
#: and the descriptor that is to be its stderr). Each fork is made through a short-lived
#: middle process, so that the worker re-parents to `run exec` (a child subreaper while
#: it waits for them) and is its direct child, as a started one is; it rewrites its
#: command line to name its own agent, so that `ps`, `pgrep -f` and /proc show `… agent
#: work EXEC --agent ID` for every worker (set_command_line); and it writes "ID PID" down
#: FORK_REPORT_ENV's pipe once `run exec` is its parent ("ID -": it could not be, and is
#: gone). Where a command line cannot be set, the worker executes itself anew, under the
#: same pid.
FORK_GO_ENV = "BUILDCTL_FORK_GO"
FORK_AGENTS_ENV = "BUILDCTL_FORK_AGENTS"
FORK_REPORT_ENV = "BUILDCTL_FORK_REPORT"
#: How long a forked worker waits to be re-parented to `run exec` (a few ms, normally).
ADOPTION_WAIT_S = 5.0


class StandDown(Exception):
    """`run exec` closed the go pipe without a word: the worker's agent was never registered."""


def fork_peers(agent_id: str | None, location: str | None) -> str | None:
    """In a worker `run exec` started (FORK_GO_ENV set): wait for its word, and fork the
    other workers when it says "fork"; returns the agent this process works as from here
    on (``agent_id`` in the zygote, its own in each fork). Raises StandDown when `run
    exec` has no agent for it. Without FORK_GO_ENV (a worker started by hand): returns
    ``agent_id``, nothing forked. Call it before opening a connection or starting a
    thread: neither survives a fork. ``location``: the database's, whose driver is
    imported here, once, while `run exec` registers the agents."""
    go = os.environ.pop(FORK_GO_ENV, None)
    spec = os.environ.pop(FORK_AGENTS_ENV, None)
    report = os.environ.pop(FORK_REPORT_ENV, None)
    if go is None or agent_id is None:
        return agent_id
    peers = [(peer, int(fd)) for peer, fd in (item.split(":") for item in spec.split(","))] if spec else []
    report_fd = int(report) if report is not None else None
    from buildctl import jsonstrict

    jsonstrict.dumps({})  # its lazy `import json`, once here instead of in every fork
    storage.load_driver(location)
    word = (read_message(int(go)) or {}).get("word")
    if word != "fork" or report_fd is None:
        for fd in [fd for _, fd in peers] + ([report_fd] if report_fd is not None else []):
            os.close(fd)
        if word not in ("go", "fork"):
            raise StandDown()
        return agent_id
    parent = os.getppid()
    for peer, stderr_fd in peers:
        middle = os.fork()
        if middle == 0:
            try:
                if os.fork() == 0:
                    _become_peer(agent_id, peer, stderr_fd, [fd for _, fd in peers], report_fd, parent)
                    return peer
            except BaseException:
                pass  # a fork that failed here reports nothing: `run exec` starts its agent anew
            os._exit(0)  # the middle process (its child re-parents to `run exec`), or a failed fork
        os.waitpid(middle, 0)
    for _, fd in peers:
        os.close(fd)
    os.close(report_fd)
    return agent_id


def read_message(fd: int) -> dict | None:
    """The one JSON line `run exec` writes down the go pipe ``fd`` (closed here); None when
    it closed the pipe without one."""
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        data = b""
    finally:
        os.close(fd)
    if not data.endswith(b"\n"):
        return None
    import json

    return json.loads(data)


def send_message(fd: int, message: dict) -> bool:
    """Write ``message`` down the go pipe ``fd`` (closed here); False when nobody reads it."""
    import json

    data = (json.dumps(message) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data):]
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def serve_forked(go: int, report: int | None, agents: list[tuple[str, int]], serve) -> None:
    """The first worker, just forked from `run exec` (executor.Zygote), which has opened no
    connection yet: in its own session, wait for the word; then, as a started worker would
    be, with stdin and stdout on /dev/null, stderr in the spool file of its agent (the
    first of ``agents``: (id, descriptor)), the database and the other agents in its
    environment, under the command line it was sent, ``serve(words)`` it: the command line
    as `buildctl` would serve it. Never returns."""
    code = 0
    try:
        os.setsid()  # a Ctrl-C reaches `run exec` alone, which cancels the run cleanly
        import ctypes  # noqa: F401 - set_command_line's, and read_message's json: imported while
        import json  # noqa: F401   `run exec` registers the agents, not after its word
        message = read_message(go)
        if message is None:
            return  # stand down
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        os.dup2(agents[0][1], 2)
        os.close(agents[0][1])
        argv = message["argv"]
        os.environ["BUILDCTL_DB"] = message["location"]
        word, go = os.pipe()  # what fork_peers reads, as in a started worker
        send_message(go, message)
        os.environ[FORK_GO_ENV] = str(word)
        passed = [word]
        if report is not None:
            os.environ[FORK_AGENTS_ENV] = ",".join(f"{agent}:{fd}" for agent, fd in agents[1:])
            os.environ[FORK_REPORT_ENV] = str(report)
            passed += [report, *(fd for _, fd in agents[1:])]
        if not set_command_line(argv):
            for fd in passed:
                os.set_inheritable(fd, True)
            os.execv(sys.executable, argv)
        sys.argv = [sys.argv[0], *argv[3:]]
        code = serve(argv[3:])  # the words after `python -m buildctl`
        code = 0 if code is None else code
    except BaseException as exc:  # nothing may return into `run exec`'s own code
        code = 1
        try:
            sys.stderr.write(f"error: the forked worker failed: {exc!r}\n")
        except BaseException:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _become_peer(zygote_agent: str, agent_id: str, stderr_fd: int, passed: list[int], report_fd: int,
                 parent: int) -> None:
    """The forked worker of ``agent_id``: its own session and stderr, `run exec`'s child,
    its own command line. Returns only in the worker that is to go on working."""
    os.setsid()  # as `run exec` starts every worker: a Ctrl-C reaches `run exec` alone
    os.dup2(stderr_fd, 2)
    for fd in passed:
        os.close(fd)
    deadline = time.monotonic() + ADOPTION_WAIT_S
    while os.getppid() != parent:
        if time.monotonic() > deadline:  # no subreaper took us: `run exec` starts this agent itself
            os.write(report_fd, f"{agent_id} -\n".encode())
            os._exit(0)
        time.sleep(0.0005)
    def ours(args: list[str]) -> list[str]:
        return [agent_id if arg == zygote_agent else arg for arg in args]

    argv = _command_line()
    own = ours(argv)
    if own == argv:  # the zygote's agent is not a word of its command line: cannot name ours
        os.write(report_fd, f"{agent_id} -\n".encode())
        os._exit(0)
    renamed = set_command_line(own)
    os.write(report_fd, f"{agent_id} {os.getpid()}\n".encode())
    os.close(report_fd)
    sys.argv = ours(sys.argv)
    if not renamed:
        os.execv(sys.executable, [sys.executable, *own[1:]])


def _command_line() -> list[str]:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


#: The command line set_command_line gave this process when it could not write it in place.
_COMMAND_LINE = None


def set_command_line(new: list[str]) -> bool:
    """Make ``new`` this process's command line (what /proc/PID/cmdline, `ps` and `pgrep -f`
    read): written over the old one in place when it has the same length (a peer naming
    its own agent), else pointed to by prctl(PR_SET_MM_MAP) (no privilege needed, Linux
    3.18+; a worker forked from `run exec`). False when neither can be done."""
    global _COMMAND_LINE
    replacement = b"\0".join(map(os.fsencode, new)) + b"\0"
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = [int(x) for x in f.read().rsplit(b")", 1)[1].split()[1:]]
    except (OSError, ValueError):
        return False

    def field(n: int) -> int:  # proc(5) numbering: the state (field 3) was dropped above
        return fields[n - 4]

    start, end = field(48), field(49)  # arg_start, arg_end
    if end - start == len(replacement):
        try:
            with open("/proc/self/mem", "r+b", buffering=0) as mem:
                mem.seek(start)
                mem.write(replacement)
            return True
        except (OSError, ValueError):
            return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.sbrk.restype = ctypes.c_void_p
        names = ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
                 "arg_start", "arg_end", "env_start", "env_end", "auxv")

        class MMMap(ctypes.Structure):  # struct prctl_mm_map, <linux/prctl.h>
            _fields_ = [*((n, ctypes.c_uint64) for n in names), ("auxv_size", ctypes.c_uint32),
                        ("exe_fd", ctypes.c_uint32)]

        buffer = ctypes.create_string_buffer(replacement, len(replacement))
        where = ctypes.addressof(buffer)
        mm = MMMap(start_code=field(26), end_code=field(27), start_data=field(45), end_data=field(46),
                   start_brk=field(47), brk=libc.sbrk(0), start_stack=field(28), arg_start=where,
                   arg_end=where + len(replacement), env_start=field(50), env_end=field(51), auxv=0, auxv_size=0,
                   exe_fd=0xFFFFFFFF)
        if libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(mm), ctypes.sizeof(mm), 0) != 0:
            return False
        _COMMAND_LINE = buffer  # the kernel reads it from here from now on
        name = os.fsencode(os.path.basename(sys.executable))[:15]
        libc.prctl(PR_SET_NAME, name, 0, 0, 0)  # `ps`'s and `pgrep`'s name, as a started worker's
        return True
    except (OSError, AttributeError, ImportError):
        return False


#: prctl(2) options (<linux/prctl.h>).
PR_SET_NAME, PR_SET_MM, PR_SET_MM_MAP = 15, 35, 14


#: A task runs as `sh -c COMMAND` (nothing between the worker and the task's shell), the
#: leader of its own session and process group, watched through the worker's lifeline:
#: a pipe whose only write end the worker holds, read by one watcher process per worker
#: (``Lifeline``, _WATCHER). The worker keeps, in a small file it shares with the watcher,
#: which task runs (its marker and process group) or that none does; when the worker dies,
#: even by SIGKILL, the kernel closes the write end, the watcher's read returns and it
#: kills the task that was running, so a task whose agent is declared dead cannot keep
#: running beside its retry. (A pipe instead of prctl(PR_SET_PDEATHSIG): that needs a
#: preexec_fn, which costs ~3 ms a task, and covers only the direct child. One watcher
#: per worker instead of a guard shell and a watcher per task: that was two more
#: processes a task, 0.4 ms of CPU and 1 ms of latency on a no-op task. The state in a
#: file written in place instead of lines down the pipe: a watcher woken three times a
#: task cost ~40 us of CPU a wake-up.) The watcher lives in a session of its own and is
#: not the worker's child (a shell starts it in the background and exits), so that
#: nothing that signals the worker or its group reaches it.
#:
#: Detached descendants (`setsid`, a double fork) leave the process group and
#: re-parent to init, so neither the group nor the process tree finds them. What they
#: cannot leave is their environment: the task's shell starts with a variable named for
#: the task (``BUILDCTL_TASK_<agent>_<n>=1``) that everything it starts inherits, and
#: whoever kills the task — the watcher with one `grep` over /proc/*/environ when the
#: lifeline closes, the worker (``kill_marked``) on a timeout or a stop, `run exec` when
#: a worker died — kills every process carrying it, then the group. The shell carries
#: it too, not only the commands it starts: a shell left alive would run the task's next
#: command once its current one was killed. Chosen over the alternatives:
#: PR_SET_CHILD_SUBREAPER makes the worker inherit the orphans, but they re-parent to
#: init the moment the worker itself is SIGKILLed, the very case to cover; a cgroup
#: needs a delegated cgroup v2 hierarchy that containers and CI runners mostly lack, and
#: another process per task to create it. The marker costs nothing on a task's normal
#: path (one more environment variable): /proc is scanned only when a task is killed. It
#: names the variable, not its value, so a worker run inside a task keeps its parent's
#: marker too. (A process that empties its own environment, `env -i`, escapes it, but
#: not its process group.)
#:
#: A stop's SIGTERM reaches the task's shell and the command; the worker waits out the
#: grace period for the shell, then SIGKILLs whatever is left.
#:
#: The watcher (the lifeline as fd 3, the state file as fd 4): its read of the lifeline
#: returns only when the pipe closes; then it reads the state — "MARKER PGID" (that task
#: runs, as that process group; "-" before the group is known) or "-" (no task runs) —
#: kills every process carrying that marker (looking again while any was found, as a
#: process may fork between the look and the kill), then the group. A task that ended
#: normally is left alone, as are its detached descendants. The starting shell prints
#: the watcher's pid, so that the worker notices a watcher that is gone.
_WATCHER = (
    'exec 3<&0 0</dev/null; '
    '( read _ <&3; exec 3<&-; read -r m g _ <&4; exec 4<&-; { [ -n "$m" ] && [ "$m" != - ]; } || exit 0; n=0; '
    '  while p=$(grep -lzsxF "$m=1" /proc/[0-9]*/environ); [ $n -lt 20 ]; do n=$((n+1)); k=; '
    '    for f in $p; do f=${f#/proc/}; f=${f%/environ}; if kill -KILL "$f" 2>/dev/null; then k=1; fi; done; '
    '    [ -n "$k" ] || break; done; '
    '  [ "$g" = - ] || kill -KILL -"$g" 2>/dev/null ) >/dev/null & echo $!')
#: The state record's size: written in place, padded, so that a shorter one leaves nothing
#: of a longer one behind.
_STATE_BYTES = 256


class Lifeline:
    """The write end of a worker's lifeline, the state it shares with its watcher (see
    _WATCHER), and the watcher, started with the first task. ``running``/``idle`` record
    what to kill should this process die (a write in place: the watcher reads it only
    then); a watcher that is gone (killed by someone) is replaced at the next record."""

    def __init__(self):
        self._fd: int | None = None  # the pipe's write end: its closing is the only message
        self._state: int | None = None
        self._watcher: int | None = None  # a pidfd: readable once the watcher is gone

    def running(self, marker: str, pgid: int | None = None) -> None:
        self._record(f"{marker} {pgid if pgid is not None else '-'}")

    def idle(self) -> None:
        self._record("-")

    def _record(self, state: str) -> None:
        if self._fd is None or (self._watcher is not None and select.select([self._watcher], [], [], 0)[0]):
            self._start_watcher()
        os.pwrite(self._state, (state.ljust(_STATE_BYTES - 1) + "\n").encode()[:_STATE_BYTES], 0)

    def _start_watcher(self) -> None:
        for fd in (self._fd, self._watcher):
            if fd is not None:
                os.close(fd)
        self._fd = self._watcher = None
        if self._state is None:
            try:
                self._state = os.memfd_create("buildctl-lifeline", os.MFD_CLOEXEC)
            except (AttributeError, OSError):
                self._state = os.dup(spool_file().fileno())
            os.pwrite(self._state, ("-".ljust(_STATE_BYTES - 1) + "\n").encode(), 0)
        # The write end stays here, unshared (pipes are close-on-exec), so it closes exactly
        # when this process ends; the watcher holds the only read end.
        read_end, write_end = os.pipe()
        said_r, said_w = os.pipe()
        try:
            shell = _Spawned(["/bin/sh", "-c", _WATCHER], os.environ, [
                (os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_DUP2, said_w, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, self._state, 4)])
            os.close(said_w)
            said_w = None
            with os.fdopen(said_r, "rb") as said:
                said_r = None
                pid = said.read().strip()
            if shell.wait() != 0 or not pid.isdigit():  # the shell only starts the watcher in the background
                raise OSError(f"the task watcher's shell exited {shell.returncode}")
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
            for fd in (said_r, said_w):
                if fd is not None:
                    os.close(fd)
        self._fd = write_end
        try:
            self._watcher = os.pidfd_open(int(pid))
        except (AttributeError, OSError):
            self._watcher = None  # cannot watch the watcher: it stays the one


def task_marker(instance_id: str, n: int) -> str:
    """The environment variable that marks every process of an agent's ``n``-th task."""
    return f"{agent_marker(instance_id)}{n}"


def agent_marker(instance_id: str) -> str:
    """The prefix of the markers of all of an agent's tasks (``run exec`` kills by it when a worker died)."""
    return f"BUILDCTL_TASK_{instance_id}_"


def task_argv(command: str | list[str]) -> list[str]:
    """A task's command line for the shell; a supervised argv through the shell's `exec "$@"`,
    so that one that cannot run says why on stderr, as the shell says it."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command, "buildctl-task"]
    return ["/bin/sh", "-c", 'exec "$@"', "buildctl-task", *command]


def environment() -> dict[bytes, bytes]:
    """This process's environment, encoded once: a task's is this plus its marker (encoding
    os.environ anew for every task cost ~0.1 ms)."""
    return {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}


def marked_pids(prefix: str) -> list[int]:
    """The processes whose environment holds a variable whose ``NAME=`` starts with ``prefix``."""
    needle = b"\0" + prefix.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in b"\0" + env:
            found.append(int(name))
    return found


def kill_marked(prefix: str, sig: int = signal.SIGKILL, *, besides_group: int | None = None) -> None:
    """Send ``sig`` to every process marked ``prefix`` (see _WATCHER), but for members of the
    process group ``besides_group`` (signalled as a group already: a second SIGTERM may
    mean "hurry" to a program). With SIGKILL, look again until none is left (a process
    may fork between the look and the kill; a killed one soon shows an empty
    environment, even as an unreaped zombie)."""
    for _round in range(20 if sig == signal.SIGKILL else 1):
        pids = marked_pids(prefix)
        if not pids:
            return
        for pid in pids:
            try:
                if besides_group is None or os.getpgid(pid) != besides_group:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


class _Spawned:
    """A process started with os.posix_spawn, leader of a new session, its SIGPIPE and
    SIGXFSZ back to their defaults (as subprocess restores them): the pid, ``poll`` and
    ``wait`` that Child needs of subprocess.Popen without Popen's Python-side work
    (~0.15 ms a task: encoding the environment, the error pipe, ...) or its import (~5 ms
    of a worker's start). Descriptors are not closed in the child: a worker makes every
    one it inherited close-on-exec (``keep_descriptors``), as everything it opens is."""

    def __init__(self, argv: list[str], env, file_actions: list):
        self.pid = os.posix_spawn(argv[0], argv, env, file_actions=file_actions, setsid=True,
                                  setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None when ``timeout`` passed first."""
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        return self.returncode


def spool_file():
    """An anonymous temporary file: what tempfile.TemporaryFile makes on Linux (O_TMPFILE in
    $TMPDIR, $TEMP, $TMP or /tmp), without importing tempfile (~6 ms of a worker's start);
    tempfile itself where that fails."""
    folder = os.environ.get("TMPDIR") or os.environ.get("TEMP") or os.environ.get("TMP") or "/tmp"
    try:
        return os.fdopen(os.open(folder, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600), "w+b")
    except (AttributeError, OSError):
        import tempfile

        return tempfile.TemporaryFile()


def _is_cwd(folder: str) -> bool:
    try:
        return os.path.samefile(folder, ".")
    except OSError:
        return False  # let the task's start say what is wrong with it


def keep_descriptors() -> None:
    """Make every descriptor above stderr that this process inherited close-on-exec, so
    that tasks started with posix_spawn (which closes nothing) start with stdin, stdout
    and stderr only, as subprocess's close_fds gave them."""
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        if int(name) > 2:
            try:
                os.set_inheritable(int(name), False)
            except OSError:
                pass  # the listing's own descriptor, closed meanwhile


class Child:
    """The task's process, in its own process group so that stopping it stops its children too."""

    def __init__(self, command: str | list[str], cwd: str | None, grace_s: float, *, lifeline: Lifeline,
                 marker: str, env: dict[bytes, bytes], passthrough: bool = False, spool: tuple | None = None):
        """``lifeline``: the worker's (told about this task before it starts, and once it
        has ended); ``marker``: the task's environment marker (see _WATCHER); ``env``: the
        environment (``environment()``) the marker is added to; ``spool``: two files to
        take the task's stdout and stderr (their tails are read afterwards: no pipes, no
        reader threads, bounded memory); ``passthrough``: echo the output live instead
        (pipes drained by two threads that keep the tails)."""
        self.grace_s = grace_s
        self.marker = marker
        self.lifeline = lifeline
        self.started = time.monotonic()
        self.spool = None if passthrough else spool
        if self.spool is not None:
            for f in self.spool:
                if os.fstat(f.fileno()).st_size:  # most tasks write nothing: no rewind needed
                    f.seek(0)
                    f.truncate()
        argv, task_env = task_argv(command), {**env, marker.encode(): b"1"}
        # Told before the start: should this process die before the next word, the
        # watcher still finds the task by its marker.
        lifeline.running(marker)
        try:
            if self.spool is not None and cwd is None:  # a worker's task: the fast path
                self.proc = _Spawned(argv, task_env, [
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, self.spool[0].fileno(), 1), (os.POSIX_SPAWN_DUP2, self.spool[1].fileno(), 2)])
            else:
                import subprocess

                out, err = self.spool if self.spool is not None else (subprocess.PIPE, subprocess.PIPE)
                self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, env=task_env, stdout=out,
                                             stderr=err, start_new_session=True)
        except BaseException:
            lifeline.idle()
            raise
        lifeline.running(marker, self.proc.pid)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.stdout_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._readers = []
        if self.spool is None:
            echo_out, echo_err = (sys.stdout.buffer, sys.stderr.buffer) if passthrough else (None, None)
            self._readers = [
                threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_tail, echo_out), daemon=True),
                threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_tail, echo_err), daemon=True),
            ]
            for t in self._readers:
                t.start()
        self.killed_reason: str | None = None

    @staticmethod
    def _tail_of(f, tail) -> None:
        """The last lines of a spool file (only its last 16 KiB are read)."""
        size = os.fstat(f.fileno()).st_size  # the task wrote through its own descriptor
        if not size:
            return
        lines = os.pread(f.fileno(), 16384, max(0, size - 16384)).decode("utf-8", "replace").splitlines()
        if size > 16384 and lines:
            lines = lines[1:]  # the first one is cut
        tail.extend(lines[-STDERR_TAIL_LINES:])

    @staticmethod
    def _drain(stream, tail, passthrough=None) -> None:
        """Keep the last lines (for the log's `error`); with passthrough, also echo them as they come."""
        for raw in iter(stream.readline, b""):
            tail.append(raw.decode("utf-8", "replace").rstrip("\n"))
            if passthrough is not None:
                try:
                    passthrough.write(raw)
                    passthrough.flush()
                except OSError:
                    passthrough = None
        stream.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout_s: float | None, should_stop) -> int:
        """Wait for the child; stop it on timeout or when should_stop() names a reason."""
        deadline = None if timeout_s is None else self.started + timeout_s
        exited = self._exit_watch()
        while True:
            if exited is not None:
                # Wake the moment the child exits (a pidfd), not at the next tick of a
                # polling wait: that tick was most of a short task's cost.
                exited(0.05)
            code = self._wait(0 if exited is not None else 0.05)
            if code is not None:
                break
            reason = should_stop()
            if reason is None and deadline is not None and time.monotonic() > deadline:
                reason = f"timed out after {timeout_s:g}s"
            if reason is not None:
                self.terminate(reason)
                code = self._wait(None)
                break
        self.lifeline.idle()
        self._close_watch()
        for t in self._readers:
            t.join(timeout=2)
        if self.spool is not None:
            self._tail_of(self.spool[0], self.stdout_tail)
            self._tail_of(self.spool[1], self.stderr_tail)
        return code

    def _wait(self, timeout: float | None) -> int | None:
        """The exit code, waiting at most ``timeout`` (None: as long as it takes); None if
        the process is still running then."""
        if isinstance(self.proc, _Spawned):
            return self.proc.wait(timeout)
        import subprocess

        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _exit_watch(self):
        """A function that blocks until the child exits or ``timeout`` passes (Linux pidfd), or None."""
        try:
            fd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            return None
        self._pidfd = fd

        def exited(timeout: float) -> None:
            select.select([fd], [], [], timeout)

        return exited

    def _close_watch(self) -> None:
        fd = getattr(self, "_pidfd", None)
        if fd is not None:
            os.close(fd)
            self._pidfd = None

    def terminate(self, reason: str) -> None:
        """SIGTERM to the task's processes (its group and the detached ones), the grace
        period (for the task's shell), then SIGKILL to whatever is left."""
        if self.killed_reason is None:
            self.killed_reason = reason
        self._signal(signal.SIGTERM)
        self._wait(self.grace_s)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        kill_marked(self.marker + "=", sig, besides_group=self.proc.pid)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def error_text(self) -> str:
        lines = [l for l in self.stderr_tail if l.strip()] or [l for l in self.stdout_tail if l.strip()]
        return "\n".join(lines[-STDERR_TAIL_LINES:])


class Worker:
    def __init__(self, location: str | None, opts: Options, db: storage.Database | None = None):
        """``db``: the command's own connection, checked already (a worker's start is mostly
        connections and imports: one less saves a schema read); the worker opens one when
        it is not given, and closes only one it opened."""
        self.location = location
        self.opts = opts
        self.execution_id = opts.execution_id  # the full id once spawn has resolved a prefix
        self._owns_db = db is None
        self.db = storage.connect(location) if db is None else db
        self.db.reconnect_s = agentstate.WORKER_CONFIG["staleAfterMs"] / 1000  # until the agent's own is known
        self.instance_id: str | None = None
        self.config: dict = {}
        self.terms = 0  # SIGTERMs received
        self.lock = threading.Lock()
        self.child: Child | None = None
        self.current: dict | None = None  # the claimed assignment
        self.status = "initializing"
        self.stop_reason: str | None = None  # set by the heartbeat thread: cancel, fenced, lost heartbeats
        self.released = False  # our running task was taken away (we were marked stale)
        self.heartbeats_lost = False  # no heartbeat could be written for the stale threshold
        self.crash: BaseException | None = None  # the heartbeat thread met a bug: the worker ends with it
        self.tasks_started = 0  # numbers each task's environment marker
        self.next_recovery = 0.0  # monotonic time of the next look for stale peers
        self.hb_stop = threading.Event()
        self.hb_thread: threading.Thread | None = None
        self.lifeline = Lifeline()
        self.task_env = environment()
        # Tasks run in the repository; started there already (run exec's workers, unless
        # --repo names another folder), they need no chdir and take the fast path.
        self.task_cwd = opts.repo if opts.repo and not _is_cwd(opts.repo) else None
        keep_descriptors()
        # Where each task's stdout and stderr go (rewound per task; only the tails are read).
        self.spool = (spool_file(), spool_file())

    # ------------------------------------------------------------------ signals
    def _on_term(self, signum, frame) -> None:
        # Only counted here: the child's wait loop (_should_stop) stops it on the second
        # one, since terminate() waits out a grace period a signal handler must not.
        self.terms += 1

    # ------------------------------------------------------------------ heartbeat thread
    def _heartbeat_loop(self) -> None:
        """Heartbeat every heartbeatIntervalMs; check several times a second whether to stop."""
        interval = max(0.05, float(self.config.get("heartbeatIntervalMs", 30000)) / 1000)
        tick = min(interval, 0.25)
        db = storage.connect(self.location, check_schema=False)  # the worker's own connection checked it
        # In turn with the workers' claims (not polling for the lock beside them), and
        # checkpointing at the database's pace (not SQLite's, inside its commit, in that turn).
        db.pace_checkpoints(CHECKPOINT_PACE_S)
        db.queue_writes()
        db.reconnect_s = self._stale_after_s()
        last_ok = next_beat = time.monotonic()
        try:
            while not self.hb_stop.is_set():
                try:
                    self._check(db)
                    if time.monotonic() >= next_beat:
                        self._beat(db)
                        last_ok = time.monotonic()
                        next_beat = last_ok + interval
                except Conflict as exc:
                    # The agent was ended or marked stuck by another process, or its run
                    # was cancelled (the heartbeat says which): stop working.
                    self.stop_reason = self.stop_reason or exc.message
                except (sqlite3.DatabaseError, DatabaseError):
                    if time.monotonic() - last_ok > self._stale_after_s():
                        # We may already look stale to gc: make sure our task cannot run twice.
                        self.heartbeats_lost = True
                        self.stop_reason = self.stop_reason or (
                            f"no heartbeat could be written for {self._stale_after_s():g}s")
                except Exception as exc:
                    # A bug, not weather: end the worker with it (one error line, a failed
                    # agent) instead of heartbeating no more until a peer finds us stale.
                    self.crash = exc
                    self.stop_reason = self.stop_reason or f"the heartbeat thread failed: {type(exc).__name__}: {exc}"
                    return
                self.hb_stop.wait(tick)
        finally:
            db.close()

    def _check(self, db: storage.Database) -> None:
        """Stop when the run was cancelled, or when the task whose process is running was
        taken away from us (we were marked stale): another agent may run it now."""
        with self.lock:
            current, child = self.current, self.child
        run_status = db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?",
                               (self.execution_id,))
        if run_status == "cancelled" and self.stop_reason is None:
            self.stop_reason = "the run was cancelled"
        if current is None or child is None:
            return  # no process to fence; a report on a released task is refused (Conflict) anyway
        held = db.one("SELECT status, instance_id FROM wave_task_assignments WHERE id = ?", (current["assignment_id"],))
        with self.lock:
            if self.child is not child:
                return  # that process ended meanwhile and the task may be reported already: not a release
        if held is None or held["instance_id"] != self.instance_id or held["status"] not in states.ASSIGNMENT_HELD:
            self.released = True
            self.stop_reason = self.stop_reason or "the assignment was released (agent marked stale)"

    def _beat(self, db: storage.Database) -> None:
        with self.lock:
            current, child, status = self.current, self.child, self.status
        progress = None
        if child is not None and current is not None:
            # Share of the task's time budget used: the only progress a shell command reports.
            timeout = current.get("timeout_s") or float(self.config.get("taskTimeoutMs", 300000)) / 1000
            progress = min(99, int(100 * child.elapsed() / timeout)) if timeout else None
        beat = dict(status=status if status in states.HEARTBEAT_STATUSES else None,
                    task=current["task_id"] if current else None, progress=progress, revive_stuck=False)
        try:
            agents.heartbeat(db, self.instance_id, pid=child.pid if child is not None else None, **beat)
        except (NotFound, InvalidInput):
            if child is None:
                raise
            # The child exited between our look and the sample: beat without its figures.
            agents.heartbeat(db, self.instance_id, **beat)

    # ------------------------------------------------------------------ main loop
    def run(self) -> Outcome:
        if self.opts.agent_id is not None and self.opts.config is not None:
            raise UsageError("--config cannot be given with --agent: the agent's own config applies")
        signal.signal(signal.SIGTERM, self._on_term)
        # A worker commits once a task, beside its peers doing the same.
        self.db.pace_checkpoints(CHECKPOINT_PACE_S)
        self.db.queue_writes()
        self.db.check_writable()  # fail early, with one line, if the database cannot be written
        if self.opts.agent_id is not None:
            agent = agents.adopt(self.db, self.opts.agent_id, self.execution_id)
            self.instance_id, self.execution_id, self.config = agent["instance_id"], agent["execution_id"], agent["config"]
        else:
            iid = ids.new_id("agent")
            self.instance_id = self._db(lambda: agents.spawn(self.db, self.execution_id, config=self.opts.config,
                                                             instance_id=iid), settled=lambda: self._spawned(iid))
            self.config = agentstate.config_of(self.db, self.instance_id)
            self.execution_id = self.db.scalar("SELECT execution_id FROM build_agent_instances WHERE instance_id = ?",
                                               (self.instance_id,))
        self.db.reconnect_s = self._stale_after_s()
        outcome = Outcome(self.instance_id)
        self.hb_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self.hb_thread.start()
        final_status, error = "completed", None
        claim = None  # a task claimed with the previous one's completion
        try:
            while True:
                if self.crash is not None:
                    raise self.crash
                if claim is None:
                    stop = self._stop_claiming(outcome.tasks_run)
                    if stop is not None:
                        outcome.reason = stop
                        break
                    claim = self._db(lambda: assignments.claim_next(self.db, self.execution_id, self.instance_id,
                                                                    start=True),
                                     settled=self._claim_settled)
                if claim is None:
                    if not self._db(self._wait_for_work):
                        outcome.reason = "the run has nothing left"
                        break
                    continue
                outcome.tasks_run += 1
                result, claim = self._run_assignment(claim, outcome.tasks_run)
                if result == "completed":
                    outcome.completed += 1
                elif result == "failed":
                    outcome.failed += 1
        except BuildctlError as exc:
            final_status, error = "failed", exc.message
            outcome.reason, outcome.exit_code = exc.message, exc.exit_code
        except BaseException as exc:
            final_status, error = "failed", f"{type(exc).__name__}: {exc}"
            outcome.reason, outcome.exit_code = error, 1
            raise
        finally:
            self.hb_stop.set()
            if self.hb_thread is not None:
                self.hb_thread.join(timeout=5)
            if self.heartbeats_lost and final_status == "completed":
                final_status, error = "failed", self.stop_reason
            try:
                ended = self._db(lambda: agents.finish(self.db, self.instance_id, final_status, error=error,
                                                       keep_stuck=True))
            except Exception:
                ended = None  # already ended (or the database is gone): nothing more to record
            if ended is not None and ended["status"] == "stuck" and not outcome.exit_code:
                # Marked stuck (no progress, or by a peer when we looked stale): the run goes
                # on without us; `run exec` starts a replacement while work remains.
                outcome.exit_code = exitcodes.FAILED
            if self._owns_db:
                self.db.close()
        return outcome

    def _stop_claiming(self, tasks_run: int) -> str | None:
        """Why this worker must take no new task (a SIGTERM, a stop, --max-tasks), or None."""
        if self.terms or self.stop_reason:
            return self.stop_reason or "stopped by SIGTERM"
        if self.opts.max_tasks is not None and tasks_run >= self.opts.max_tasks:
            return f"ran --max-tasks {self.opts.max_tasks}"
        return None

    def _wait_for_work(self) -> bool:
        """Idle until something may be claimable; False when the run has nothing left.

        Waiting on the barrier must not cost a wave a polling interval: instead of
        sleeping a fixed time, watch db.data_version() (it changes whenever another
        connection commits, and reading it touches no table), waking at once when a
        peer commits (db.wait_for_commit), and look again, read-only, as soon as
        something changed. A claim (a write transaction) follows only when
        the look says there is work. While waiting, at most once a second, the worker
        also recovers the run's stale peers (an expired lease): a dead agent's task
        comes back with no command typed and no parent process to notice the death.
        """
        self.status = "idle"
        while not (self.terms or self.stop_reason):
            self.db.forget_commits()  # before the look: a commit after it is heard
            state = assignments.run_state(self.db, self.execution_id)
            if state != "wait":
                return state == "work"
            if self._recover_peers():
                continue  # something was handed back: look again at once
            version = self.db.data_version()
            now = time.monotonic()
            deadline, brisk = now + self.opts.poll_max_s, now + BRISK_WAIT_S
            pause = self.opts.poll_min_s
            while time.monotonic() < deadline and not (self.terms or self.stop_reason):
                self.db.wait_for_commit(pause)
                if self.db.data_version() != version:
                    break
                if time.monotonic() > brisk:  # a long quiet wait costs ~10 looks a second, not 200
                    pause = min(pause * 1.5, 0.1)
        return True  # stop requested: the main loop sees it and leaves

    def _recover_peers(self) -> bool:
        """agents.recover for this run, at most every RECOVERY_INTERVAL_S (two indexed reads
        when nothing is stale); True when it marked or released anything."""
        now = time.monotonic()
        if now < self.next_recovery:
            return False
        self.next_recovery = now + RECOVERY_INTERVAL_S
        found = agents.recover(self.db, self._stale_after_s(), self.execution_id)
        return bool(found["marked"] or found["released"])

    def _stale_after_s(self) -> float:
        return self.config.get("staleAfterMs", agentstate.WORKER_CONFIG["staleAfterMs"]) / 1000

    def _grace_s(self) -> float:
        return self.config.get("killGraceMs", agentstate.WORKER_CONFIG["killGraceMs"]) / 1000

    def _next_marker(self) -> str:
        self.tasks_started += 1
        return task_marker(self.instance_id, self.tasks_started)

    # ------------------------------------------------------------------ supervised command
    def supervise(self, argv: list[str], *, wave: int | None = None, task: str | None = None,
                  claim_next: bool = False) -> int:
        """`agent spawn EXEC [--task T | --next] -- CMD…`: run CMD as this agent and return
        CMD's exit code.

        With --task (or --next), the agent is registered and the task's assignment taken
        and started in one transaction (wave barrier and limits apply; a refusal registers
        nothing), then completed or failed by CMD's exit code, exactly as a worker would.
        A cancelled run stops CMD (SIGTERM, the grace period, SIGKILL).
        """
        signal.signal(signal.SIGTERM, self._on_term)
        claim = None
        iid = ids.new_id("agent")
        if task is not None or claim_next:
            claim = self._db(lambda: agents.spawn_and_claim(self.db, self.opts.execution_id, task=task, wave=wave,
                                                            config=self.opts.config, context={"command": argv},
                                                            instance_id=iid),
                             settled=lambda: self._spawned(iid) and self._claim_settled(iid))
            self.instance_id, self.execution_id = claim["instance_id"], claim["execution_id"]
        else:
            self.instance_id = self._db(lambda: agents.spawn(self.db, self.opts.execution_id, wave=wave,
                                                             config=self.opts.config, instance_id=iid),
                                        settled=lambda: self._spawned(iid))
            self.execution_id = self.db.scalar("SELECT execution_id FROM build_agent_instances WHERE instance_id = ?",
                                               (self.instance_id,))
        self.config = agentstate.config_of(self.db, self.instance_id)
        self.db.reconnect_s = self._stale_after_s()
        try:
            with self.lock:
                self.current, self.status = claim, "running"
            self.hb_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
            self.hb_thread.start()
            try:
                child = Child(argv, None, self._grace_s(), passthrough=True, lifeline=self.lifeline,
                              marker=self._next_marker(), env=self.task_env)
            except OSError as exc:
                code, elapsed, error, killed = (127 if isinstance(exc, FileNotFoundError) else 126), 0.0, \
                    f"cannot run {argv[0]}: {exc.strerror or exc}", None
            else:
                with self.lock:
                    self.child = child
                timeout = (claim.get("timeout_s") or self.config["taskTimeoutMs"] / 1000) if claim else None
                code = child.wait(timeout, self._should_stop_now)
                elapsed, error, killed = child.elapsed(), child.error_text(), child.killed_reason
            if self.crash is not None:
                raise self.crash
            code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
            context = {"command": argv, "exit_code": code, "duration_s": round(elapsed, 3)}
            if killed:
                context["stopped"] = killed
            ok = code == 0 and not killed
            if claim is not None:
                if ok:
                    self._complete(claim["assignment_id"], context)
                else:
                    self._report(claim["assignment_id"], lambda: assignments.fail(
                        self.db, claim["assignment_id"], error=error or killed or f"exit code {code}",
                        max_retries=self._max_retries(), instance_id=self.instance_id, context=context))
            else:
                def log_exit() -> None:
                    with self.db.write():
                        execlog.append(self.db, self.execution_id, "info" if ok else "error",
                                       f"agent {self.instance_id}: `{' '.join(argv)}` exited {code}"
                                       + (f": {error.splitlines()[-1]}" if error and not ok else ""),
                                       instance_id=self.instance_id,
                                       context={**context, "error": error} if not ok else context)

                self._db(log_exit)
            self._end("completed" if ok else "failed", None if ok else (error or killed or f"exit code {code}"))
            return code
        except BaseException as exc:
            self._end("failed", exc.message if isinstance(exc, BuildctlError) else f"{type(exc).__name__}: {exc}")
            raise

    def _should_stop_now(self) -> str | None:
        """For a supervised command: any SIGTERM, a cancelled run or a lost assignment stops it."""
        if self.terms:
            return "terminated by SIGTERM"
        return self.stop_reason

    def _end(self, status: str, error: str | None) -> None:
        self.hb_stop.set()
        if self.hb_thread is not None:
            self.hb_thread.join(timeout=5)
        try:
            self._db(lambda: agents.finish(self.db, self.instance_id, status, error=error, keep_stuck=True))
        except BuildctlError:
            pass  # already ended by someone else (or by our own finish, whose reply was lost)
        if self._owns_db:
            self.db.close()

    def _max_retries(self) -> int:
        return int(self.config.get("maxRetries", 3))

    def _backoff(self, attempt: int) -> float:
        return agentstate.backoff_s(self.config, attempt)

    def _should_stop(self) -> str | None:
        if self.stop_reason:
            return self.stop_reason
        if self.terms >= 2:
            return "terminated by a second SIGTERM"
        return None

    def _run_assignment(self, claim: dict, tasks_run: int) -> tuple[str, dict | None]:
        """Run one claimed task to its end: ('completed', 'failed', 'retry-elsewhere' or 'lost',
        the next task or None). A completed task's report also claims the worker's next
        task, in the same transaction, unless the worker is to take no more (the next
        claim is then the main loop's).

        When the task makes no progress (the third consecutive failure with the same
        error), the domain marks this agent stuck and hands the task back in the
        transaction that records the failure; the worker then stops (stop_reason)."""
        aid = claim["assignment_id"]
        with self.lock:
            self.current = claim
            self.status = "running"
        try:
            checkpoint_id = self._db(lambda: self._checkpoint(claim))
            attempt = claim["attempt"]
            while True:
                ok, context, error = self._attempt(claim, attempt)
                stop = self._should_stop()
                if ok and stop is None:
                    if self._stop_claiming(tasks_run) is not None:
                        self._complete(aid, context)
                        return "completed", None
                    return "completed", self._complete_and_claim(aid, context)
                if stop is not None:
                    return self._stopped(claim, stop, context), None
                # Report the attempt first, then undo its partial work (so the log reads
                # task_failed, checkpoint_restored), then wait out the backoff.
                if attempt >= 1 + self._max_retries():
                    self._report(aid, lambda: assignments.fail(self.db, aid, error=error, max_retries=self._max_retries(),
                                                               instance_id=self.instance_id, context=context))
                    if checkpoint_id is not None:
                        self._db(lambda: self._restore(claim, checkpoint_id))
                    self._db(self._stop_if_stuck)
                    return "failed", None
                retry = self._retry_in_place(claim, attempt, error, context)
                if checkpoint_id is not None:
                    self._db(lambda: self._restore(claim, checkpoint_id))
                if retry["agent_stuck"]:
                    self.stop_reason = self.stop_reason or f"agent {self.instance_id} marked stuck: {retry['agent_stuck']}"
                    return ("failed" if retry["status"] == "failed" else "retry-elsewhere"), None
                if self._sleep_or_stop(self._backoff(attempt)):
                    return self._stopped(claim, self._should_stop() or "stopped", context), None
                attempt = retry["next_attempt"]
        except Conflict as exc:
            # The assignment was released while we ran (marked stale): someone else owns it now.
            execlog_warning(self.db, claim, self.instance_id, f"{claim['display_id']}: gave up the task: {exc.message}")
            return "lost", None
        finally:
            with self.lock:
                self.current = None
                self.child = None
                self.status = "idle"

    # ------------------------------------------------------------------ a lost connection
    def _db(self, call, settled=None):
        """``call()``, carried through a connection lost while it ran (ConnectionLost: whether
        it took effect is unknown). The connection reconnects on its next statement (with
        backoff, for up to staleAfterMs); then ``settled()`` finds out what happened: its
        answer, when not None, is the result; else ``call`` runs again. Without ``settled``,
        ``call`` is a read, or a write whose repetition is harmless. Losses that go on for
        longer than staleAfterMs end the worker (the lease has expired by then)."""
        give_up = time.monotonic() + self._stale_after_s()
        while True:
            try:
                return call()
            except ConnectionLost:
                if time.monotonic() > give_up:
                    raise
                if settled is not None:
                    outcome = self._db(settled)
                    if outcome is not None:
                        return outcome

    def _spawned(self, instance_id: str) -> str | None:
        """After registering ``instance_id`` (with a claim, in the same transaction) whose
        reply was lost: the id when it was registered, else None (register again)."""
        return self.db.scalar("SELECT instance_id FROM build_agent_instances WHERE instance_id = ?", (instance_id,))

    def _claim_settled(self, instance_id: str | None = None) -> dict | None:
        """After a claim whose reply was lost: the task it took for us (we hold it and have
        run nothing of it), or None when it took nothing (claim again)."""
        held = assignments.held_by(self.db, instance_id or self.instance_id)
        return None if held is None else assignments.claim_of(self.db, held["assignment_id"])

    def _held_status(self, assignment_id: int) -> str | None:
        """After a report whose reply was lost: None while the assignment is still ours to
        report (the report did not commit: send it again), else what it is now."""
        row = self.db.one("SELECT status, instance_id FROM wave_task_assignments WHERE id = ?", (assignment_id,))
        if row["instance_id"] == self.instance_id and row["status"] in states.ASSIGNMENT_HELD:
            return None
        return row["status"]

    def _report(self, assignment_id: int, call):
        """A failed attempt or a release (``call``); after a lost reply, what the assignment is now."""
        return self._db(call, settled=lambda: self._held_status(assignment_id))

    def _complete(self, assignment_id: int, context: dict) -> None:
        def settled() -> str | None:
            status = self._held_status(assignment_id)
            if status not in (None, "completed"):  # handed to someone else meanwhile: not ours to complete
                raise Conflict(f"assignment {assignment_id} is {status}: it was taken away from agent {self.instance_id}")
            return status

        self._db(lambda: assignments.complete(self.db, assignment_id, instance_id=self.instance_id, context=context),
                 settled=settled)

    def _complete_and_claim(self, assignment_id: int, context: dict) -> dict | None:
        """assignments.complete_and_claim: the task completed and the next one claimed in one
        transaction; returns the next claim or None. After a lost reply: when the
        completion committed, the claim did too, so the task we hold now (if any) is it."""
        def settled() -> tuple[None, dict | None] | None:
            status = self._held_status(assignment_id)
            if status is None:
                return None  # nothing committed: send it again
            if status != "completed":  # handed to someone else meanwhile: not ours to complete
                raise Conflict(f"assignment {assignment_id} is {status}: it was taken away from agent {self.instance_id}")
            return None, self._claim_settled()

        return self._db(lambda: assignments.complete_and_claim(self.db, assignment_id, instance_id=self.instance_id,
                                                               context=context), settled=settled)[1]

    def _retry_in_place(self, claim: dict, attempt: int, error: str, context: dict) -> dict:
        """assignments.retry_in_place; after a lost reply, whether its task_failed event was
        written (it counts the attempt) and whether the task is still ours."""
        aid = claim["assignment_id"]

        def settled() -> dict | None:
            if assignments.failed_attempts(self.db, claim["execution_id"], claim["task_id"]) < attempt:
                return None
            status = self._held_status(aid)
            if status is None:
                return {"status": "running", "agent_stuck": None, "next_attempt": attempt + 1}
            return {"status": status, "agent_stuck": "the task was taken away when its failed attempt was recorded",
                    "next_attempt": attempt + 1}

        return self._db(lambda: assignments.retry_in_place(self.db, aid, instance_id=self.instance_id, error=error,
                                                           context=context), settled=settled)

    def _stop_if_stuck(self) -> None:
        """After a failure reported with ``fail``: stop when it marked this agent stuck."""
        agent = self.db.one("SELECT status, error_context FROM build_agent_instances WHERE instance_id = ?",
                            (self.instance_id,))
        if agent is not None and agent["status"] == "stuck":
            import json

            try:
                why = json.loads(agent["error_context"])["message"]
            except (TypeError, ValueError, KeyError):
                why = "no progress"
            self.stop_reason = self.stop_reason or f"agent {self.instance_id} marked stuck: {why}"

    def _sleep_or_stop(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._should_stop():
                return True
            time.sleep(min(0.05, end - time.monotonic()) if end > time.monotonic() else 0)
        return False

    def _stopped(self, claim: dict, reason: str, context: dict) -> str:
        """The worker was told to stop mid-task: record it and hand the task back."""
        if self.released:
            return "lost"  # it is not ours any more: write nothing about it
        try:
            outcome = self._report(claim["assignment_id"], lambda: assignments.release(
                self.db, claim["assignment_id"], reason=f"stopped: {reason}", max_retries=self._max_retries(),
                instance_id=self.instance_id))
        except Conflict:
            return "lost"  # the assignment may already be settled
        return "failed" if outcome == "failed" else "retry-elsewhere"

    def _attempt(self, claim: dict, attempt: int) -> tuple[bool, dict, str]:
        timeout = claim.get("timeout_s") or float(self.config.get("taskTimeoutMs", 300000)) / 1000
        code, duration, error, killed = self._run_child(claim["command"], timeout)
        context = {"attempt": attempt, "exit_code": code, "duration_s": round(duration, 3)}
        if killed:
            context["stopped"] = killed
            return False, {**context, "error": error or killed}, error or killed
        if code != 0:
            err = error or f"exit code {code}"
            return False, {**context, "error": err}, err
        validate = claim.get("validate_command")
        if validate:
            vtimeout = float(self.config.get("validationTimeoutMs", 120000)) / 1000
            vcode, vduration, verror, vkilled = self._run_child(validate, vtimeout)
            context.update({"validation_exit_code": vcode, "validation_duration_s": round(vduration, 3)})
            self._db(lambda: execlog_event(
                self.db, claim, self.instance_id, "validation_run",
                f"{claim['display_id']}: validation {'passed' if vcode == 0 and not vkilled else 'failed'}",
                {"attempt": attempt, "exit_code": vcode, "duration_s": round(vduration, 3)}))
            if vkilled or vcode != 0:
                err = "validation failed: " + (verror or vkilled or f"exit code {vcode}")
                return False, {**context, "error": err}, err
        return True, context, ""

    def _run_child(self, command: str, timeout_s: float) -> tuple[int, float, str, str | None]:
        child = Child(command, self.task_cwd, self._grace_s(), lifeline=self.lifeline, marker=self._next_marker(),
                      env=self.task_env, spool=self.spool)
        with self.lock:
            self.child = child
        try:
            code = child.wait(timeout_s, self._should_stop)
        finally:
            with self.lock:
                self.child = None
        return code, child.elapsed(), child.error_text(), child.killed_reason

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, claim: dict) -> str | None:
        if not self.opts.checkpoints:
            return None
        from buildctl import checkpoints

        return checkpoints.create(self.db, claim["execution_id"], claim["task_id"], agent=self.instance_id,
                                  repo_dir=self.opts.repo, message=f"before {claim['display_id']}")["id"]

    def _restore(self, claim: dict, checkpoint_id: str) -> None:
        """Undo a failed attempt: restore the task's declared write paths from its checkpoint.

        Tasks of one wave share the working tree, so restoring the whole tree would undo
        what the tasks running beside this one wrote. Only the files the task declares it
        creates, updates or deletes are restored; a task that declares none is restored
        whole only when it cannot have neighbours (max_parallel_agents = 1).
        """
        from buildctl import checkpoints

        paths = [r["file_path"] for r in self.db.query(
            "SELECT DISTINCT file_path FROM task_file_impacts WHERE task_id = ? AND operation <> 'READ' ORDER BY file_path",
            (claim["task_id"],))]
        if not paths:
            alone = self.db.scalar(
                "SELECT l.max_parallel_agents = 1 FROM task_list_execution_runs r JOIN task_lists_v2 l "
                "ON l.id = r.task_list_id WHERE r.execution_id = ?", (claim["execution_id"],))
            if not alone:
                execlog_warning(self.db, claim, self.instance_id,
                                f"{claim['display_id']}: not restoring checkpoint {checkpoint_id} before the retry: the task "
                                "declares no files it writes, and a whole-tree restore would undo its neighbours' work")
                return
        checkpoints.restore(self.db, checkpoint_id, execution=claim["execution_id"], repo_dir=self.opts.repo,
                            paths=paths or None)


def execlog_event(db, claim, instance_id, event_type, message, context) -> None:
    with db.write():
        execlog.append(db, claim["execution_id"], event_type, message, task_id=claim["task_id"],
                       instance_id=instance_id, context=context)


def execlog_warning(db, claim, instance_id, message) -> None:
    try:
        execlog_event(db, claim, instance_id, "warning", message, None)
    except Exception:
        pass
