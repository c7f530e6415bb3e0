"""Durations on the command line and in task files: 90s, 15m, 24h, 30d (and 500ms, 1h30m)."""

from __future__ import annotations

import re

from buildctl.errors import UsageError, quoted

#: The longest duration accepted (an option such as --keep-logs): ten years. Longer is a
#: slip of the keyboard, and a cut-off that far back is still a date the database can compute.
MAX_SECONDS = 3650 * 86400.0

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse(text: str | int | float, *, what: str = "duration", maximum: float = MAX_SECONDS) -> float:
    """Seconds in ``text``; a bare number means seconds. Refuses negatives, junk, NaN, and
    anything longer than ``maximum`` (naming the range) with a UsageError; a task file's
    reader turns that into its own refusal."""
    if isinstance(text, bool):
        raise UsageError(f"invalid {what} {text!r}")
    if isinstance(text, int):
        seconds = float(max(min(text, 2**1000), -(2**1000)))  # float() of a larger int raises OverflowError
    elif isinstance(text, float):
        seconds = text
    else:
        seconds = _parse_text(str(text), what)
    if seconds != seconds:
        raise UsageError(f"invalid {what} {quoted(text)}: not a number")
    if seconds < 0:
        raise UsageError(f"invalid {what} {quoted(text)}: must not be negative")
    if seconds > maximum:
        raise UsageError(f"invalid {what} {quoted(text)}: must be at most {limit(maximum)}")
    return seconds


def _parse_text(text: str, what: str) -> float:
    s = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise UsageError(f"invalid {what} {quoted(text)}: use a number with a unit, e.g. 90s, 15m, 24h, 30d")
    return total


def limit(seconds: float) -> str:
    """A bound for a message: '7d', '3650d', '90s'."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    return f"{seconds:g}s"


def offset(seconds: float) -> str:
    """'-86400.000 seconds': a cut-off ``seconds`` in the past, for ``db.sql.ago(param)`` on
    either engine (a negative ``seconds`` gives a time ahead: '+5.000 seconds')."""
    return f"{-seconds:+.3f} seconds"


def human(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"
