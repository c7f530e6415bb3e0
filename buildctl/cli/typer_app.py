"""The Typer app, built from the command declarations: `--help`, shell completion, docs/CLI.md.

Nothing here is declared a second time: every command, argument and option comes from
the group modules of ``buildctl.cli``. The generated commands parse their arguments
with ``buildctl.cli.grammar`` and run through ``buildctl.cli.main.serve``, exactly as
the lean path does (Click's own parser is used only to find where the cursor is during
shell completion and to print help). Help is Click's plain format with plain metavars
(``EXEC``, ``N``, ``DURATION``), not Typer's Rich panels and type labels.

Typer is imported here and nowhere on the lean path; pydantic and Typer's Rich help not at all.
"""

from __future__ import annotations

import inspect
import os
from typing import Annotated, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from buildctl import __version__, exitcodes
from buildctl.cli import commands, grammar, group_help, main

HELP = (
    "Control plane for parallel build agents.\n\n"
    "Task lists become execution runs, planned into waves of tasks that can run in parallel; "
    "build agents claim tasks, send heartbeats, write an execution log and take git checkpoints. "
    "State lives in one SQLite file, or in PostgreSQL for a build farm (see --db)."
)


class _State:
    #: --db given before the command (the root or a group took it); the command's own wins.
    db: str | None = None


# --------------------------------------------------------------------------- help with plain metavars

class _Raw:
    """Typer's coercion of a generated parameter: none. buildctl's grammar parses and
    converts every value; what Click collects serves only help and completion, and every
    parameter is a str (or a list of them, or a flag). Typer builds a pydantic TypeAdapter
    to coerce each, and importing pydantic for it was ~70 ms of every --help."""

    @staticmethod
    def coerce(value, param, ctx):
        return () if value is None and (param.multiple or param.nargs == -1) else value


class _PlainArgument(TyperArgument):
    def get_runtime_param(self) -> _Raw:
        return _Raw

    def display_type_rich(self, ctx) -> None:  # help records (plain help and docs/CLI.md) show no type label
        return None

    def get_usage_pieces(self, ctx) -> list[str]:
        name = self.metavar or self.name.upper()
        if not self.required:
            name = f"[{name}]"
        return [name]


class _PlainOption(TyperOption):
    def get_runtime_param(self) -> _Raw:
        return _Raw

    def display_type_rich(self, ctx) -> str | None:
        return None if self.is_flag else self.metavar


def _plain(params: list) -> list:
    for p in params:
        if type(p) is TyperArgument:
            p.__class__ = _PlainArgument
        elif type(p) is TyperOption:
            p.__class__ = _PlainOption
    return params


class PlainGroup(TyperGroup):
    def get_params(self, ctx) -> list:
        return _plain(super().get_params(ctx))

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            # A bare group: its help on stdout, and the usage exit code (Click raises an
            # error whose message is the whole help).
            typer.echo(ctx.get_help())
            raise typer.Exit(exitcodes.USAGE)
        return super().parse_args(ctx, args)


class DeclaredCommand(TyperCommand):
    """A generated command: its declaration parses and runs it; Click only helps and completes."""

    declaration: grammar.Command

    def get_params(self, ctx) -> list:
        return _plain(super().get_params(ctx))

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        ctx.meta["buildctl.args"] = list(args)
        if not ctx.resilient_parsing and not _asks_for_help(self.declaration, args):
            ctx.args = []
            return []
        return super().parse_args(ctx, args)  # --help, or shell completion finding the cursor

    def invoke(self, ctx):
        code = main.serve(self.declaration, ctx.meta["buildctl.args"], _State.db)
        return exitcodes.OK if code is None else code


def _asks_for_help(cmd: grammar.Command, args: list[str]) -> bool:
    try:
        return grammar.tokenize(cmd.params, args).help
    except grammar.ParseError:
        return False  # serve() reports it


# --------------------------------------------------------------------------- completion of ids

def _location(ctx) -> str:
    """The database named on the command line being completed (--db anywhere), else the default."""
    from buildctl import storage

    while ctx is not None:
        if ctx.params.get("db"):
            return ctx.params["db"]
        ctx = ctx.parent
    return storage.resolve_location(None)


