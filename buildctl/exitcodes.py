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
#: A bug in buildctl (set BUILDCTL_DEBUG=1 for the traceback).
INTERNAL = 70
#: Interrupted by Ctrl-C / SIGINT.
INTERRUPTED = 130

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
    (INTERNAL, "internal error (a bug): rerun with BUILDCTL_DEBUG=1 for the traceback"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
]
