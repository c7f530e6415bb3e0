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


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached, or the connection to it was lost: a caller that can
    wait (a worker) may reconnect and try again; nothing else can."""


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


def error_line(message: str) -> None:
    """The one `error: …` line on stderr (first line of the message, whitespace folded)."""
    first = scrub(" ".join(str(message).split("\n")[0].split())) or "unknown error"
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
        if isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg"):
            from buildctl import storage

            err = storage.translate(exc) if isinstance(exc, sqlite3.Error) else storage.translate_postgres(exc)
            error_line(err.message)
            return err.exit_code
        error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with BUILDCTL_DEBUG=1 for the traceback)")
        return exitcodes.INTERNAL
