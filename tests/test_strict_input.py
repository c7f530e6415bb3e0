"""Property tests of strict input (issue 11 item 5): NaN, Infinity, numbers that
overflow, deep nesting, duplicate keys, lone surrogates and any unicode, fed to jsonstrict,
`--context` (execlog.parse_context), `--config` (agentstate.parse_config) and task-list files
(tasklists.parse_text and validate), and durations.

For every input: no exception but buildctl's own errors; a refusal is one line with exit 3
(2 for a duration on the command line); an accepted value is within its range and goes
through strict dumps and back unchanged."""

from __future__ import annotations

import dataclasses
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildctl import agentstate, durations, exitcodes, jsonstrict, tasklists
from buildctl.errors import BuildctlError

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None, max_examples=400)

# --------------------------------------------------------------------------- strategies

HUGE = 10**400
numbers = st.one_of(
    st.integers(min_value=-3, max_value=12_000),
    st.integers(),
    st.sampled_from([HUGE, -HUGE, 2**63, 99999999999999999999999, 604_800_000, 604_800_001, 10_000, 10_001]),
    st.floats(),  # NaN, ±inf, huge and tiny included
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 0.5, 1.0]),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from(["\udc80", "\ud83d", "é☃😀", "\u2028", "\x00", "5m", "8d",
                                                         "inf", "nan", "1e999", "9" * 400 + "s", "7d", "0s"]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(texts, inner, max_size=4)), max_leaves=12)

#: Tokens that strict JSON refuses, or that sit right at its edges, spliced into valid text.
TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1E+400", "9" * 400, "1.7976931348623157e308", "1e-999", "-0",
          '"\\ud800"', '"\\udc80x"', '"\udc80"', "[", "]", "{", "}", ",", ":", '"', "\\", "null", '"😀"', "\x00"]


def _splice(text: str, at: int, token: str) -> str:
    at %= len(text) + 1
    return text[:at] + token + text[at:]


def _dumps(value) -> str:
    """Python's json.dumps: writes NaN and Infinity, which is the point; lone surrogates escaped."""
    return json.dumps(value, ensure_ascii=True)


json_texts = st.one_of(
    values.map(_dumps),
    st.builds(_splice, values.map(_dumps), st.integers(min_value=0), st.sampled_from(TOKENS)),
    st.builds(lambda n, inner: "[" * n + inner + "]" * n, st.integers(0, 3000), values.map(_dumps)),
    st.builds(lambda n: '{"a": ' * n + "1" + "}" * n, st.integers(0, 200)),
    st.builds(lambda key, a, b: "{" + f"{_dumps(key)}: {_dumps(a)}, {_dumps(key)}: {_dumps(b)}" + "}",
              texts, values, values),
    st.text(max_size=40),
)


def _refusal(exc: BuildctlError, code: int = exitcodes.INVALID_INPUT) -> None:
    assert exc.exit_code == code, (exc.exit_code, str(exc))
    assert str(exc) and "\n" not in str(exc), repr(str(exc))


def _round_trips(value) -> None:
    _every_number_is_a_finite_double(value)
    text = jsonstrict.dumps(value)
    text.encode("utf-8")  # storable and printable
    assert jsonstrict.loads(text, what="x", max_chars=None) == value  # strict: no NaN or Infinity in it


def _every_number_is_a_finite_double(value) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, (int, float)):
            assert math.isfinite(float(v)), v  # float() of an int beyond a double raises


# --------------------------------------------------------------------------- jsonstrict, --context

@settings(**SETTINGS)
@given(json_texts)
def test_jsonstrict_loads_accepts_strict_json_only_and_round_trips(text):
    try:
        value = jsonstrict.loads(text, what="--context")
    except BuildctlError as exc:
        _refusal(exc)
        assert str(exc).startswith("--context is not valid JSON: ")
        assert jsonstrict.problem(text) is not None
        return
    _round_trips(value)
    assert json.loads(text) == value  # what strict accepts means what Python's json says it means
    assert _members_in(text) == _members_of(value)  # and no member of an object was silently dropped


def _members_in(text: str) -> int:
    """Object members written in ``text`` (a key given twice counts twice)."""
    count = 0

    def pairs(items):
        nonlocal count
        count += len(items)
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return count


