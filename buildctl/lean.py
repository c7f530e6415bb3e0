"""The lean hot path (SPEC §7): commands scripts call once per task, without Typer.

``try_run(argv)`` handles ``heartbeat``, ``log add`` and ``agent finish`` (after
optional global ``--db PATH`` / ``--db=PATH``) with the standard library only, from
the declarations in ``buildctl.hotspec`` — the same ones the Typer commands are
generated from — and returns the exit code. For anything else, and for ``--help``
anywhere, it returns None and the entry point falls through to the Typer app.

The command line is parsed the way Click parses it (options and arguments may be
interleaved, ``--opt=value``, ``--`` ends options, an option always takes the next
word as its value, the last repeat wins) and refused with Click's messages, so the
two paths accept the same argument lists and print the same one-line errors.
A hand-rolled loop rather than ``argparse``: argparse costs ~4 ms to import and
would still need rewording for every message.
"""

from __future__ import annotations

from buildctl import hotspec
from buildctl.errors import UsageError, error_line, run_guarded

_HELP = ("--help", "-h")


class _BareUsageError(UsageError):
    """Click raises these without a context, so run_app prints them without the `see --help` hint."""


def _esc(value: str) -> str:
    """Click's _escape_control_characters: untrusted text shown without terminal control characters."""
    import re

    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m[0]):02x}", value)


def _split_globals(argv: list[str]) -> tuple[str | None, list[str]] | None:
    """Global options before the command: only --db is ours; anything else -> Typer."""
    location = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--db":
            if i + 1 >= len(argv):
                return None
            location = argv[i + 1]
            i += 2
        elif arg.startswith("--db="):
            location = arg[5:]
            i += 1
        else:
            return None
    return location, argv[i:]


def match(argv: list[str]) -> tuple[hotspec.Command, list[str], str | None] | None:
    """(command, its arguments, --db value) when argv is a hot command the lean path serves."""
    split = _split_globals(argv)
    if split is None:
        return None
    location, rest = split
    commands = hotspec.all_commands()
    for n in (1, 2):
        cmd = commands.get(tuple(rest[:n]))
        if cmd is not None:
            args = rest[n:]
            for a in args:
                if a == "--":
                    break
                if a in _HELP:
                    return None
            return cmd, args, location
    return None


def parse(cmd: hotspec.Command, args: list[str]) -> dict:
    """argv of one hot command -> raw strings by parameter name (UsageError as Click words it)."""
    options = {}
    for p in cmd.params:
        for flag in p.flags:
            options[flag] = p
    raw: dict = {}
    loose: list[str] = []
    i, n = 0, len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg == "--":
            loose.extend(args[i:])
            break
        if arg[:1] != "-" or len(arg) == 1:
            loose.append(arg)
            continue
        name, eq, value = arg.partition("=")
        p = options.get(name)
        if p is None and arg[:2] != "--" and len(arg) > 2 and options.get(arg[:2]) is not None \
                and options[arg[:2]].type != "bool":
            name, eq, value = arg[:2], "=", arg[2:]  # -n500, as Click reads it
            p = options[name]
        if p is None:
            if arg[:2] != "--":
                raise UsageError(f"No such option: {_esc(arg[:2])}")
            from difflib import get_close_matches  # error path only

            close = get_close_matches(name, list(options))
            hint = f" (Possible options: {', '.join(sorted(close))})" if close else ""
            raise UsageError(f"No such option: {_esc(name)}{hint}")
        if p.type == "bool":
            if eq:
                raise _BareUsageError(f"Option {name!r} does not take a value.")
            raw[p.name] = True
            continue
        if not eq:
            if i >= n:
                raise _BareUsageError(f"Option {name!r} requires an argument.")
            value = args[i]
            i += 1
        if p.multiple:
            raw.setdefault(p.name, []).append(value)
        else:
            raw[p.name] = value
    positionals = [p for p in cmd.params if p.positional]
    for p, value in zip(positionals, loose):
        raw[p.name] = value
    for p in cmd.params:
        if p.required and raw.get(p.name) is None:
            kind = "argument" if p.positional else "option"
            raise UsageError(f"Missing {kind} '{p.label}'.")
    extra = loose[len(positionals):]
    if extra:
        raise UsageError(f"Got unexpected extra argument(s) ({' '.join(_esc(a) for a in extra)})")
    return raw


def _usage(cmd: hotspec.Command, message: str) -> str:
    # run_app's _usage_line: Click's message plus where to look.
    return f"{message} (see `buildctl {cmd.name} --help`)"


def try_run(argv: list[str]) -> int | None:
    """Run a hot command and return its exit code, or None when Typer should handle argv."""
    found = match(argv)
    if found is None:
        return None
    cmd, args, location = found

    def body() -> int:
        try:
            raw = parse(cmd, args)
        except UsageError as exc:
            error_line(exc.message if isinstance(exc, _BareUsageError) else _usage(cmd, exc.message))
            return exc.exit_code
        return hotspec.execute(cmd, raw, location)

    return run_guarded(body)
