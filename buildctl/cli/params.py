"""Parameters several commands share, declared once."""

from __future__ import annotations

from buildctl.cli.grammar import Param

#: The longest duration any option accepts (a century): large enough for any retention,
#: small enough that no date arithmetic overflows.
FOREVER_S = 100 * 365 * 86400.0

JSON = Param("as_json", ("--json",), type="bool",
             help="Print JSON (stable keys, ISO-8601 UTC timestamps) instead of a table.")
EXEC = Param("execution", metavar="EXEC", complete="execution", help="Execution id (any unique prefix).")
EXEC_FILTER = Param("execution", metavar="EXEC", complete="execution", required=False,
                    help="Only this execution (any unique id prefix); all executions when left out.")
AGENT = Param("agent", metavar="ID", complete="agent", help="Agent instance id (any unique prefix).")
TASK_FILTER = Param("task", ("--task",), metavar="T", complete="task",
                    help="Only this task: display id (T-001) within the run's list, or task id.")
REPO = Param("repo", ("--repo",), metavar="DIR", complete="path",
             help="Folder the tasks run in, and the git repository for checkpoints (default: the current folder).")
CHECKPOINTS = Param("checkpoints", ("--checkpoints",), type="bool", off_flags=("--no-checkpoints",),
                    help="Checkpoint the repository before each task and restore the task's files before each retry.")
CONFIG = Param("config", ("--config",), metavar="JSON",
               help="Agent config, a JSON object merged over the defaults: maxRetries 3, heartbeatIntervalMs 30000, "
                    "taskTimeoutMs 300000, validationTimeoutMs 120000, and for workers retryBackoffMs "
                    "[1000, 5000, 15000], killGraceMs 5000, staleAfterMs 60000.")


def duration(name: str, flags: tuple, default: float | None, help: str, *, min: float = 0.0) -> Param:
    """A duration option (90s, 15m, 24h, 30d), bounded to [min, a century]."""
    return Param(name, flags, type="duration", default=default, metavar="DURATION", min=min, max=FOREVER_S,
                 help=help)
