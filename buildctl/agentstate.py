"""An agent's settings, and the status change of an agent that the assignment state
machine makes too (the no-progress rule marks an agent stuck in the transaction that
records its failure). Below both ``agents`` and ``assignments``, so that neither
imports the other's way round. Stdlib only.
"""

from __future__ import annotations

from buildctl import execlog
from buildctl.errors import InvalidInput, quoted

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from typing import Any

    from buildctl.storage import Database

DEFAULT_CONFIG = {"maxRetries": 3, "heartbeatIntervalMs": 30000, "taskTimeoutMs": 300000, "validationTimeoutMs": 120000}
#: Worker settings beyond the four every agent has: the backoff before each retry (1 s, 5 s, 15 s),
#: how long a stopped child gets between SIGTERM and SIGKILL, and how long a worker
#: that cannot write heartbeats keeps its child (the stale threshold).
WORKER_CONFIG = {"retryBackoffMs": [1000, 5000, 15000], "killGraceMs": 5000, "staleAfterMs": 60000}
#: The range of every config value (and of each retryBackoffMs step): milliseconds up to
#: 7 days, at most 100 retries. Zero is refused where it would make the worker spin or
#: stop every task at once (intervals, timeouts, the stale threshold).
_WEEK_MS = 7 * 24 * 3600 * 1000
CONFIG_RANGES = {
    "maxRetries": (0, 100),
    "heartbeatIntervalMs": (1, _WEEK_MS),
    "taskTimeoutMs": (1, _WEEK_MS),
    "validationTimeoutMs": (1, _WEEK_MS),
    "retryBackoffMs": (0, _WEEK_MS),
    "killGraceMs": (0, _WEEK_MS),
    "staleAfterMs": (1, _WEEK_MS),
}
#: retryBackoffMs holds one step per retry at most.
MAX_BACKOFF_STEPS = CONFIG_RANGES["maxRetries"][1]


def config_from(row: dict) -> dict:
    """The stored config merged over the defaults. A stored value that is not valid JSON,
    or a key whose value is out of range (a row written by an old version or by hand),
    falls back to the default: a worker or a release never fails on one."""
    from buildctl import jsonstrict

    cfg = jsonstrict.stored(row.get("config"), {})
    if not isinstance(cfg, dict):
        cfg = {}
    good = {}
    for key, v in cfg.items():
        try:
            _check_config_value(key, v)
        except InvalidInput:
            continue
        good[key] = v
    return {**DEFAULT_CONFIG, **good}


def _check_config_value(key: str, v: Any) -> None:
    if key not in CONFIG_RANGES:
        raise InvalidInput(f"unknown --config key {key!r}; expected one of: {', '.join(CONFIG_RANGES)}")
    low, high = CONFIG_RANGES[key]
    if key == "retryBackoffMs":
        if (not isinstance(v, list) or not 1 <= len(v) <= MAX_BACKOFF_STEPS
                or any(isinstance(x, bool) or not isinstance(x, int) or not low <= x <= high for x in v)):
            raise InvalidInput(f"--config retryBackoffMs must be a list of 1 to {MAX_BACKOFF_STEPS} integers "
                               f"between {low} and {high}, not {quoted(v)}")
    elif isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise InvalidInput(f"--config {key} must be an integer between {low} and {high}, not {quoted(v)}")


def parse_config(value: str | dict | None) -> dict:
    """The defaults merged with ``--config``: a strict JSON object of known keys, each
    an integer in its range (``CONFIG_RANGES``)."""
    from buildctl import jsonstrict

    if value is None:
        given = {}
    elif isinstance(value, dict):
        given = value
    else:
        given = jsonstrict.loads(value, what="--config")
        if not isinstance(given, dict):
            raise InvalidInput("--config must be a JSON object, e.g. '{\"maxRetries\": 5}'")
    for key, v in given.items():
        _check_config_value(key, v)
    return {**DEFAULT_CONFIG, **given}


def backoff_s(config: dict, attempt: int) -> float:
    """Seconds to wait before retrying after failed attempt ``attempt`` (1, 2, …):
    retryBackoffMs's step for it, the last step for every later one (1 s, 5 s, 15 s)."""
    steps = config.get("retryBackoffMs") or WORKER_CONFIG["retryBackoffMs"]
    return steps[min(attempt - 1, len(steps) - 1)] / 1000


def stale_after_s(config: dict) -> float:
    """How long an agent may stay silent before its peers take its task back (its lease)."""
    return config.get("staleAfterMs", WORKER_CONFIG["staleAfterMs"]) / 1000


def config_of(db: Database, instance_id: str) -> dict:
    """The agent's config: the defaults merged with what it was spawned with."""
    return config_from(db.one("SELECT config FROM build_agent_instances WHERE instance_id = ?", (instance_id,)) or {})


def mark_stuck(db: Database, agent: dict, *, code: str, message: str, task_id: str | None = None) -> dict:
    """Inside the caller's write: set ``agent`` (instance_id, execution_id) stuck with an
    ``error_context`` and a ``warning`` event; returns the error_context. The caller
    releases what it held in the same transaction."""
    from buildctl import jsonstrict

    iid = agent["instance_id"]
    ctx = {"code": code, "message": message, "taskId": task_id, "timestamp": db.scalar(f"SELECT {db.sql.now_iso}")}
    db.execute("UPDATE build_agent_instances SET status = 'stuck', error_context = ? WHERE instance_id = ?",
               (jsonstrict.dumps(ctx), iid))
    execlog.append(db, agent["execution_id"], "warning", f"agent {iid} marked stuck: {message}",
                   task_id=task_id, instance_id=iid, context=ctx)
    return ctx
