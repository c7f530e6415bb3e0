"""The command-line grammar: how every command is declared, and the one function that parses it.

Every command is declared once (``Command`` with its ``Param``s, in the group modules of
``buildctl.cli``). ``parse`` reads argv the way Click does — the same algorithm, ported
from Click's parser: options and arguments interleaved, ``--opt=value``, ``-n5``,
clustered short flags (``-fn2`` is ``-f -n 2``), ``--`` ends options, an option's value
is the next word whatever it looks like, the last repeat wins, required parameters and
conversions checked in Click's order (parameters given on the command line first, in
that order, then the rest as declared). ``buildctl.cli.main`` serves every command
with it; the Typer app (``buildctl.cli.typer_app``), which exists for ``--help``, shell
completion and docs/CLI.md, parses with it too. tests/test_grammar.py checks it
against Click itself.

Global options (``--db``) are accepted before the command, between its words and
after them, as if every command declared them.

Stdlib only and cheap to import: the hot path (``heartbeat``, ``log add``, ``agent
finish``) starts here.
"""

from __future__ import annotations

from buildctl.errors import UsageError


class Param:
    """One argument (no ``flags``) or option of a command.

    ``type``: ``str``, ``int``, ``float``, ``duration`` (90s, 15m, 24h -> seconds) or
    ``bool`` (a flag; ``off_flags`` turn it off again, like Click's ``--x/--no-x``).
    ``min``/``max`` bound numbers and durations, ``choices`` bound strings (usage
    errors, exit 2, naming the range). ``multiple`` options repeat and give a list;
    ``nargs=-1`` makes an argument take every remaining word (``-- CMD ARGS…``).
    ``flag_value`` makes an option's value optional (``--wait`` or ``--wait 30s``): a
    bare option, followed by nothing or by another option, takes ``flag_value``.
    ``complete`` says what shell completion offers: a kind of id (``execution``,
    ``agent``, ``list``, ``checkpoint``, ``task``), ``path``, or a tuple of words.
    An argument is required unless ``required=False``; an option only when
    ``required=True``.
    """

    __slots__ = ("name", "flags", "off_flags", "type", "help", "choices", "min", "max", "required", "default",
                 "metavar", "complete", "multiple", "nargs", "flag_value", "hidden")

    def __init__(self, name: str, flags: tuple = (), type: str = "str", help: str = "", *, off_flags: tuple = (),
                 choices: tuple | None = None, min: float | None = None, max: float | None = None,
                 required: bool | None = None, default=None, metavar: str | None = None, complete=None,
                 multiple: bool = False, nargs: int = 1, flag_value=None, hidden: bool = False):
        self.name = name
        self.flags = tuple(flags)
        self.off_flags = tuple(off_flags)
        self.type = type
        self.help = help
        self.choices = choices
        self.min = min
        self.max = max
        self.required = required if required is not None else (not flags and nargs == 1 and default is None)
        self.default = default if default is not None or type != "bool" else False
        self.metavar = metavar or (("[" + "|".join(choices) + "]") if choices else name.upper())
        self.complete = complete if complete is not None else choices
        self.multiple = multiple
        self.nargs = nargs
        self.flag_value = flag_value
        self.hidden = hidden

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def is_flag(self) -> bool:
        return self.type == "bool"

    @property
    def label(self) -> str:
        """How errors name it: Click's hint, the flags joined, or the argument's metavar."""
        return " / ".join(f"'{f}'" for f in self.flags) if self.flags else f"'{self.metavar}'"

    @property
    def first_flag(self) -> str:
        return self.flags[0] if self.flags else self.metavar

    def __repr__(self) -> str:
        return f"Param({self.name!r}, flags={self.flags!r}, type={self.type!r})"


class Command:
    """One command: its words (``("log", "add")``), help, parameters and runner.

    ``runner(db, values)`` gets an open database and the converted values and returns
    what goes to stdout (a string), an exit code (an int) or None. ``database`` says how
    the database is opened: ``"current"`` (refuse a missing or old one), ``"any"``
    (open whatever is there: doctor), ``"create"`` (migrate) or ``None`` (the runner
    opens it itself, or needs none).
    """

    __slots__ = ("path", "help", "short_help", "params", "runner", "database")

    def __init__(self, path: tuple, help: str, params: tuple, runner, short_help: str | None = None,
                 database: str | None = "current"):
        self.path = tuple(path)
        self.help = help
        self.short_help = short_help
        self.params = tuple(params)
        self.runner = runner
        self.database = database

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def __repr__(self) -> str:
        return f"Command({self.name!r})"


#: The options every command accepts, wherever they stand on the command line.
DB = Param("db", ("--db",), metavar="PATH_OR_URL", complete="path",
           help="The database: a SQLite file path or a postgresql:// URL "
                "(default: $BUILDCTL_DB, else ~/.local/state/buildctl/buildctl.db).")
HELP = Param("help", ("--help", "-h"), type="bool", help="Show this message and exit.")
GLOBALS = (DB,)