_ID_QUERIES = {
    "execution": "SELECT execution_id FROM task_list_execution_runs WHERE substr(execution_id, 1, ?) = ? "
                 "ORDER BY started_at DESC, execution_id LIMIT 50",
    "agent": "SELECT instance_id FROM build_agent_instances WHERE substr(instance_id, 1, ?) = ? "
             "ORDER BY spawned_at DESC LIMIT 50",
    "list": "SELECT id FROM task_lists_v2 WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC LIMIT 50",
    "checkpoint": "SELECT id FROM checkpoints WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC LIMIT 50",
}


def _completer(p: grammar.Param):
    if isinstance(p.complete, tuple):
        values = p.complete

        def complete_words(incomplete: str) -> list[str]:
            return [v for v in values if v.startswith(incomplete)]

        return complete_words
    if p.complete in _ID_QUERIES:
        sql = _ID_QUERIES[p.complete]

        def complete_id(ctx: typer.Context, incomplete: str) -> list[str]:
            return _ids_from(ctx, sql, (len(incomplete), incomplete))

        return complete_id
    if p.complete == "task":
        def complete_task(ctx: typer.Context, incomplete: str) -> list[str]:
            execution = (ctx.params.get("exec") or ctx.params.get("execution")
                         or _execution_in(ctx.command.declaration, ctx.meta.get("buildctl.args", [])))
            if not execution:
                return []
            return _ids_from(ctx, "SELECT t.display_id FROM tasks t JOIN task_list_execution_runs r "
                                  "ON r.task_list_id = t.task_list_id WHERE substr(r.execution_id, 1, ?) = ? "
                                  "AND substr(t.display_id, 1, ?) = ? ORDER BY t.position LIMIT 50",
                             (len(execution), execution, len(incomplete), incomplete))

        return complete_task
    return None


def _execution_in(cmd: grammar.Command, args: list[str]) -> str | None:
    """The run named on a partial command line whose last word is an option waiting for its
    value (Click stops parsing there, so the context has not seen the arguments)."""
    try:
        tokens = grammar.tokenize(cmd.params, args[:-1])
    except grammar.ParseError:
        return None
    return tokens.values.get("exec") or (tokens.positionals[0] if tokens.positionals else None)


def _ids_from(ctx, sql: str, params: tuple) -> list[str]:
    """Values from the database for shell completion; silent when there is none."""
    from buildctl import storage

    try:
        db = storage.connect(_location(ctx))
    except Exception:
        return []
    try:
        return [row[0] for row in db.execute(sql, params).fetchall()]
    except Exception:
        return []
    finally:
        db.close()


# --------------------------------------------------------------------------- generating the commands

def _annotation(p: grammar.Param):
    kwargs = {"help": p.help + _range_note(p), "show_default": False, "hidden": p.hidden}
    completer = _completer(p)
    if completer is not None:
        kwargs["autocompletion"] = completer
    if p.positional:
        kwargs.pop("hidden")
        info = typer.Argument(metavar=p.metavar, **kwargs)
        py_type = Optional[list[str]] if p.nargs == -1 else (str if p.required else Optional[str])
    elif p.is_flag:
        flags = "/".join((" ".join(p.flags), " ".join(p.off_flags))) if p.off_flags else None
        info = typer.Option(*([flags] if flags else p.flags), **kwargs)
        py_type = bool
    else:
        info = typer.Option(*p.flags, metavar=p.metavar, **kwargs)
        py_type = Optional[list[str]] if p.multiple else (str if p.required else Optional[str])
    return Annotated[py_type, info]


def _range_note(p: grammar.Param) -> str:
    if p.type not in ("int", "float") or (p.min is None and p.max is None) or p.metavar in ("0-100", "0..1"):
        return ""
    lo = "" if p.min is None else _number(p.min)
    hi = "" if p.max is None else _number(p.max)
    return f" [{lo}..{hi}]" if hi else f" [>= {lo}]"


