"""Every read command in an 80-column terminal: no id, status or timestamp split across lines.

Tables leave out their least useful columns first (as `gh` does) and fold free text; the
ids (`ex_…`, `ag_…`), statuses and timestamps stay whole.
"""

from __future__ import annotations

import re

import pytest

from buildctl import states
from runhelpers import task, write_list

pytestmark = pytest.mark.engines

ID = re.compile(r"\b(?:ex|ag|tl|cp|tk|wv)_[0-9a-f]*")
DATE = re.compile(r"\d{4}-\d\d-\d\d")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
STATUS_WORDS = set(states.RUN_STATUSES + states.AGENT_STATUSES + states.ASSIGNMENT_STATUSES + states.TASK_STATUSES
                   + states.LIST_STATUSES + states.WAVE_STATUSES + states.EVENT_TYPES)
BOX = str.maketrans({c: " " for c in "│┃┏┓┗┛┡┩┳┻╇╋━─┴┬┼└┘┌┐├┤╭╮╯╰|:,()[]"})


def split_words(text: str) -> list[str]:
    """Everything in ``text`` that is the broken half of an id, a status or a timestamp."""
    problems = []
    for m in ID.finditer(text):
        if len(m.group()) != 15:  # ex_ + 12 hex digits
            problems.append(m.group())
    if len(DATE.findall(text)) != len(TIMESTAMP.findall(text)):
        problems.append("a date without its time")
    words = set(text.translate(BOX).split())
    for word in words - STATUS_WORDS:
        for status in STATUS_WORDS:
            # "complete" on one line and "d" on the next: both halves are there.
            if len(word) >= 2 and status.startswith(word) and status != word and status[len(word):] in words:
                problems.append(f"{word}|{status[len(word):]}")
    return problems


@pytest.fixture
def busy_run(cli, migrated, tmp_path):
    """A finished run with a completed diamond, a task that failed three times and its skipped dependent."""
    path = write_list(tmp_path / "l.json", [
        task("T-001"), task("T-002", deps=["T-001"]), task("T-003", deps=["T-001"]),
        task("T-004", deps=["T-002", "T-003"]),
        {**task("T-005"), "command": "echo 'the deploy key was rejected by the remote host' >&2; exit 3"},
        task("T-006", deps=["T-005"]),
    ], name="a-list-with-a-rather-long-name", max_parallel_agents=2)
    ex = cli("run", "start", path, check=True).out
    r = cli("run", "exec", ex, "--jobs", "2", "--config", '{"maxRetries": 2, "retryBackoffMs": [0]}', cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    agent = cli("agent", "list", ex, "--json", check=True).stdout
    return ex, re.search(r'"instance_id": "(ag_[0-9a-f]+)"', agent).group(1)


def read_commands(ex: str, agent: str) -> list[list[str]]:
    return [
        ["waves", ex], ["run", "show", ex], ["run", "list"], ["run", "timeline", ex],
        ["run", "timeline", ex, "--by", "agent"], ["tasks", "list"], ["tasks", "show", "a-list-with-a-rather-long-name"],
        ["agent", "list"], ["agent", "list", ex], ["agent", "show", agent], ["agent", "stale", "--threshold", "0s"],
        ["log", "tail", ex], ["log", "failures", ex, "--min", "1"], ["checkpoint", "list", ex], ["gc", "--dry-run"],
        ["doctor"], ["migrate", "--status"],
    ]


def test_every_read_command_fits_80_columns_without_splitting_ids_or_statuses(cli, busy_run):
    ex, agent = busy_run
    seen_ids = 0
    for argv in read_commands(ex, agent):
        r = cli(*argv, extra_env={"COLUMNS": "80"})
        assert r.returncode in (0, 1), (argv, r.stderr)
        text = r.stdout
        if argv[0] != "log":  # log lines are one event each, as long as the event (never wrapped by us)
            too_wide = [line for line in text.splitlines() if len(line) > 80]
            assert not too_wide, (argv, too_wide)
        assert split_words(text) == [], (argv, text)
        seen_ids += len(ID.findall(text))
    assert seen_ids > 20  # the commands did print ids


def test_the_checker_catches_a_split():
    assert split_words("│ ex_5e5af612 │\n│ 7058        │") == ["ex_5e5af612"]
    assert split_words("│ complete │\n│ d        │") != []
    assert split_words("│ 2026-12-01 │\n│ 14:34:35   │") != []
    assert split_words("│ ex_5e5af6127058 │ completed │ 2026-12-01 14:34:35 │") == []


def test_the_waves_table_shows_skipped_tasks(cli, busy_run):
    ex, _ = busy_run
    r = cli("waves", ex, extra_env={"COLUMNS": "120"}, check=True)
    header = next(line for line in r.stdout.splitlines() if "wave" in line and "status" in line)
    assert "skipped" in header
    data = cli("waves", ex, "--json", check=True).stdout
    assert '"skipped_count": 1' in data


def test_the_last_frame_of_run_exec_names_each_failed_task_with_its_error(cli, migrated, tmp_path):
    path = write_list(tmp_path / "f.json", [
        task("T-001"),
        {**task("T-002"), "command": "echo 'linker: undefined reference to main' >&2; exit 1"},
        {**task("T-003"), "command": "echo 'disk quota exceeded' >&2; exit 2"},
    ])
    ex = cli("run", "start", path, check=True).out
    r = cli("run", "exec", ex, "--config", '{"maxRetries": 0}', cwd=tmp_path, extra_env={"COLUMNS": "80"})
    assert r.returncode == 1
    frame = r.stdout[r.stdout.index("failed: 2"):]
    rows = {line.split("│")[1].strip(): line for line in frame.splitlines() if line.startswith("│")}
    assert "linker: undefined reference to main" in rows["T-002"]
    assert "disk quota exceeded" in rows["T-003"] and "T-001" not in rows
