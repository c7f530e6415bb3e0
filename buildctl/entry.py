"""Console entry point.

Every command is served by buildctl.cli.main, which imports neither Typer nor Rich nor
pydantic (start-up is most of what a script calling buildctl once per task waits for);
help, version and shell completion go to the Typer app built from the same declarations.
"""

from __future__ import annotations

import os
import sys


def run(argv: list[str]) -> int:
    """Serve ``argv`` in this process and return the exit code: what the console script does."""
    if "_BUILDCTL_COMPLETE" not in os.environ:
        from buildctl.cli.main import run as serve

        code = serve(argv)
        if code is not None:
            return code
    from buildctl.cli.typer_app import run_app

    return run_app(argv)


def main() -> None:
    code = run(sys.argv[1:])
    # Skip the interpreter's teardown (~5 ms of a hot-path call's budget): the database
    # is closed and committed already.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)
