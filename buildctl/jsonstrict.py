"""The one place JSON is read and written: strict RFC 8259 both ways.

Reading refuses, with one ``InvalidInput`` sentence naming the input (``--context``,
a file) and what is wrong:

- ``NaN``, ``Infinity``, ``-Infinity`` (not JSON; Python's parser takes them);
- a number that overflows a double (``1e999``, a 400-digit integer): it would come
  back as ``Infinity``, which strict JSON cannot write out again;
- a key given twice in one object: RFC 8259 leaves the meaning open, and the two
  readers we have disagree (Python keeps the last, SQLite's ``json_extract`` the
  first), so the lane would hold a value no reader agrees on;
- nesting deeper than ``MAX_DEPTH``: checked by a scan without recursion *before*
  the (recursive) parser runs, so 50,000 ``[`` is one line, not a RecursionError;
- more than ``max_chars`` characters, and text that is not valid UTF-8 (a lone
  surrogate from undecodable bytes in argv).

Escaped lone surrogates (``"\\udc80"``) are valid RFC 8259 and are accepted: that is
how a file name that is not UTF-8 is stored in a checkpoint's ``files_snapshot``.

Writing never emits NaN or Infinity (``allow_nan=False``), and always produces text
that encodes as UTF-8 (falling back to ``\\u`` escapes for lone surrogates).

Stdlib only and cheap to import; ``json`` itself is imported only when a value is read
or written (the hot path imports this module only then, too).
"""

from __future__ import annotations

from buildctl.errors import InvalidInput, quoted

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from typing import Any, Callable

#: Containers nested deeper than this are refused (RFC 8259 §9 lets a parser set the limit).
MAX_DEPTH = 64
#: The default size bound, in characters: a context or config is a few hundred bytes;
#: a megabyte is a mistake (a log pasted into --context), not data for the lane.
MAX_CHARS = 1_000_000
#: The bound for task-list files, which hold a whole list (a 10,000-task file is ~2 MB).
MAX_FILE_CHARS = 16_000_000


class _Refused(Exception):
    """Raised by the parser hooks; carries the reason out of json.loads."""


def loads(text: str, *, what: str, max_chars: int | None = MAX_CHARS) -> Any:
    """The value of ``text``, or ``InvalidInput("WHAT is not valid JSON: reason")``."""
    value, reason = _parse(text, max_chars)
    if reason is not None:
        raise InvalidInput(f"{what} is not valid JSON: {reason}")
    return value


def problem(text: Any, *, max_chars: int | None = None) -> str | None:
    """Why ``text`` (a stored column value) is not strict JSON, or None when it is."""
    return _parse(text, max_chars)[1]


def stored(text: Any, fallback: Any = None) -> Any:
    """The value of a stored JSON column, or ``fallback`` when it is empty or not strict
    JSON (a row written by an old version, or by hand): readers never fail on one."""
    if not isinstance(text, str) or not text:
        return fallback
    value, reason = _parse(text, None)
    return fallback if reason is not None else value


def dumps(value: Any, *, what: str = "the value", sort_keys: bool = True, indent: int | None = None,
          default: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON text for ``value``; ``InvalidInput`` naming ``what`` when it holds NaN or
    Infinity. ``sort_keys`` by default: what we store is canonical."""
    import json

    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, sort_keys=sort_keys, indent=indent,
                          default=default)
    except ValueError as exc:  # "Out of range float values are not JSON compliant: nan"
        raise InvalidInput(f"{what} cannot be written as JSON: {exc}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a file name that is not UTF-8): keep it as \udcXX
        text = json.dumps(value, allow_nan=False, ensure_ascii=True, sort_keys=sort_keys, indent=indent,
                          default=default)
    return text


def check_value(value: Any, *, what: str) -> None:
    """Refuse a parsed value (TOML's) that strict JSON could not hold: a non-finite float, an
    integer beyond a double's range, nesting deeper than ``MAX_DEPTH``. Iterative: the value
    may be deep."""
    import math

    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidInput(f"{what}: {path or 'the value'} is {v!r}; only finite numbers are allowed")
        if isinstance(v, int) and v.bit_length() > 1000 and _overflows(v):
            raise InvalidInput(f"{what}: {path or 'the value'} is out of range (it overflows to infinity)")
        if isinstance(v, (dict, list)):
            if depth >= MAX_DEPTH:
                where = path if len(path) <= 40 else path[:40] + "…"
                raise InvalidInput(f"{what}: {where} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(v, list):
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(v))
            else:
                stack.extend((child, f"{path}.{key}" if path else str(key), depth + 1) for key, child in v.items())


# --------------------------------------------------------------------------- the parser

def _parse(text: str, max_chars: int | None) -> tuple[Any, str | None]:
    """(value, None), or (None, the reason it is refused)."""
    if not isinstance(text, str):
        return None, f"expected text, not {type(text).__name__}"
    if max_chars is not None and len(text) > max_chars:
        return None, f"{len(text)} characters is more than the limit of {max_chars}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, f"it is not valid UTF-8 text (character {exc.start + 1})"
    if _too_deep(text):
        return None, f"nested more than {MAX_DEPTH} levels deep"
    import json

    try:
        value = _decoder().decode(text)
    except _Refused as exc:
        return None, str(exc)
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg}: line {exc.lineno} column {exc.colno}"
    return value, None


def _decoder():
    """One strict decoder for every call (json.loads with hooks builds a new one each time)."""
    global _DECODER
    if _DECODER is None:
        import json

        _DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int,
                                    object_pairs_hook=_object)
    return _DECODER


def _constant(name: str):
    raise _Refused(f"{name} is not allowed (JSON has no NaN or Infinity; use null or a string)")


def _float(literal: str) -> float:
    value = float(literal)
    if value in (_INF, -_INF):
        raise _Refused(f"the number {quoted(literal)} is out of range (it overflows to infinity)")
    return value


def _int(literal: str) -> int:
    # Only a literal of more than 308 digits can exceed a double; float() of one is inf.
    if len(literal) > 308 and float(literal) in (_INF, -_INF):
        raise _Refused(f"the number {quoted(literal)} is out of range (it overflows to infinity)")
    return int(literal)


def _overflows(n: int) -> bool:
    try:
        float(n)
    except OverflowError:
        return True
    return False


def _object(pairs: list[tuple[str, Any]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {quoted(key)} appears twice in one object")
            seen.add(key)
    return value


_INF = float("inf")
_DECODER = None  # the strict json.JSONDecoder, made on first use
_NOT_BRACKETS = None  # the compiled pattern, made on first use (re is not free to import)


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests containers deeper than MAX_DEPTH (brackets inside strings do
    not count), without recursion and in C-speed passes but the last, over brackets only.

    Dropping every escaped backslash and then every escaped quote leaves exactly the quotes
    that delimit strings, so every other piece between quotes is outside strings. Where the
    text is broken (an unterminated string) this view may differ from the parser's, but only
    after the point where the parser stops, so its depth is never underestimated."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # the common case: too few brackets to be too deep
    global _NOT_BRACKETS
    if _NOT_BRACKETS is None:
        import re

        _NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKETS.sub("", "".join(unescaped.split('"')[0::2]))
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1  # may go negative on broken input; the parser refuses that
    return False
