"""`buildctl run start|list|show|pause|resume|cancel` and `buildctl waves`."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from buildctl import assignments, exitcodes, runs, tasklists
from buildctl.errors import Conflict
from conftest import assert_refused, buildctl_executable, snapshot
from runhelpers import FIVE_TASKS, add_agent, task, waves_of, write_list  # noqa: F401

pytestmark = pytest.mark.engines


def drive(db, execution_id, fail=()):
    """Run every task to its end in-process (the worker is another issue): fail the display ids in ``fail`` for good."""
    agent = f"ag_drive_{execution_id}"
    if not db.scalar("SELECT 1 FROM build_agent_instances WHERE instance_id = ?", (agent,)):
        add_agent(db, execution_id, agent)
    while True:
        c = assignments.claim_next(db, execution_id, agent, start=True)
        if c is None:
            assert assignments.run_state(db, execution_id) == "done"
            return
        if c["display_id"] in fail:
            assignments.fail(db, c["assignment_id"], error="boom", max_retries=0)
        else:
            assignments.complete(db, c["assignment_id"])


def test_run_start_prints_only_the_id_and_plans_the_five_task_waves(cli, migrated, db):
    list_id = tasklists.import_file(db, FIVE_TASKS)["id"]
    r = cli("run", "start", list_id[:7], check=True)
    ex = r.out
    assert r.stdout == ex + "\n" and ex.startswith("ex_")
    assert "3 waves" in r.stderr
    assert waves_of(db, ex) == [["T-001", "T-002"], ["T-003", "T-004"], ["T-005"]]
    run = db.one("SELECT * FROM task_list_execution_runs WHERE execution_id = ?", (ex,))
    assert (run["run_number"], run["status"], run["triggered_by"], run["total_tasks"]) == (1, "pending", "user", 5)
    assert [w["task_count"] for w in db.query("SELECT task_count FROM parallel_execution_waves WHERE execution_id = ? "
                                              "ORDER BY wave_number", (ex,))] == [2, 2, 1]
    assert db.scalar("SELECT COUNT(*) FROM wave_task_assignments WHERE status = 'pending'") == 5
    assert db.scalar("SELECT status FROM task_lists_v2 WHERE id = ?", (list_id,)) == "in_progress"
    info = db.one("SELECT * FROM task_execution_log WHERE execution_id = ?", (ex,))
    assert info["event_type"] == "info" and "planned" in info["message"]


def test_file_conflicts_split_waves_only_above_the_threshold(cli, migrated, db, tmp_path):
    def two_updates(conf, name):
        return write_list(tmp_path / f"{name}.json", [
            task("T-001", files=[{"path": "src/app.py", "op": "UPDATE", "confidence": conf}]),
            task("T-002", files=[{"path": "src/app.py", "op": "UPDATE", "confidence": conf}]),
        ], name=name)

    ex_high = cli("run", "start", two_updates(0.9, "high"), check=True).out
    assert waves_of(db, ex_high) == [["T-001"], ["T-002"]]
    pair = db.one("SELECT * FROM parallelism_analysis")
    assert pair["task_a_id"] < pair["task_b_id"] and pair["can_parallel"] == 0 and pair["conflict_type"] == "file_conflict"
    details = json.loads(pair["conflict_details"])
    assert details["path"] == "src/app.py" and details["operations"] == ["UPDATE", "UPDATE"]
    assert details["later_in_file"] == "T-002" and details["threshold"] == 0.6

    ex_low = runs.start_run(db, str(two_updates(0.5, "low")))["execution_id"]
    assert waves_of(db, ex_low) == [["T-001", "T-002"]]
    # The threshold is an option.
    runs.cancel(db, ex_low)
    ex_strict = cli("run", "start", "low", "--conflict-threshold", "0.5", "--triggered-by", "retry", check=True).out
    assert waves_of(db, ex_strict) == [["T-001"], ["T-002"]]
    assert db.scalar("SELECT triggered_by FROM task_list_execution_runs WHERE execution_id = ?", (ex_strict,)) == "retry"
    assert db.scalar("SELECT COUNT(*) FROM parallelism_analysis") == 2
    assert_refused(cli("run", "start", "low", "--conflict-threshold", "1.5"), exitcodes.USAGE)
    assert_refused(cli("run", "start", "low", "--triggered-by", "cron"), exitcodes.USAGE)


def test_run_numbers_continue_and_a_second_run_plans_only_unfinished_tasks(cli, migrated, db):
    ex1 = cli("run", "start", FIVE_TASKS, check=True).out  # imports the file first
    assert db.scalar("SELECT COUNT(*) FROM task_lists_v2") == 1
    drive(db, ex1, fail={"T-001"})
    assert db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex1,)) == "failed"
    # The unchanged file is recognised: same list, run #2, only T-001, T-003, T-005 planned.
    r = cli("run", "start", FIVE_TASKS, check=True)
    ex2 = r.out
    assert db.scalar("SELECT COUNT(*) FROM task_lists_v2") == 1
    assert db.scalar("SELECT run_number FROM task_list_execution_runs WHERE execution_id = ?", (ex2,)) == 2
    assert waves_of(db, ex2) == [["T-001"], ["T-003"], ["T-005"]]
    assert db.scalar("SELECT total_tasks FROM task_list_execution_runs WHERE execution_id = ?", (ex2,)) == 3
    statuses = {r["display_id"]: r["status"] for r in db.query("SELECT display_id, status FROM tasks")}
    assert statuses == {"T-001": "pending", "T-002": "completed", "T-003": "pending", "T-004": "completed",
                        "T-005": "pending"}
    drive(db, ex2)
    assert db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex2,)) == "completed"
    assert db.scalar("SELECT status FROM task_lists_v2") == "completed"
    # Nothing left to run: refused, nothing written.
    before = snapshot(migrated)
    assert_refused(cli("run", "start", "five-tasks"), exitcodes.CONFLICT, "nothing to run")
    assert snapshot(migrated) == before


def test_refusals_of_run_start_write_nothing(cli, migrated, db, tmp_path):
    ex = runs.start_run(db, str(FIVE_TASKS))["execution_id"]
    before = snapshot(migrated)
    assert_refused(cli("run", "start", "five-tasks"), exitcodes.CONFLICT, f"already has an active run: {ex}")
    assert_refused(cli("run", "start", "tl_nothing"), exitcodes.NOT_FOUND, "no task list matches")
    assert_refused(cli("run", "start", tmp_path / "missing.toml"), exitcodes.USAGE, "no such task-list file")
    bad = write_list(tmp_path / "bad.json", [task("A", deps=["B"]), task("B", deps=["A"])])
    assert_refused(cli("run", "start", bad), exitcodes.INVALID_INPUT, "dependency cycle A -> B -> A")
    assert snapshot(migrated) == before


def test_run_list_filters_and_show(cli, migrated, db, tmp_path):
    ex1 = runs.start_run(db, str(FIVE_TASKS))["execution_id"]
    other = write_list(tmp_path / "other.json", [task("A")], name="other")
    ex2 = runs.start_run(db, str(other))["execution_id"]
    drive(db, ex2)
    rows = json.loads(cli("run", "list", "--json", check=True).stdout)
    assert [r["execution_id"] for r in rows] == [ex1, ex2]
    assert json.loads(cli("run", "list", "--status", "completed", "--json", check=True).stdout)[0]["execution_id"] == ex2
    table = cli("run", "list", "--list", "five-tasks", check=True).stdout
    assert ex1 in table and "five-tasks" in table and ex2 not in table
    assert [r["execution_id"] for r in runs.list_runs(db, list_ref="other", status="completed")] == [ex2]
    assert runs.list_runs(db, list_ref="other", status="failed") == []
    assert_refused(cli("run", "list", "--status", "sleeping"), exitcodes.USAGE)

    shown = json.loads(cli("run", "show", ex2[:8], "--json", check=True).stdout)
    assert (shown["status"], shown["total_tasks"], shown["completed_tasks"]) == ("completed", 1, 1)
    assert shown["waves"][0]["tasks"][0]["display_id"] == "A" and shown["completed_at"].endswith("Z")
    text = cli("run", "show", ex1, check=True).stdout
    assert "5 total" in text and "T-001 T-002" in text
    assert_refused(cli("run", "show", "ex_nope"), exitcodes.NOT_FOUND, "no execution matches 'ex_nope'")


def test_lifecycle_transitions_and_illegal_ones_refused(cli, migrated, db):
    ex = runs.start_run(db, str(FIVE_TASKS))["execution_id"]
    status = lambda: db.scalar("SELECT status FROM task_list_execution_runs WHERE execution_id = ?", (ex,))  # noqa: E731

    before = snapshot(migrated)
    assert_refused(cli("run", "resume", ex), exitcodes.CONFLICT, "only a paused run can be resumed")
    assert snapshot(migrated) == before

    assert cli("run", "pause", ex, check=True).stdout == ""
    assert status() == "paused"
    before = snapshot(migrated)
    with pytest.raises(Conflict, match="it is paused"):
        runs.pause(db, ex)
    assert snapshot(migrated) == before
    cli("run", "resume", ex, check=True)
    assert status() == "pending"  # nothing was handed out yet

    ag = add_agent(db, ex, "ag_life")
    assignments.claim_next(db, ex, ag, start=True)
    r = cli("run", "cancel", ex, check=True)
    assert "4 pending tasks skipped" in r.stderr and "T-001" in r.stderr
    run = db.one("SELECT * FROM task_list_execution_runs WHERE execution_id = ?", (ex,))
    assert (run["status"], run["skipped_tasks"], run["completed_tasks"]) == ("cancelled", 4, 0)
    assert run["completed_at"]
    assert {w["status"] for w in db.query("SELECT status FROM parallel_execution_waves")} == {"cancelled"}
    assert db.scalar("SELECT COUNT(*) FROM task_execution_log WHERE event_type = 'task_skipped'") == 4
    assert assignments.recount(db, ex)["ok"]

    before = snapshot(migrated)
    assert_refused(cli("run", "cancel", ex), exitcodes.CONFLICT, "already cancelled")
    with pytest.raises(Conflict, match="it is cancelled"):
        runs.resume(db, ex)
    with pytest.raises(Conflict, match="it is cancelled"):
        runs.pause(db, ex)
    assert snapshot(migrated) == before


def test_completed_runs_refuse_resume_and_cancel(cli, migrated, db, tmp_path):
    f = write_list(tmp_path / "one.json", [task("A")])
    ex = runs.start_run(db, str(f))["execution_id"]
    drive(db, ex)
    before = snapshot(migrated)
    assert_refused(cli("run", "resume", ex), exitcodes.CONFLICT, "it is completed")
    with pytest.raises(Conflict, match=r"it has ended \(completed\)"):
        runs.cancel(db, ex)
    with pytest.raises(Conflict, match="it is completed"):
        runs.pause(db, ex)
    assert snapshot(migrated) == before


def test_waves_table_json_and_watch_of_an_ended_run(cli, migrated, db):
    ex = runs.start_run(db, str(FIVE_TASKS))["execution_id"]
    drive(db, ex, fail={"T-001"})
    data = json.loads(cli("waves", ex, "--json", check=True).stdout)
    assert data["status"] == "failed"
    assert [(w["wave_number"], w["status"], w["task_count"], w["completed_count"], w["failed_count"])
            for w in data["waves"]] == [(1, "failed", 2, 1, 1), (2, "completed", 2, 1, 0), (3, "completed", 1, 0, 0)]
    table = cli("waves", ex, check=True).stdout
    assert "failed" in table and "50%" in table and "100%" in table
    assert "wave" in table and "progress" in table and "agents" in table
    # --watch on a run that has ended draws once and exits 0.
    w = cli("waves", ex, "--watch", "--interval", "100ms", timeout=30)
    assert w.returncode == 0 and "completed" in w.stdout
    assert_refused(cli("waves", ex, "--interval", "soon"), exitcodes.USAGE, "invalid --interval")


def test_waves_watch_follows_a_run_to_its_end_and_ctrl_c_exits_cleanly(migrated, db, env, tmp_path):
    f = write_list(tmp_path / "l.json", [task("A"), task("B", deps=["A"])])
    ex = runs.start_run(db, str(f))["execution_id"]
    cmd = buildctl_executable() + ["waves", ex, "--watch", "--json", "--interval", "50ms"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(p.stdout.readline())
    assert first["status"] == "pending"
    drive(db, ex)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["status"] == "completed" and [w["status"] for w in last["waves"]] == ["completed", "completed"]

    # Ctrl-C while watching a live run: a clean exit 0, no traceback.
    ex2 = runs.start_run(db, str(write_list(tmp_path / "m.json", [task("X")], name="m")))["execution_id"]
    p = subprocess.Popen(buildctl_executable() + ["waves", ex2, "--watch", "--json", "--interval", "50ms"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline())["status"] == "pending"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "Traceback" not in err


def test_every_command_and_option_has_help_text(cli):
    import typer

    from buildctl.cli.typer_app import app

    root = typer.main.get_command(app)
    mine = {"tasks": root.commands["tasks"], "run": root.commands["run"]}
    commands = [("waves", root.commands["waves"])]
    for group, cmd in mine.items():
        assert cmd.help
        commands += [(f"{group} {name}", sub) for name, sub in cmd.commands.items() if name != "exec"]
    assert {"tasks import", "tasks list", "tasks show", "run start", "run list", "run show", "run pause",
            "run resume", "run cancel", "waves"} <= {name for name, _ in commands}
    for name, cmd in commands:
        assert cmd.help, name
        for param in cmd.params:
            assert getattr(param, "help", None), (name, param.name)
    r = cli("run", "start", "--help", check=True)
    assert "--triggered-by" in r.stdout and "--conflict-threshold" in r.stdout