#: Every command accepts --db after its words too; help lists it once, on the root.
_HIDDEN_DB = grammar.Param("db", grammar.DB.flags, metavar=grammar.DB.metavar, help=grammar.DB.help, complete="path",
                           hidden=True)


def _number(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"


def _function(cmd: grammar.Command):
    """A stand-in callback with the declaration's signature (Typer reads parameters from it).
    It never runs: DeclaredCommand.invoke serves the command."""

    def command(**_values) -> None:  # pragma: no cover - see DeclaredCommand.invoke
        raise AssertionError("served by buildctl.cli.main")

    params = []
    for p in (*cmd.params, _HIDDEN_DB):
        optional = not p.required
        default = inspect.Parameter.empty if not optional else (False if p.is_flag else None)
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=_annotation(p)))
    params.sort(key=lambda q: q.default is not inspect.Parameter.empty)
    command.__signature__ = inspect.Signature(params)
    command.__name__ = "_".join(cmd.path)
    command.__qualname__ = command.__name__
    command.__doc__ = cmd.help
    return command


def _group_callback(ctx: typer.Context,
                    db: Annotated[Optional[str], typer.Option("--db", hidden=True, metavar="PATH_OR_URL",
                                                              help=grammar.DB.help)] = None) -> None:
    if db:
        _State.db = db


def _version(value: bool) -> None:
    if value:
        print(f"buildctl {__version__}")
        raise typer.Exit(0)


def build() -> typer.Typer:
    # Help in Click's plain format (rich_markup_mode=None): Typer's Rich help imports
    # rich.markdown, markdown-it and pygments, ~110 ms of every --help (350 ms measured on
    # a slow 2-core machine, against the 350 ms budget; 160 ms plain).
    root = typer.Typer(name="buildctl", help=HELP, rich_markup_mode=None, no_args_is_help=True, add_completion=False,
                       cls=PlainGroup,
                       pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})

    @root.callback()
    def root_options(
        db: Annotated[Optional[str], typer.Option("--db", metavar="PATH_OR_URL", envvar="BUILDCTL_DB",
                                                  show_envvar=True, help=grammar.DB.help)] = None,
        show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print the version and exit.")] = False,
    ) -> None:
        _State.db = db

    subapps: dict[str, typer.Typer] = {}
    for name, help_text in group_help().items():
        sub = typer.Typer(help=help_text, rich_markup_mode=None, no_args_is_help=True, cls=PlainGroup)
        sub.callback()(_group_callback)
        subapps[name] = sub
    for cmd in commands().values():
        cls = type(f"Declared_{'_'.join(cmd.path)}", (DeclaredCommand,), {"declaration": cmd})
        target = subapps[cmd.path[0]] if len(cmd.path) == 2 else root
        target.command(cmd.path[-1], help=cmd.help, short_help=cmd.short_help, cls=cls)(_function(cmd))
    for name, sub in subapps.items():
        root.add_typer(sub, name=name)
    return root


app = build()


def run_app(argv: list[str] | None = None) -> int:
    """Run the Typer app (help, version, completion, or a command); one `error:` line on failure."""
    if "_BUILDCTL_COMPLETE" in os.environ:
        # add_completion=False hides --install-completion, but completions/ still needs
        # Typer's completion classes registered.
        from typer.completion import completion_init

        completion_init()

    def body() -> int:
        try:
            rv = app(args=argv, prog_name="buildctl", standalone_mode=False)
        except typer.Exit as exc:
            return exc.exit_code
        except typer.Abort:
            raise KeyboardInterrupt from None
        except typer.TyperException as exc:
            # Click's own usage errors, for what the lean path does not serve (help of an
            # unknown command during completion, no arguments at all: the help is shown).
            message = " ".join(exc.format_message().split()) if hasattr(exc, "format_message") else str(exc)
            if message:
                from buildctl.errors import error_line

                ctx = getattr(exc, "ctx", None)
                error_line(message + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""))
            return exc.exit_code
        return rv if isinstance(rv, int) else exitcodes.OK

    return main.guarded(body)
