"""`buildctl tasks import|list|show` and the task-list file validation."""

from __future__ import annotations

import json

import pytest

from buildctl import exitcodes, tasklists
from buildctl.errors import InvalidInput, UsageError
from conftest import assert_refused, snapshot
from runhelpers import FIVE_TASKS, task, write_list  # noqa: F401 (fixtures)

pytestmark = pytest.mark.engines

GOOD_TOML = """
name = "payments-api"
max_parallel_agents = 2
[[tasks]]
id = "T-001"
title = "Create schema"
command = "make schema"
validate = "pytest tests/test_schema.py"
timeout = "5m"
depends_on = []
files = [{ path = "db/schema.sql", op = "CREATE", confidence = 0.9 }]
[[tasks]]
id = "T-002"
title = "API"
command = "make api"
depends_on = ["T-001"]
files = [{ path = "src/api.py", op = "update", source = "ai_estimate" }]
"""


def test_import_prints_only_the_id_and_writes_every_row(cli, migrated, db):
    r = cli("tasks", "import", FIVE_TASKS, check=True)
    list_id = r.stdout.strip()
    assert r.stdout == list_id + "\n" and list_id.startswith("tl_")
    lst = db.one("SELECT * FROM task_lists_v2 WHERE id = ?", (list_id,))
    assert lst["name"] == "five-tasks" and lst["max_parallel_agents"] == 2 and lst["status"] == "ready"
    assert lst["source_file"] == str(FIVE_TASKS.resolve())
    tasks = db.query("SELECT * FROM tasks WHERE task_list_id = ? ORDER BY position", (list_id,))
    assert [t["display_id"] for t in tasks] == ["T-001", "T-002", "T-003", "T-004", "T-005"]
    assert tasks[0]["timeout_s"] == 120 and tasks[0]["validate_command"] == "true"
    assert tasks[1]["validate_command"] is None and tasks[2]["timeout_s"] == 300
    display = {t["id"]: t["display_id"] for t in tasks}
    rels = {(display[r["source_task_id"]], display[r["target_task_id"]])
            for r in db.query("SELECT * FROM task_relationships WHERE relationship_type = 'depends_on'")}
    assert rels == {("T-003", "T-001"), ("T-003", "T-002"), ("T-004", "T-002"), ("T-005", "T-003"), ("T-005", "T-004")}
    impacts = db.query("SELECT task_id, file_path, operation, confidence, source FROM task_file_impacts ORDER BY id")
    assert len(impacts) == 9
    assert (display[impacts[0]["task_id"]], impacts[0]["file_path"], impacts[0]["operation"], impacts[0]["confidence"]) == \
        ("T-001", "db/schema.sql", "CREATE", 0.9)


def test_toml_defaults_and_a_json_file_import_alike(cli, migrated, db, tmp_path):
    f = tmp_path / "payments.toml"
    f.write_text(GOOD_TOML)
    r = cli("tasks", "import", f, "--json", check=True)
    data = json.loads(r.stdout)
    assert data["name"] == "payments-api" and data["task_count"] == 2
    t2 = db.one("SELECT * FROM tasks WHERE task_list_id = ? AND display_id = 'T-002'", (data["id"],))
    assert t2["timeout_s"] == 300  # the default
    imp = db.one("SELECT * FROM task_file_impacts WHERE task_id = ?", (t2["id"],))
    assert (imp["operation"], imp["confidence"], imp["source"]) == ("UPDATE", 0.5, "ai_estimate")

    j = write_list(tmp_path / "list.json", [task("A"), task("B", deps=["A"], timeout=90)], name="json-list")
    list_id = cli("tasks", "import", j, check=True).out
    b = db.one("SELECT * FROM tasks WHERE task_list_id = ? AND display_id = 'B'", (list_id,))
    assert b["timeout_s"] == 90


def test_list_and_show(cli, migrated, db):
    list_id = tasklists.import_file(db, FIVE_TASKS)["id"]
    rows = json.loads(cli("tasks", "list", "--json", check=True).stdout)
    assert [(r["id"], r["name"], r["task_count"], r["run_count"]) for r in rows] == [(list_id, "five-tasks", 5, 0)]
    assert rows[0]["created_at"].endswith("Z") and "T" in rows[0]["created_at"]
    shown = json.loads(cli("tasks", "show", list_id[:6], "--json", check=True).stdout)
    by = {t["display_id"]: t for t in shown["tasks"]}
    assert by["T-005"]["depends_on"] == ["T-003", "T-004"]
    assert by["T-003"]["files"][0] == {"path": "src/api.ts", "op": "CREATE", "confidence": 0.9, "source": "user_declared"}
    # By name too, and as a table.
    table = cli("tasks", "show", "five-tasks", check=True)
    assert "T-005" in table.stdout and "T-003, T-004" in table.stdout
    assert "five-tasks" in cli("tasks", "list", check=True).stdout