def _members_of(value) -> int:
    stack, count = [value], 0
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            count += len(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return count


@settings(**SETTINGS)
@given(values)
def test_jsonstrict_dumps_writes_strict_json_or_refuses(value):
    try:
        text = jsonstrict.dumps(value, what="the value")
    except BuildctlError as exc:
        _refusal(exc)
        return
    text.encode("utf-8")
    reread = jsonstrict.stored(text, fallback=KeyError)
    # What dumps writes, strict loads reads back, except a value nested too deep or with an
    # overflowing integer (which dumps can write and loads must refuse).
    if reread is not KeyError:
        assert jsonstrict.dumps(reread) == text


@settings(**SETTINGS)
@given(json_texts)
def test_parse_context_gives_an_object_or_one_line(text):
    from buildctl import execlog

    try:
        context = execlog.parse_context(text)
    except BuildctlError as exc:
        _refusal(exc)
        return
    assert isinstance(context, dict)
    _round_trips(context)


# --------------------------------------------------------------------------- --config

config_keys = st.sampled_from(sorted(agentstate.CONFIG_RANGES) + ["colour", ""])
config_values = st.one_of(numbers, st.lists(numbers, max_size=4), st.just([0] * 101), texts, st.none())
configs = st.one_of(
    st.dictionaries(config_keys, config_values, max_size=4).map(_dumps),
    st.builds(_splice, st.dictionaries(config_keys, config_values, max_size=3).map(_dumps), st.integers(min_value=0),
              st.sampled_from(TOKENS)),
    st.builds(lambda k, a, b: "{" + f'"{k}": {_dumps(a)}, "{k}": {_dumps(b)}' + "}", config_keys, numbers, numbers),
    json_texts,
)


@settings(**SETTINGS)
@given(configs)
def test_parse_config_gives_values_in_range_or_one_line(text):
    try:
        config = agentstate.parse_config(text)
    except BuildctlError as exc:
        _refusal(exc)
        return
    for key, value in config.items():
        low, high = agentstate.CONFIG_RANGES[key]
        for v in value if isinstance(value, list) else [value]:
            assert isinstance(v, int) and not isinstance(v, bool) and low <= v <= high, (key, value)
    _round_trips(config)


# --------------------------------------------------------------------------- task-list files

impacts = st.fixed_dictionaries({"path": st.sampled_from(["a.py", "b.py"]), "op": st.sampled_from(["READ", "UPDATE"])},
                                optional={"confidence": numbers})
tasks = st.fixed_dictionaries(
    {"id": st.sampled_from(["A", "B", "C"]), "title": st.just("t"), "command": st.just("true")},
    optional={"timeout": st.one_of(numbers, texts), "files": st.lists(impacts, max_size=2), "depends_on": st.just([])},
)
lists = st.fixed_dictionaries({"name": st.just("x"), "tasks": st.lists(tasks, min_size=1, max_size=3)},
                              optional={"max_parallel_agents": numbers, "description": texts})
anything = st.one_of(lists, values)


def _check_spec(spec: tasklists.TaskListSpec) -> None:
    assert 1 <= spec.max_parallel_agents <= tasklists.MAX_PARALLEL_AGENTS
    for task in spec.tasks:
        assert 0 < task.timeout_s <= tasklists.MAX_TIMEOUT_S
        for impact in task.files:
            assert 0 <= impact.confidence <= 1
    _round_trips(dataclasses.asdict(spec))


def _load(text: str, fmt: str) -> None:
    try:
        data = tasklists.parse_text(text, f"list.{fmt}", fmt)
    except BuildctlError as exc:
        _refusal(exc)
        assert str(exc).startswith(f"list.{fmt}"), str(exc)
        return
    _round_trips(data)  # whatever the file format, what it parses to is strict JSON
    try:
        spec = tasklists.validate(data, f"list.{fmt}")
    except BuildctlError as exc:
        _refusal(exc)
        assert str(exc).startswith(f"list.{fmt}"), str(exc)
        return
    _check_spec(spec)


@settings(**SETTINGS)
@given(anything)
def test_validate_gives_a_spec_in_range_or_one_line(data):
    try:
        spec = tasklists.validate(data, "list.toml")
    except BuildctlError as exc:
        _refusal(exc)
        return
    _check_spec(spec)


@settings(**SETTINGS)
@given(st.one_of(anything.map(_dumps), st.builds(_splice, lists.map(_dumps), st.integers(min_value=0),
                                                 st.sampled_from(TOKENS)), json_texts))
def test_json_task_files_are_parsed_strictly(text):
    _load(text, "json")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, int):
        return str(v) if abs(v) < 10**30 else "9" * 400  # tomllib reads any integer
    if isinstance(v, str):
        return _dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return '""'


def _toml(data: dict, depth: int) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if k != "tasks"]
    for task in data["tasks"]:
        lines.append("[[tasks]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in task.items()]
    if depth:
        lines.append("deep = " + "[" * depth + "]" * depth)
    return "\n".join(lines) + "\n"


@settings(**SETTINGS)
@given(lists, st.sampled_from([0, 0, 0, 10, 64, 65, 500, 5000]))
def test_toml_task_files_are_held_to_the_same_rules(data, depth):
    _load(_toml(data, depth), "toml")


# --------------------------------------------------------------------------- durations

@settings(**SETTINGS)
@given(st.one_of(numbers, texts, st.from_regex(r"\A[0-9]{1,400}(\.[0-9]{1,5})?(ms|s|m|h|d|w)?\Z")))
def test_durations_are_finite_and_bounded_or_a_usage_error(value):
    try:
        seconds = durations.parse(value)
    except BuildctlError as exc:
        _refusal(exc, exitcodes.USAGE)
        return
    assert 0 <= seconds <= durations.MAX_SECONDS