class ParseError(UsageError):
    """A command line that does not parse; ``bare`` messages are Click's option-usage
    errors, printed without the `see --help` hint."""

    def __init__(self, message: str, bare: bool = False):
        super().__init__(message)
        self.bare = bare


def escape(value: str) -> str:
    """Untrusted text shown without terminal control characters (Click's _escape_control_characters)."""
    return "".join(c if not (c < " " or "\x7f" <= c <= "\x9f") else f"\\x{ord(c):02x}" for c in value)


# --------------------------------------------------------------------------- tokenizing (Click's _OptionParser)

class Tokens:
    """What the command line said: raw values by parameter name, positionals, the order
    parameters appeared in, and whether --help was asked for."""

    __slots__ = ("values", "positionals", "order", "help")

    def __init__(self):
        self.values: dict = {}
        self.positionals: list[str] = []
        self.order: list[Param] = []
        self.help = False


def _option_tables(params) -> tuple[dict, dict]:
    """{'-n': (param, const)} for short options and {'--lines': (param, const)} for long ones.
    ``const`` is what a flag stores (True, or False for an ``off_flags`` spelling)."""
    short, long = {}, {}
    for p in (*params, *GLOBALS, HELP):
        for flags, const in ((p.flags, True), (p.off_flags, False)):
            for f in flags:
                prefix = "--" if f.startswith("--") else "-"
                (short if len(prefix) == 1 and len(f) == 2 else long)[f] = (p, const)
    return short, long


def tokenize(params, args: list[str]) -> Tokens:
    """argv (after the command's words) -> Tokens, raising ParseError as Click would."""
    short, long = _option_tables(params)
    state = Tokens()
    rargs = list(args)
    while rargs:
        arg = rargs.pop(0)
        if arg == "--":
            break
        if arg[:1] == "-" and len(arg) > 1:
            _process_opts(arg, rargs, state, short, long)
        else:
            state.positionals.append(arg)
    state.positionals.extend(rargs)
    return state


def _store(p: Param, value, state: Tokens) -> None:
    if p is HELP:
        state.help = True
    elif p.multiple:
        state.values.setdefault(p.name, []).append(value)
    else:
        state.values[p.name] = value
    state.order.append(p)


def _value(opt: str, p: Param, rargs: list[str]):
    """The option's value: the next word, whatever it looks like (Click's rule); for an
    option with an optional value, its flag_value when nothing or another option follows."""
    if p.flag_value is not None and (not rargs or (rargs[0][:1] == "-" and len(rargs[0]) > 1)):
        return p.flag_value
    if not rargs:
        raise ParseError(f"Option {opt!r} requires an argument.", bare=True)
    return rargs.pop(0)


def _process_opts(arg: str, rargs: list[str], state: Tokens, short: dict, long: dict) -> None:
    name, eq, explicit = arg.partition("=")
    found = long.get(name)
    if found is None:
        if arg[:2] != "--":
            # A single dash that is not a long option: short options, clustered (-fn2).
            _match_short(arg, rargs, state, short)
            return
        from difflib import get_close_matches  # the error path only

        close = get_close_matches(name, list(long))
        hint = f" (Possible options: {', '.join(sorted(close))})" if close else ""
        raise ParseError(f"No such option: {escape(name)}{hint}")
    p, const = found
    if p.is_flag:
        if eq:
            raise ParseError(f"Option {name!r} does not take a value.", bare=True)
        _store(p, const, state)
        return
    if eq:
        rargs.insert(0, explicit)
    _store(p, _value(name, p, rargs), state)


def _match_short(arg: str, rargs: list[str], state: Tokens, short: dict) -> None:
    for i, ch in enumerate(arg[1:], start=2):
        opt = f"-{ch}"
        found = short.get(opt)
        if found is None:
            raise ParseError(f"No such option: {escape(opt)}")
        p, const = found
        if p.is_flag:
            _store(p, const, state)
            continue
        if i < len(arg):  # the rest of the word is the value: -n500
            rargs.insert(0, arg[i:])
        _store(p, _value(opt, p, rargs), state)
        return


# --------------------------------------------------------------------------- binding (Click's Command.parse_args)

def parse(cmd: Command, args: list[str], *, convert: bool = True) -> tuple[dict, dict]:
    """argv of one command -> (values by parameter name, global values); ParseError/UsageError
    as Click raises them. ``convert=False`` keeps raw strings (the grammar tests compare
    that with Click's own parser)."""
    tokens = tokenize(cmd.params, args)
    values = bind(cmd, tokens, convert=convert)
    return values, {g.name: tokens.values.get(g.name) for g in GLOBALS}


