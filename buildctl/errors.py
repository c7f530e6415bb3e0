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


class NeedsMigration(BuildctlError):
    exit_code = exitcodes.NEEDS_MIGRATION


class DatabaseError(BuildctlError):
    exit_code = exitcodes.DATABASE


class GitError(BuildctlError):
    exit_code = exitcodes.GIT


def error_line(message: str) -> None:
    """The one `error: …` line on stderr (first line of the message, whitespace folded)."""
    first = " ".join(str(message).split("\n")[0].split()) or "unknown error"
    sys.stderr.write(f"error: {first}\n")
    sys.stderr.flush()