def test_show_unknown_and_ambiguous_lists_are_refused(cli, migrated, db):
    tasklists.import_file(db, FIVE_TASKS)
    assert_refused(cli("tasks", "show", "tl_nope"), exitcodes.NOT_FOUND, "no task list matches 'tl_nope'")
    tasklists.import_file(db, FIVE_TASKS)
    assert_refused(cli("tasks", "show", "five-tasks"), exitcodes.USAGE, "ambiguous")


# ----------------------------------------------------------------------------- refusals

BAD = {
    "unknown_top_key": ({"name": "x", "tasks": [task("A")], "colour": "red"}, "top level: unknown key 'colour'"),
    "unknown_task_key": ({"name": "x", "tasks": [task("A", dependz=["B"])]}, "task A (tasks[0]): unknown key 'dependz'"),
    "unknown_file_key": ({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ", "mode": 1}])]},
                         "task A (tasks[0]) files[0]: unknown key 'mode'"),
    "duplicate_id": ({"name": "x", "tasks": [task("A"), task("B"), task("A")]}, "task A (tasks[2]): duplicate id 'A'"),
    "unknown_dependency": ({"name": "x", "tasks": [task("A"), task("B", deps=["Z"])]},
                           "task B (tasks[1]): depends on unknown task 'Z'"),
    "cycle": ({"name": "x", "tasks": [task("T-001"), task("T-003", deps=["T-007"]), task("T-007", deps=["T-003"])]},
              "dependency cycle T-003 -> T-007 -> T-003"),
    "long_cycle": ({"name": "x", "tasks": [task("A", deps=["C"]), task("B", deps=["A"]), task("C", deps=["B"])]},
                   "dependency cycle A -> C -> B -> A"),
    "self_dependency": ({"name": "x", "tasks": [task("A", deps=["A"])]}, "depends on itself"),
    "bad_operation": ({"name": "x", "tasks": [task("A", files=[{"path": "a.py", "op": "RENAME"}])]},
                      "task A (tasks[0]) files[0]: bad operation 'RENAME'"),
    "confidence_above_1": ({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ", "confidence": 1.5}])]},
                           "confidence 1.5 is outside 0..1"),
    "confidence_below_0": ({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ", "confidence": -0.1}])]},
                           "confidence -0.1 is outside 0..1"),
    "confidence_string": ({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ", "confidence": "high"}])]},
                          "'confidence' must be a number"),
    "bad_source": ({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ", "source": "guess"}])]},
                   "bad source 'guess'"),
    "duplicate_impact": ({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ"}, {"path": "a", "op": "read"}])]},
                         "duplicate impact READ 'a'"),
    "missing_command": ({"name": "x", "tasks": [{"id": "A", "title": "t"}]}, "task A (tasks[0]): missing 'command'"),
    "empty_command": ({"name": "x", "tasks": [{"id": "A", "title": "t", "command": "  "}]}, "'command' must be a non-empty string"),
    "missing_title": ({"name": "x", "tasks": [{"id": "A", "command": "true"}]}, "task A (tasks[0]): missing 'title'"),
    "missing_id": ({"name": "x", "tasks": [task("A"), {"title": "t", "command": "true"}]}, "tasks[1]: missing 'id'"),
    "id_not_string": ({"name": "x", "tasks": [{"id": 7, "title": "t", "command": "true"}]}, "'id' must be a non-empty string, not an integer"),
    "depends_on_string": ({"name": "x", "tasks": [task("A"), {**task("B"), "depends_on": "A"}]},
                          "'depends_on' must be a list of task ids, not a string"),
    "files_not_list": ({"name": "x", "tasks": [{**task("A"), "files": "a.py"}]}, "'files' must be a list"),
    "bad_timeout": ({"name": "x", "tasks": [task("A", timeout="5 parsecs")]}, "task A (tasks[0]): invalid timeout"),
    "zero_timeout": ({"name": "x", "tasks": [task("A", timeout="0s")]}, "'timeout' must be greater than 0 and at most 7d"),
    "week_plus_timeout": ({"name": "x", "tasks": [task("A", timeout="8d")]},
                          "task A (tasks[0]): invalid timeout '8d': must be at most 7d"),
    "huge_timeout": ({"name": "x", "tasks": [task("A", timeout=1e300)]}, "task A (tasks[0]): invalid timeout 1e+300"),
    "huge_digit_timeout": ({"name": "x", "tasks": [task("A", timeout="9" * 400 + "s")]},
                           "999…: must be at most 7d"),
    "bool_timeout": ({"name": "x", "tasks": [task("A", timeout=True)]}, "'timeout' must be a duration"),
    "max_parallel_zero": ({"name": "x", "max_parallel_agents": 0, "tasks": [task("A")]},
                          "'max_parallel_agents' must be an integer between 1 and 10000, not 0"),
    "max_parallel_huge": ({"name": "x", "max_parallel_agents": 99999999999999999999999, "tasks": [task("A")]},
                          "'max_parallel_agents' must be an integer between 1 and 10000, not 99999999999999999999999"),
    "missing_name": ({"tasks": [task("A")]}, "top level: missing 'name'"),
    "no_tasks": ({"name": "x", "tasks": []}, "no tasks"),
    "tasks_not_list": ({"name": "x", "tasks": {"id": "A"}}, "'tasks' must be a list of tables"),
    "top_level_list": ([task("A")], "the top level must be a table"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_naming_file_entry_and_reason_and_write_nothing(case, db, migrated, tmp_path):
    content, message = BAD[case]
    f = tmp_path / f"{case}.json"
    f.write_text(json.dumps(content))
    before = snapshot(migrated)
    with pytest.raises(InvalidInput) as info:
        tasklists.import_file(db, f)
    text = str(info.value)
    assert text.startswith(f"{f}: "), text
    assert message in text, text
    assert "\n" not in text
    assert snapshot(migrated) == before


def test_bad_files_are_refused_by_the_command(cli, migrated, db, tmp_path):
    tasklists.import_file(db, FIVE_TASKS)  # something to keep unchanged
    before = snapshot(migrated)
    for case in ("cycle", "unknown_dependency", "bad_operation"):
        content, message = BAD[case]
        f = tmp_path / f"{case}.json"
        f.write_text(json.dumps(content))
        r = cli("tasks", "import", f)
        assert_refused(r, exitcodes.INVALID_INPUT, message)
        assert str(f) in r.stderr
        assert r.stdout == ""
        assert snapshot(migrated) == before, case


def test_syntax_errors_and_missing_files(cli, migrated, tmp_path):
    before = snapshot(migrated)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('name = "x"\n[[tasks]\nid = "A"\n')
    assert_refused(cli("tasks", "import", bad_toml), exitcodes.INVALID_INPUT, f"{bad_toml}: invalid TOML")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "x", "tasks": [}')
    assert_refused(cli("tasks", "import", tmp_path / "nope.toml"), exitcodes.USAGE, "no such task-list file")
    assert snapshot(migrated) == before
    with pytest.raises(InvalidInput, match=f"{bad_json} is not valid JSON: Expecting value: line 1 column 25"):
        tasklists.load_file(bad_json)
    with pytest.raises(UsageError, match="not a file"):
        tasklists.load_file(tmp_path)


def test_toml_cycle_message_names_the_cycle_in_file_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("""
name = "c"
[[tasks]]
id = "T-001"
title = "a"
command = "true"
[[tasks]]
id = "T-003"
title = "b"
command = "true"
depends_on = ["T-001", "T-007"]
[[tasks]]
id = "T-007"
title = "c"
command = "true"
depends_on = ["T-003"]
""")
    with pytest.raises(InvalidInput) as info:
        tasklists.load_file(f)
    assert str(info.value) == f"{f}: task T-003 (tasks[1]): dependency cycle T-003 -> T-007 -> T-003"


def test_validate_refuses_booleans_as_numbers():
    with pytest.raises(InvalidInput, match="max_parallel_agents"):
        tasklists.validate({"name": "x", "max_parallel_agents": True, "tasks": [task("A")]})
    with pytest.raises(InvalidInput, match="'confidence' must be a number"):
        tasklists.validate({"name": "x", "tasks": [task("A", files=[{"path": "a", "op": "READ", "confidence": True}])]})
    with pytest.raises(UsageError):
        tasklists.load_file("/definitely/not/here.toml")
