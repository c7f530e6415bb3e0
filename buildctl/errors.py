"""Errors that reach the user as one `error: …` line and a named exit code.

Domain code raises these; buildctl.cli.main.guarded turns them into the line and
the code, whichever path served the command.
"""

import sys

from buildctl import exitcodes


class BuildctlError(Exception):
    exit_code = exitcodes.FAILED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


class UsageError(BuildctlError):
    exit_code = exitcodes.USAGE


class InvalidInput(BuildctlError):
    exit_code = exitcodes.INVALID_INPUT


class NotFound(BuildctlError):
    exit_code = exitcodes.NOT_FOUND


class Conflict(BuildctlError):
    exit_code = exitcodes.CONFLICT


class NothingYet(BuildctlError):
    """Nothing can be claimed now (the wave barrier, max_parallel_agents, a retry's backoff,
    a paused run); more will come: try again."""
    exit_code = exitcodes.NOTHING_YET


class NothingLeft(BuildctlError):
    """The run has nothing left for agents: it ended, or every one of its tasks has."""
    exit_code = exitcodes.NOTHING_LEFT


class NeedsMigration(BuildctlError):
    exit_code = exitcodes.NEEDS_MIGRATION


class DatabaseError(BuildctlError):
    exit_code = exitcodes.DATABASE


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached, or the connection to it was lost: a caller that can
    wait (a worker) may reconnect and try again; nothing else can."""


class ConnectionLost(DatabaseUnavailable):
    """The connection dropped while a statement was in flight: whether it took effect is
    unknown (the connection's next statement reconnects). A caller that can find out what
    happened (a worker: does it hold the task it was claiming?) carries on; others fail."""


class GitError(BuildctlError):
    exit_code = exitcodes.GIT


#: Passwords of the database URLs this process connected with (storage registers them):
#: no error line may show one, whatever produced the message.
_hidden: set[str] = set()


def hide(secret: str) -> None:
    if secret:
        _hidden.add(secret)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``. A short secret (under 4
    characters) is replaced only where it stands as a URL password, not in every word."""
    for secret in sorted(_hidden, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        else:
            text = text.replace(f":{secret}@", ":***@").replace(f"password={secret}", "password=***")
    return text


def quoted(value, limit: int = 40) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a refused value
    may be huge (and repr of an integer of more than 4300 digits raises)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def error_line(message: str) -> None:
    """The one `error: …` line on stderr (first line of the message, whitespace folded)."""
    first = scrub(" ".join(str(message).split("\n")[0].split())) or "unknown error"
    sys.stderr.write(f"error: {first}\n")
    sys.stderr.flush()
