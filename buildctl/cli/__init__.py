"""The Typer application: root callback with the global --db, one sub-app per group.

Heavy imports (Typer, Rich, pydantic via Typer) start here; the hot-path commands
never reach this module (see buildctl.entry and buildctl.lean).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from buildctl import __version__, exitcodes, storage
from buildctl.cli.common import State
from buildctl.errors import error_line, run_guarded

HELP = (
    "Control plane for parallel build agents.\n\n"
    "Task lists become execution runs, planned into waves of tasks that can run in parallel; "
    "build agents claim tasks, send heartbeats, write an execution log and take git checkpoints. "
    "State lives in one SQLite file (see --db)."
)

app = typer.Typer(
    name="buildctl",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"buildctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH_OR_URL", envvar="BUILDCTL_DB", show_envvar=True,
        help="Database file (default: $XDG_STATE_HOME/buildctl/buildctl.db, i.e. ~/.local/state/buildctl/buildctl.db).",
    )] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    State.db_location = storage.resolve_location(db)


def _register() -> None:
    from buildctl.cli import migrate

    app.command("migrate")(migrate.migrate)
    for module_name in ("tasks", "runs", "agents", "log", "checkpoints", "toplevel"):
        module = __import__(f"buildctl.cli.{module_name}", fromlist=["register"])
        module.register(app)


_register()


def _usage_line(exc) -> str:
    msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return " ".join(msg.split()) + where


def run_app(argv: list[str] | None = None) -> int:
    """Run the Typer app; every failure becomes one `error:` line and a named exit code."""
    try:  # Typer >= 0.26 vendors Click; older releases use the click package
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - depends on the installed Typer
        from click import exceptions as click_exc

    if "_BUILDCTL_COMPLETE" in os.environ:
        # add_completion=False hides --install-completion, but the shell scripts in
        # completions/ still need Typer's completion classes registered.
        from typer.completion import completion_init

        completion_init()

    def body() -> int:
        try:
            rv = app(args=argv, prog_name="buildctl", standalone_mode=False)
        except click_exc.NoArgsIsHelpError:
            return exitcodes.USAGE  # the help was printed already
        except click_exc.UsageError as exc:
            error_line(_usage_line(exc))
            return exitcodes.USAGE
        except click_exc.ClickException as exc:
            error_line(exc.format_message())
            return exc.exit_code or exitcodes.FAILED
        except typer.Abort:
            raise KeyboardInterrupt from None
        return rv if isinstance(rv, int) else exitcodes.OK

    return run_guarded(body)
