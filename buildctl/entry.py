"""Console entry point.

The few commands scripts call once per task (SPEC §7) go through buildctl.lean,
which imports only the standard library; everything else, and all help and shell
completion, goes through the Typer app.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    if not any(k.startswith("_BUILDCTL_COMPLETE") for k in os.environ):
        from buildctl.lean import try_run

        code = try_run(argv)
        if code is not None:
            # Done: skip the interpreter's teardown, ~5 ms of the hot path's ~50 ms
            # budget (SPEC §7). The database is closed and committed already.
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:
                pass
            os._exit(code)
    from buildctl.cli import run_app

    sys.exit(run_app(argv))
