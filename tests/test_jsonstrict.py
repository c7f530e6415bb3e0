"""Strict input (issue 11 item 5): JSON is strict RFC 8259 on the way in and out
(buildctl.jsonstrict), and every number read from --config, a task-list file or a duration
has a range; a refusal is one line, exit 3 (2 for an option), and writes nothing."""

from __future__ import annotations

import json
import math

import pytest

import seed
from conftest import assert_refused, snapshot

from buildctl import agentstate, durations, execlog, exitcodes, jsonstrict, tasklists
from buildctl.errors import InvalidInput, UsageError

DEEP = "[" * 50_000 + "]" * 50_000

REFUSED = {
    "nan": ('{"error": NaN}', "NaN is not allowed"),
    "infinity": ('{"a": Infinity}', "Infinity is not allowed"),
    "minus_infinity": ("[-Infinity]", "-Infinity is not allowed"),
    "overflow": ('{"a": 1e999}', "the number '1e999' is out of range (it overflows to infinity)"),
    "negative_overflow": ('{"a": -1.5E+400}', "the number '-1.5E+400' is out of range"),
    "huge_integer": ('{"a": ' + "9" * 400 + "}", "the number '9999"),
    "duplicate_key": ('{"error": "a", "error": "b"}', "the key 'error' appears twice in one object"),
    "nested_duplicate_key": ('{"a": [{"k": 1, "k": 1}]}', "the key 'k' appears twice"),
    "deep_arrays": (DEEP, "nested more than 64 levels deep"),
    "one_level_too_deep": ("[" * 65 + "]" * 65, "nested more than 64 levels deep"),
    "deep_objects": ('{"a":' * 65 + "1" + "}" * 65, "nested more than 64 levels deep"),
    "syntax": ('{"a": }', "Expecting value: line 1 column 7"),
    "extra_data": ("{} {}", "Extra data: line 1 column 4"),
    # Brackets after an unterminated string of escaped quotes: the depth scan stays linear.
    "unterminated_string": ('"' + '\\"' * 100_000 + "[" * 100, "Unterminated string starting at: line 1 column 1"),
    "undecodable_bytes": ('{"a": "\udcff"}', "not valid UTF-8 text (character 8)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_loads_refuses_with_one_sentence_naming_the_input(case):
    text, reason = REFUSED[case]
    with pytest.raises(InvalidInput) as info:
        jsonstrict.loads(text, what="--context")
    message = str(info.value)
    assert message.startswith("--context is not valid JSON: "), message
    assert reason in message and "\n" not in message
    assert info.value.exit_code == exitcodes.INVALID_INPUT
    assert jsonstrict.problem(text) is not None
    assert jsonstrict.stored(text, "fallback") == "fallback"


def test_loads_accepts_the_edges_of_what_is_allowed():
    assert jsonstrict.loads("[" * 64 + "]" * 64, what="x") is not None
    # Brackets inside strings are not nesting, after an escaped quote or an escaped backslash too.
    for value in ({"s": "[" * 100 + '\\"{' * 50, "t": ["\\"]}, {"a": '"' + "[" * 100}, {"a": "\\", "b": "{" * 100},
                  {"a": "\\\\\"" + "[" * 100}):
        text = json.dumps(value)
        assert jsonstrict.loads(text, what="x") == value, text
    assert jsonstrict.loads("1.7976931348623157e308", what="x") == 1.7976931348623157e308
    assert jsonstrict.loads("-" + "9" * 308, what="x") == -int("9" * 308)
    assert jsonstrict.loads("1e-999", what="x") == 0.0  # underflow is an approximation, not an overflow
    assert jsonstrict.loads('{"a": 1, "b": {"a": 2}}', what="x") == {"a": 1, "b": {"a": 2}}  # same key, two objects
    assert jsonstrict.loads('"ü ☃ \\u00e9 \\ud83d\\ude00"', what="x") == "ü ☃ é 😀"
    # An escaped lone surrogate is valid RFC 8259: a checkpoint stores a non-UTF-8 file name so.
    name = jsonstrict.loads('["\\udcff.txt"]', what="x")
    assert name == ["\udcff.txt"] and jsonstrict.loads(jsonstrict.dumps(name), what="x") == name


def test_the_size_bound():
    text = json.dumps("a" * jsonstrict.MAX_CHARS)
    with pytest.raises(InvalidInput, match=f"--config is not valid JSON: {len(text)} characters is more than the limit"):
        jsonstrict.loads(text, what="--config")
    assert jsonstrict.loads(text, what="x", max_chars=None) == "a" * jsonstrict.MAX_CHARS
    assert jsonstrict.problem(text) is None  # stored rows have no size bound


def test_dumps_never_writes_nan_or_infinity_and_always_utf8():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidInput, match="the log context cannot be written as JSON"):
            jsonstrict.dumps({"a": [bad]}, what="the log context")
    text = jsonstrict.dumps({"b": "\udcff", "a": "é"})
    text.encode("utf-8")
    assert text == '{"a": "\\u00e9", "b": "\\udcff"}'
    assert jsonstrict.dumps({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'  # sorted, UTF-8 kept


def test_check_value_refuses_what_strict_json_cannot_hold():
    with pytest.raises(InvalidInput, match=r"f.toml: tasks\[1\].timeout is nan; only finite numbers are allowed"):
        jsonstrict.check_value({"tasks": [{}, {"timeout": math.nan}]}, what="f.toml")
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested more than 64 levels deep"):
        jsonstrict.check_value({"a": deep}, what="f.toml")
    with pytest.raises(InvalidInput, match=r"f.toml: a\[1\].d is out of range \(it overflows to infinity\)"):
        jsonstrict.check_value({"a": [1, {"d": 10**400}]}, what="f.toml")
    jsonstrict.check_value({"a": [1.5, {"b": "c"}], "d": 10**300}, what="f.toml")


# --------------------------------------------------------------------------- --context

@pytest.fixture
def lane(migrated):
    conn = seed.connect(migrated)
    seed.seed_list(conn)
    seed.seed_run(conn)
    conn.close()
    return migrated


@pytest.mark.parametrize("case", ["nan", "overflow", "duplicate_key", "deep_arrays", "huge_integer"])
def test_log_add_refuses_a_context_that_is_not_strict_json_and_writes_nothing(cli, lane, case):
    text, reason = REFUSED[case]
    before = snapshot(lane)
    r = cli("log", "add", "ex_seed", "task_failed", "boom", "--task", "T-001", "--context", text)
    assert_refused(r, exitcodes.INVALID_INPUT, f"--context is not valid JSON: {reason}")
    assert snapshot(lane) == before


def test_parse_context_checks_a_given_dict_too():
    assert execlog.parse_context('{"error": "x", "n": 1.5}') == {"error": "x", "n": 1.5}
    with pytest.raises(InvalidInput, match="--context is not valid JSON: NaN is not allowed"):
        execlog.parse_context('{"error": NaN}')
    with pytest.raises(InvalidInput, match="--context: error is nan; only finite numbers"):
        execlog.parse_context({"error": math.nan})


def test_contexts_stored_are_strict_json(db, lane):
    with pytest.raises(InvalidInput, match="the log context cannot be written as JSON"):
        with db.write():  # domain code's own contexts go through the same strict dumps
            execlog.append(db, "ex_seed", "info", "m", context={"duration_s": math.inf})
    assert db.scalar("SELECT COUNT(*) FROM task_execution_log") == 0
    event = execlog.add(db, "ex_seed", "info", "m", context_json='{"b": "é", "a": [1e308, -0.5]}')
    stored = db.scalar("SELECT context FROM task_execution_log WHERE id = ?", (event,))
    assert stored == '{"a": [1e+308, -0.5], "b": "é"}'


# --------------------------------------------------------------------------- --config

WEEK_MS = 604_800_000

CONFIG_REFUSED = [
    ('{"maxRetries": 101}', "--config maxRetries must be an integer between 0 and 100, not 101"),
    ('{"maxRetries": -1}', "--config maxRetries must be an integer between 0 and 100, not -1"),
    ('{"maxRetries": 99999999999999999999}', "between 0 and 100, not 99999999999999999999"),
    ('{"maxRetries": 1e999}', "--config is not valid JSON: the number '1e999' is out of range"),
    ('{"maxRetries": NaN}', "--config is not valid JSON: NaN is not allowed"),
    ('{"maxRetries": 2.5}', "--config maxRetries must be an integer between 0 and 100, not 2.5"),
    ('{"maxRetries": 1, "maxRetries": 2}', "--config is not valid JSON: the key 'maxRetries' appears twice"),
    ('{"heartbeatIntervalMs": 0}', f"--config heartbeatIntervalMs must be an integer between 1 and {WEEK_MS}, not 0"),
    (f'{{"taskTimeoutMs": {WEEK_MS + 1}}}', f"taskTimeoutMs must be an integer between 1 and {WEEK_MS}"),
    ('{"validationTimeoutMs": 0}', f"validationTimeoutMs must be an integer between 1 and {WEEK_MS}"),
    ('{"staleAfterMs": 0}', f"staleAfterMs must be an integer between 1 and {WEEK_MS}"),
    (f'{{"killGraceMs": {WEEK_MS * 10}}}', f"killGraceMs must be an integer between 0 and {WEEK_MS}"),
    (f'{{"retryBackoffMs": [1000, {WEEK_MS + 1}]}}',
     f"--config retryBackoffMs must be a list of 1 to 100 integers between 0 and {WEEK_MS}"),
    ('{"retryBackoffMs": []}', "retryBackoffMs must be a list of 1 to 100 integers"),
    ('{"retryBackoffMs": [' + ", ".join(["1"] * 101) + "]}", "retryBackoffMs must be a list of 1 to 100 integers"),
    ('{"colour": 1}', "unknown --config key 'colour'"),
    ("[" * 70 + "]" * 70, "--config is not valid JSON: nested more than 64 levels deep"),
]


@pytest.mark.parametrize("text,message", CONFIG_REFUSED)
def test_parse_config_refuses_out_of_range_values_naming_the_range(text, message):
    with pytest.raises(InvalidInput) as info:
        agentstate.parse_config(text)
    assert message in str(info.value)


def test_parse_config_accepts_the_ends_of_every_range():
    given = {"maxRetries": 100, "heartbeatIntervalMs": 1, "taskTimeoutMs": WEEK_MS, "validationTimeoutMs": WEEK_MS,
             "killGraceMs": 0, "staleAfterMs": 1, "retryBackoffMs": [0] * 99 + [WEEK_MS]}
    assert agentstate.parse_config(json.dumps(given)) == given
    assert set(agentstate.CONFIG_RANGES) == set(agentstate.DEFAULT_CONFIG) | set(agentstate.WORKER_CONFIG)


def test_agent_spawn_refuses_a_config_out_of_range_and_writes_nothing(cli, lane):
    before = snapshot(lane)
    r = cli("agent", "spawn", "ex_seed", "--config", '{"maxRetries": 1e999}')
    assert_refused(r, exitcodes.INVALID_INPUT, "--config is not valid JSON: the number '1e999' is out of range")
    r = cli("agent", "spawn", "ex_seed", "--config", '{"taskTimeoutMs": 99999999999999999999999}')
    assert_refused(r, exitcodes.INVALID_INPUT, f"--config taskTimeoutMs must be an integer between 1 and {WEEK_MS}")
    assert snapshot(lane) == before


# --------------------------------------------------------------------------- task-list files

def _toml(top: str = "", task: str = "", files: str = "") -> str:
    return (f'name = "x"\n{top}\n[[tasks]]\nid = "A"\ntitle = "a"\ncommand = "true"\n{task}\n'
            + (f"[[tasks.files]]\npath = \"a.py\"\nop = \"READ\"\n{files}\n" if files else ""))


TOML_REFUSED = {
    "max_parallel_huge": (_toml(top="max_parallel_agents = 99999999999999999999999"),
                          "top level: 'max_parallel_agents' must be an integer between 1 and 10000, "
                          "not 99999999999999999999999"),
    "max_parallel_10001": (_toml(top="max_parallel_agents = 10001"), "must be an integer between 1 and 10000, not 10001"),
    "timeout_inf": (_toml(task="timeout = inf"), "tasks[0].timeout is inf; only finite numbers are allowed"),
    "timeout_minus_inf": (_toml(task="timeout = -inf"), "tasks[0].timeout is -inf; only finite numbers are allowed"),
    "timeout_nan": (_toml(task="timeout = nan"), "tasks[0].timeout is nan; only finite numbers are allowed"),
    "timeout_1e999": (_toml(task="timeout = 1e999"), "tasks[0].timeout is inf; only finite numbers are allowed"),
    "timeout_too_long": (_toml(task="timeout = 604801"), "task A (tasks[0]): invalid timeout 604801: must be at most 7d"),
    "timeout_string_too_long": (_toml(task='timeout = "8d"'), "task A (tasks[0]): invalid timeout '8d': must be at most 7d"),
    "confidence_nan": (_toml(files="confidence = nan"), "tasks[0].files[0].confidence is nan"),
    "confidence_huge": (_toml(files="confidence = 1e300"), "task A (tasks[0]) files[0]: confidence 1e+300 is outside 0..1"),
    "deep_array": (_toml(task="x = " + DEEP), "invalid TOML: nested more than 64 levels deep"),
    "deep_inline_tables": (_toml(task="x = " + "{a = " * 3000 + "1" + "}" * 3000),
                           "invalid TOML: nested more than 64 levels deep"),
    "deep_array_under_the_limit_of_python": (_toml(task="x = " + "[" * 100 + "]" * 100),
                                             "tasks[0].x[0][0][0][0][0][0][0][0][0][0]… is nested more than 64 levels deep"),
    "deep_table_headers": (_toml() + "[" + ".".join(["t"] * 70) + "]\n", "is nested more than 64 levels deep"),
}


@pytest.mark.parametrize("case", sorted(TOML_REFUSED))
def test_toml_files_with_numbers_out_of_range_or_deep_nesting_are_refused(case, tmp_path):
    text, message = TOML_REFUSED[case]
    f = tmp_path / "list.toml"
    f.write_text(text)
    with pytest.raises(InvalidInput) as info:
        tasklists.load_file(f)
    assert str(info.value).startswith(f"{f}: "), str(info.value)
    assert message in str(info.value), str(info.value)


JSON_REFUSED = {
    "nan_timeout": ('{"name": "x", "tasks": [{"id": "A", "title": "a", "command": "true", "timeout": NaN}]}',
                    "is not valid JSON: NaN is not allowed"),
    "overflow_timeout": ('{"name": "x", "tasks": [{"id": "A", "title": "a", "command": "true", "timeout": 1e999}]}',
                         "is not valid JSON: the number '1e999' is out of range"),
    "duplicate_key": ('{"name": "x", "name": "y", "tasks": []}', "is not valid JSON: the key 'name' appears twice"),
    "deep": ('{"name": "x", "tasks": ' + DEEP + "}", "is not valid JSON: nested more than 64 levels deep"),
    "max_parallel_huge": ('{"name": "x", "max_parallel_agents": 99999999999999999999999, '
                          '"tasks": [{"id": "A", "title": "a", "command": "true"}]}',
                          "top level: 'max_parallel_agents' must be an integer between 1 and 10000"),
}


@pytest.mark.parametrize("case", sorted(JSON_REFUSED))
def test_json_files_are_strict_and_bounded(case, tmp_path):
    text, message = JSON_REFUSED[case]
    f = tmp_path / "list.json"
    f.write_text(text)
    with pytest.raises(InvalidInput) as info:
        tasklists.load_file(f)
    assert str(info.value).startswith(f"{f}"), str(info.value)
    assert message in str(info.value), str(info.value)


def test_tasks_import_refuses_numbers_out_of_range_with_exit_3(cli, migrated, tmp_path):
    """`max_parallel_agents = 99999999999999999999999` was exit 70 (the INSERT overflowed)."""
    before = snapshot(migrated)
    for case in ("max_parallel_huge", "timeout_inf", "timeout_nan", "deep_array"):
        text, message = TOML_REFUSED[case]
        f = tmp_path / f"{case}.toml"
        f.write_text(text)
        assert_refused(cli("tasks", "import", f), exitcodes.INVALID_INPUT, message)
    assert snapshot(migrated) == before


def test_the_ends_of_the_task_file_ranges_are_accepted(tmp_path):
    f = tmp_path / "ok.toml"
    f.write_text(_toml(top="max_parallel_agents = 10000", task='timeout = "7d"', files="confidence = 1.0"))
    spec = tasklists.load_file(f)
    assert spec.max_parallel_agents == 10000 and spec.tasks[0].timeout_s == 7 * 86400


# --------------------------------------------------------------------------- durations

@pytest.mark.parametrize("value,message", [
    (math.inf, "invalid duration inf: must be at most 3650d"),
    (math.nan, "invalid duration nan: not a number"),
    (10**400, "invalid duration an integer of 401 digits: must be at most 3650d"),
    ("9" * 400, "must be at most 3650d"),
    ("9" * 400 + "d", "must be at most 3650d"),
    ("3651d", "invalid duration '3651d': must be at most 3650d"),
    ("inf", "use a number with a unit"),
    ("1e999", "use a number with a unit"),
    (-1, "must not be negative"),
])
def test_durations_refuse_non_finite_and_absurd_values_naming_the_range(value, message):
    with pytest.raises(UsageError) as info:
        durations.parse(value)
    assert message in str(info.value) and info.value.exit_code == exitcodes.USAGE


def test_durations_accept_up_to_the_maximum():
    assert durations.parse("3650d") == durations.MAX_SECONDS
    assert durations.parse(3) == 3.0 and durations.parse("1h30m") == 5400.0
    assert durations.parse("7d", maximum=7 * 86400) == 604800.0
    with pytest.raises(UsageError, match="must be at most 7d"):
        durations.parse("7d1s", maximum=7 * 86400)


def test_duration_options_out_of_range_are_usage_errors(cli, lane):
    before = snapshot(lane)
    assert_refused(cli("agent", "stale", "--threshold", "9" * 400 + "s"), exitcodes.USAGE, "must be at most 3650d")
    assert_refused(cli("gc", "--keep-logs", "99999d"), exitcodes.USAGE, "must be at most 3650d")
    assert_refused(cli("log", "tail", "ex_seed", "--since", "4000d"), exitcodes.USAGE, "must be at most 3650d")
    assert snapshot(lane) == before
