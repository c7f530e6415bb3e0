"""Named exit codes: the table in the README is generated from this module's docs."""

OK = 0
#: The work ran and did not succeed (a run failed, a gc step failed, doctor found problems).
FAILED = 1
#: The command line is wrong: unknown option, missing argument, value out of range.
USAGE = 2
#: Input was read but refused by the domain rules (a bad task-list file, bad JSON, bad event type).
INVALID_INPUT = 3
#: A named run, list, agent, task or checkpoint does not exist.
NOT_FOUND = 4
#: The request does not fit the current state (resume a completed run, heartbeat a finished agent, another lane).
CONFLICT = 5
#: The database is missing or behind the newest migration: run `buildctl migrate`.
NEEDS_MIGRATION = 6
#: The database could not be used: read-only, disk full, locked past the timeout, corrupt.
DATABASE = 7
#: git refused or a checkpoint did not verify.
GIT = 8
#: Nothing can be claimed yet (the wave barrier, max_parallel_agents, a retry's backoff, a paused run): try again.
NOTHING_YET = 9
#: The run has nothing left for agents: it ended, or every one of its tasks has.
NOTHING_LEFT = 10
#: A bug in buildctl (set BUILDCTL_DEBUG=1 for the traceback).
INTERNAL = 70
#: Ended by SIGHUP (128 + 1), the shell's convention for a signal.
HANGUP = 129
#: Interrupted by Ctrl-C / SIGINT (128 + 2).
INTERRUPTED = 130
#: Ended by SIGTERM (128 + 15), as CI runners and systemd stop a job.
TERMINATED = 143

TABLE = [
    (OK, "success"),
    (FAILED, "the work ran and did not succeed (run failed or cancelled, gc step failed, doctor findings)"),
    (USAGE, "bad command line: unknown option, missing argument, value out of range"),
    (INVALID_INPUT, "input refused by the domain rules: bad task-list file, bad JSON, bad event type"),
    (NOT_FOUND, "no such run, list, agent, task or checkpoint"),
    (CONFLICT, "not allowed in the current state: resume a completed run, heartbeat a finished agent, another lane"),
    (NEEDS_MIGRATION, "database missing or behind the newest migration: run `buildctl migrate`"),
    (DATABASE, "database unusable: read-only, disk full, locked past the timeout, corrupt"),
    (GIT, "git failed, or a checkpoint did not verify"),
    (NOTHING_YET, "nothing can be claimed yet (wave barrier, max_parallel_agents, retry backoff, paused run): try again"),
    (NOTHING_LEFT, "the run has nothing left for agents: it ended, or every task has"),
    (INTERNAL, "internal error (a bug): rerun with BUILDCTL_DEBUG=1 for the traceback"),
    (HANGUP, "run exec ended by SIGHUP (the run is cancelled, its workers stopped)"),
    (INTERRUPTED, "interrupted (Ctrl-C); run exec cancels the run and stops its workers"),
    (TERMINATED, "run exec ended by SIGTERM (the run is cancelled, its workers stopped)"),
]