def bind(cmd: Command, tokens: Tokens, *, convert: bool = True) -> dict:
    """Positionals to arguments, then every parameter in Click's processing order: the ones
    given, in the order given, then the rest as declared (missing, conversion, range)."""
    raw = dict(tokens.values)
    extra = _unpack_positionals(cmd.params, tokens.positionals, raw)
    order = []
    for p in tokens.order:
        if p not in order and p in cmd.params:
            order.append(p)
    order += [p for p in cmd.params if p not in order]
    out = {}
    for p in order:
        value = raw.get(p.name)
        if value is None or (p.nargs == -1 and not value):
            if p.required:
                kind = "argument" if p.positional else "option"
                raise ParseError(f"Missing {kind} {p.label}.")
            out[p.name] = list(p.default or ()) if (p.multiple or p.nargs == -1) else p.default
        elif not convert or p.is_flag or p.type == "str" and p.choices is None or (
                p.flag_value is not None and value == p.flag_value):
            out[p.name] = value
        elif p.multiple or p.nargs == -1:
            out[p.name] = [convert_value(p, v) for v in value]
        else:
            out[p.name] = convert_value(p, value)
    if extra:
        raise ParseError(f"Got unexpected extra argument{'s' if len(extra) > 1 else ''} "
                         f"({' '.join(escape(a) for a in extra)})")
    return out


def _unpack_positionals(params, words: list[str], raw: dict) -> list[str]:
    """Click's _unpack_args for nargs 1 and -1: an argument taking the rest leaves the
    ones declared after it their words from the end. Returns the words left over."""
    args = [p for p in params if p.positional]
    words = list(words)
    rest = next((i for i, p in enumerate(args) if p.nargs == -1), None)
    head = args if rest is None else args[:rest]
    for p in head:
        raw[p.name] = words.pop(0) if words else None
    if rest is None:
        return words
    tail = args[rest + 1:]
    for p in reversed(tail):
        raw[p.name] = words.pop() if words else None
    raw[args[rest].name] = words
    return []


# --------------------------------------------------------------------------- conversion

_TYPE_NAMES = {"int": "an integer", "float": "a number"}


def _range(p: Param) -> str:
    if p.max is None:
        return f"must be at least {p.min:g}"
    if p.min is None:
        return f"must be at most {p.max:g}"
    return f"must be between {p.min:g} and {p.max:g}"


def convert_value(p: Param, value: str):
    """One raw string -> its typed, range-checked value (UsageError naming the option and the range)."""
    text = str(value).strip()
    if p.type == "duration":
        from buildctl import durations

        try:
            result = durations.parse(text, what=p.first_flag)
        except UsageError as exc:
            raise ParseError(f"Invalid value for {p.label}: {exc}") from None
    elif p.type in ("int", "float"):
        try:
            result = int(text) if p.type == "int" else float(text)
        except ValueError:
            raise ParseError(f"Invalid value for {p.label}: {escape(repr(value))} is not "
                             f"{_TYPE_NAMES[p.type]}.") from None
        if p.type == "float" and (result != result or result in (float("inf"), float("-inf"))):
            raise ParseError(f"Invalid value for {p.label}: {escape(repr(value))} is not a finite number.")
    else:
        result = value
    if p.min is not None and result < p.min or p.max is not None and result > p.max:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ParseError(f"Invalid value for {p.label}: {escape(shown)} is out of range ({_range(p)}).")
    if p.choices is not None and result not in p.choices:
        raise ParseError(f"Invalid value for {p.label}: {escape(repr(value))} is not one of "
                         f"{', '.join(p.choices)}.")
    return result


# --------------------------------------------------------------------------- finding the command

class Invocation:
    """argv split into the global options, the command's words and its own arguments."""

    __slots__ = ("words", "args", "db", "help", "version", "error")

    def __init__(self):
        self.words: list[str] = []
        self.args: list[str] = []
        self.db = None
        self.help = False
        self.version = False
        self.error: str | None = None


def locate(argv: list[str], groups: dict) -> Invocation:
    """Find the command's words in argv (global options may stand before and between them),
    as Click's groups would: ``groups`` maps a group name to its subcommand names and a
    top-level command to None."""
    inv = Invocation()
    i, n = 0, len(argv)
    expecting = groups
    while i < n:
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            if arg == "--" or expecting is None:
                break
            if arg not in expecting:
                inv.error = f"No such command {escape(repr(arg))}."
                return inv
            inv.words.append(arg)
            expecting = expecting[arg]
            i += 1
            if expecting is None:
                break
            continue
        name, eq, value = arg.partition("=")
        if name == "--db":
            if not eq:
                if i + 1 >= n:
                    inv.error = "Option '--db' requires an argument."
                    return inv
                value = argv[i + 1]
                i += 1
            inv.db = value
        elif arg in ("--help", "-h"):
            inv.help = True
        elif arg == "--version" and not inv.words:
            inv.version = True
        else:
            from difflib import get_close_matches

            close = get_close_matches(name, ["--db", "--help", "--version"]) if name.startswith("--") else []
            hint = f" (Possible options: {', '.join(sorted(close))})" if close else ""
            inv.error = f"No such option: {escape(name if name.startswith('--') else arg[:2])}{hint}"
            return inv
        i += 1
    inv.args = argv[i:]
    return inv
