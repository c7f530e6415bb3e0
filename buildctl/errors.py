"""Errors that reach the user as one `error: …` line and a named exit code.

Domain code raises these; the two entry paths (Typer and the lean hot path) turn
them into the line and the code, so both behave the same.
"""

import os
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


def quoted(value, limit: int = 40) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a refused value
    may be huge (and repr of an integer of more than 4300 digits raises)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def error_line(message: str) -> None:
    """The one `error: …` line on stderr (first line of the message, whitespace folded)."""
    first = " ".join(str(message).split("\n")[0].split()) or "unknown error"
    sys.stderr.write(f"error: {first}\n")
    sys.stderr.flush()


def run_guarded(body) -> int:
    """Run ``body()`` (which returns an exit code) and turn every failure into one
    `error:` line and a named exit code; BUILDCTL_DEBUG=1 re-raises for the traceback.

    Shared by the Typer app, the lean hot path and the worker, so all three fail alike.
    """
    debug = os.environ.get("BUILDCTL_DEBUG") == "1"
    try:
        return body()
    except BuildctlError as exc:
        if debug:
            raise
        error_line(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # `buildctl log tail | head`: the reader left; not an error worth a line.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return exitcodes.OK
    except Exception as exc:
        import sqlite3

        if debug:
            raise
        if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
            # An argument (or file) held bytes that are not UTF-8 (Linux hands them over as
            # lone surrogates); SQLite refuses to bind them before anything is written.
            bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else ""
            error_line(f"input is not valid UTF-8 text ({ascii(bad)} in {ascii(exc.object[:60])}); nothing was written")
            return exitcodes.INVALID_INPUT
        if isinstance(exc, sqlite3.Error):
            from buildctl import storage

            err = storage.translate(exc)
            error_line(err.message)
            return err.exit_code
        error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with BUILDCTL_DEBUG=1 for the traceback)")
        return exitcodes.INTERNAL
