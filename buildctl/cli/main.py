"""Serving a command line: find the command, parse it (buildctl.cli.grammar), open the
database, run the command's runner, turn every failure into one `error:` line and a
named exit code.

Every command is served here, without importing Typer or pydantic (start-up is most of
what a person or a script waits for). Only what needs Typer's machinery goes to the
Typer app: ``--help`` and ``--version``, a bare group or no command at all (help), and
shell completion (buildctl.entry routes that before coming here).
"""

from __future__ import annotations

import os
import sys

from buildctl import exitcodes
from buildctl.cli import grammar
from buildctl.errors import BuildctlError, UsageError, error_line


def run(argv: list[str]) -> int | None:
    """Serve ``argv``; returns the exit code, or None when the Typer app should answer it."""
    from buildctl.cli import command, groups

    inv = grammar.locate(argv, groups())
    if inv.error is not None:
        error_line(f"{inv.error} (see `{' '.join(['buildctl', *inv.words])} --help`)")
        return exitcodes.USAGE
    cmd = command(tuple(inv.words))
    if cmd is None or inv.help or inv.version:
        return None  # help, version, a bare group: Typer prints them
    return serve(cmd, inv.args, inv.db)


def serve(cmd: grammar.Command, args: list[str], db_location: str | None) -> int | None:
    """Parse one command's arguments and run it (None: --help was asked for, Typer prints it).
    What both the lean path and the Typer app call."""

    def usage(exc: grammar.ParseError) -> int:
        error_line(exc.message if exc.bare else f"{exc.message} (see `buildctl {cmd.name} --help`)")
        return exc.exit_code

    def body() -> int | None:
        try:
            tokens = grammar.tokenize(cmd.params, args)
            if tokens.help:
                return None
            values = grammar.bind(cmd, tokens)
        except grammar.ParseError as exc:
            return usage(exc)
        return execute(cmd, values, tokens.values.get("db") or db_location)

    return guarded(body)


def execute(cmd: grammar.Command, values: dict, location: str | None) -> int:
    """Open the database as the command declares, run it, print what it returns."""
    from buildctl import storage

    if cmd.database is None:
        result = cmd.runner(location, values)
    else:
        if cmd.database == "any":  # doctor: open even a damaged file, as it is, to report on it
            db = storage.open_existing(location)
        else:
            db = storage.connect(location, create=cmd.database == "create", check_schema=cmd.database == "current")
        try:
            result = cmd.runner(db, values)
        finally:
            db.close()
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    if result is not None:
        sys.stdout.write(f"{result}\n")
        sys.stdout.flush()
    return exitcodes.OK


def guarded(body) -> int:
    """Run ``body()`` (which returns an exit code); every failure becomes one `error:` line
    and a named exit code. BUILDCTL_DEBUG=1 re-raises for the traceback."""
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
        if debug:
            raise
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    import sqlite3

    from buildctl import storage

    if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        # An argument (or file) held bytes that are not UTF-8 (Linux hands them over as
        # lone surrogates); SQLite refuses to bind them before anything is written.
        bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else ""
        error_line(f"input is not valid UTF-8 text ({ascii(bad)} in {ascii(exc.object[:60])}); nothing was written")
        return exitcodes.INVALID_INPUT
    if isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg"):
        err = storage.translate(exc) if isinstance(exc, sqlite3.Error) else storage.translate_postgres(exc)
        error_line(err.message)
        return err.exit_code
    error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with BUILDCTL_DEBUG=1 for the traceback)")
    return exitcodes.INTERNAL


__all__ = ["run", "execute", "guarded", "UsageError"]
