"""The run timeline (issue 13): attempts, waves, critical path and efficiency on hand-made runs whose
answers are known, a run still going, malformed log rows, one real run, and the Gantt chart at 80 columns."""

from __future__ import annotations

import io
import json
import re

import pytest

from buildctl import render, runs, timeline
from buildctl.errors import NotFound, UsageError
from runhelpers import task, write_list
from timeline_helpers import Run, at

def path_of(data):
    return [(p["task"], p["via"]) for p in data["critical_path"]]


def row(data, name):
    return next(r for r in data["rows"] if r["task"] == name)


# --------------------------------------------------------------------------- hand-made runs with known answers

def test_a_chain_is_its_own_critical_path_with_the_claim_latency_as_a_wait(db):
    run = Run(db, [["A"], ["B"], ["C"]], deps=[("B", "A"), ("C", "B")], agents=["ag_1"])
    run.attempt("A", 0, 10, "ag_1")
    run.attempt("B", 11, 31, "ag_1")  # claimed one second after A ended
    run.attempt("C", 31, 36, "ag_1")
    data = run.build()
    s = data["summary"]
    assert (s["wall_s"], s["task_time_s"], s["capacity"], s["agents_used"]) == (36.0, 35.0, 3, 1)
    assert s["efficiency"] == round(35 / (36 * 3), 4)
    assert path_of(data) == [("A", None), ("B", "dependency"), ("C", "dependency")]
    assert [p["share"] for p in data["critical_path"]] == [round(10 / 36, 4), round(20 / 36, 4), round(5 / 36, 4)]
    assert [p["wait_s"] for p in data["critical_path"]] == [0.0, 1.0, 0.0]
    assert s["critical_path_s"] == 35.0 and s["critical_share"] == round(35 / 36, 4)
    # Two free slots while each of the first two waves finished its one task (the last wave has no barrier).
    assert [w["barrier_idle_s"] for w in data["waves"]] == [20.0, 40.0, 0.0]
    assert s["barrier_idle_s"] == 60.0
    assert (data["started_at"], data["ended_at"]) == (at(0), at(36))
    assert all(r["critical"] for r in data["rows"])


def test_a_diamond_takes_the_longer_branch(db):
    run = Run(db, [["A"], ["B", "C"], ["D"]], deps=[("B", "A"), ("C", "A"), ("D", "B"), ("D", "C")], capacity=2,
              agents=["ag_1", "ag_2"])
    run.attempt("A", 0, 4, "ag_1")
    run.attempt("B", 4, 10, "ag_1")
    run.attempt("C", 4, 6, "ag_2")
    run.attempt("D", 10, 13, "ag_2")
    data = run.build()
    s = data["summary"]
    assert path_of(data) == [("A", None), ("B", "dependency"), ("D", "dependency")]
    assert [p["share"] for p in data["critical_path"]] == [round(4 / 13, 4), round(6 / 13, 4), round(3 / 13, 4)]
    assert (s["wall_s"], s["task_time_s"]) == (13.0, 15.0)
    assert s["efficiency"] == round(15 / (13 * 2), 4)
    assert [w["barrier_idle_s"] for w in data["waves"]] == [4.0, 4.0, 0.0]
    assert not row(data, "C")["critical"] and row(data, "B")["critical"]
    assert [w["tasks"] for w in data["waves"]] == [["A"], ["B", "C"], ["D"]]


def test_a_barrier_that_idles_two_agents(db):
    run = Run(db, [["A", "B", "C"], ["D", "E", "F"]], capacity=3, agents=["ag_1", "ag_2", "ag_3"])
    run.attempt("A", 0, 10, "ag_1")
    run.attempt("B", 0, 2, "ag_2")
    run.attempt("C", 0, 2, "ag_3")
    for name, agent in (("D", "ag_1"), ("E", "ag_2"), ("F", "ag_3")):
        run.attempt(name, 10, 12, agent)
    data = run.build()
    s = data["summary"]
    # ag_2 and ag_3 wait 8 s each for A, the wave's last task.
    assert data["waves"][0]["barrier_idle_s"] == 16.0 and s["barrier_idle_s"] == 16.0
    assert (data["waves"][0]["started_at"], data["waves"][0]["ended_at"]) == (at(0), at(10))
    assert s["wall_s"] == 12.0 and s["task_time_s"] == 20.0
    assert s["efficiency"] == round(20 / 36, 4)
    assert path_of(data) == [("A", None), ("D", "barrier")]
    by_agent = run.build(by="agent")
    assert [r["agent"] for r in by_agent["rows"]] == ["ag_1", "ag_2", "ag_3"]
    assert [r["busy_s"] for r in by_agent["rows"]] == [12.0, 4.0, 4.0]
    assert by_agent["rows"][1]["tasks"] == ["B", "E"]


def test_a_task_retried_twice_in_place_is_three_segments_and_holds_its_slot_through_the_backoff(db):
    run = Run(db, [["A", "B"], ["C"]], deps=[("C", "A")], capacity=2, agents=["ag_1", "ag_2"])
    # What a worker writes: one task_started, then a task_failed per attempt retried in place
    # (with the attempt's duration), then task_completed; backoffs of 1 s and 5 s between.
    run.event("task_started", "A", 0, "ag_1", context={"attempt": 1, "wave": 1})
    run.event("task_failed", "A", 3, "ag_1", context={"attempt": 1, "exit_code": 1, "error": "boom", "duration_s": 3,
                                                      "in_place": True, "will_retry": True})
    run.event("task_failed", "A", 7, "ag_1", context={"attempt": 2, "exit_code": 1, "error": "boom", "duration_s": 3,
                                                      "in_place": True, "will_retry": True})
    run.event("task_completed", "A", 15, "ag_1", context={"attempt": 3, "exit_code": 0, "duration_s": 3})
    run.attempt("B", 0, 5, "ag_2")
    run.attempt("C", 15, 20, "ag_2")
    data = run.build()
    a = row(data, "A")
    assert [(g["attempt"], g["outcome"], g["offset_s"], g["duration_s"], g["exit_code"], g["error"])
            for g in a["segments"]] == [(1, "failed", 0.0, 3.0, 1, "boom"), (2, "failed", 4.0, 3.0, 1, "boom"),
                                        (3, "completed", 12.0, 3.0, 0, None)]
    assert (a["attempts"], a["duration_s"], a["busy_s"]) == (3, 15.0, 9.0)
    s = data["summary"]
    assert (s["attempts"], s["retries"], s["task_time_s"], s["retry_time_s"]) == (5, 2, 19.0, 6.0)
    assert s["efficiency"] == round(19 / (20 * 2), 4)
    # From B's end (5) to A's end (15) one slot is free; A's backoffs are held, not idle.
    assert data["waves"][0]["barrier_idle_s"] == 10.0
    assert path_of(data) == [("A", None), ("C", "dependency")]
    assert [p["share"] for p in data["critical_path"]] == [0.75, 0.25]


def test_an_in_place_backoff_holds_its_slot_inside_a_barrier_window(db):
    run = Run(db, [["A", "B", "C"], ["D"]], capacity=3, agents=["ag_1", "ag_2", "ag_3"])
    run.event("task_started", "A", 0, "ag_1", context={"attempt": 1})
    run.event("task_failed", "A", 3, "ag_1", context={"attempt": 1, "error": "x", "duration_s": 3, "in_place": True})
    run.event("task_completed", "A", 10, "ag_1", context={"attempt": 2, "duration_s": 2})  # backoff 3..8
    run.attempt("B", 0, 12, "ag_2")
    run.attempt("C", 4, 6, "ag_3")  # the wave's last start: the barrier window is 4..12
    run.attempt("D", 12, 13, "ag_3")
    data = run.build()
    # Free slots: 4-6 none (A held through its backoff, B, C), 6-10 one, 10-12 two.
    assert data["waves"][0]["barrier_idle_s"] == 0 + 1 * 4 + 2 * 2
    assert [(g["offset_s"], g["duration_s"]) for g in row(data, "A")["segments"]] == [(0.0, 3.0), (8.0, 2.0)]


def test_a_slot_freed_while_every_slot_was_held_is_on_the_path_and_a_free_slot_is_not(db):
    full = Run(db, [["A", "B", "C"]], capacity=2, agents=["ag_1", "ag_2"], execution_id="ex_full")
    full.attempt("A", 0, 5, "ag_1")
    full.attempt("B", 0, 1, "ag_2")
    full.attempt("C", 1, 6, "ag_2")
    assert path_of(full.build()) == [("B", None), ("C", "slot")]

    free = Run(db, [["A", "B", "C"]], capacity=3, agents=["ag_4", "ag_5", "ag_6"], execution_id="ex_free")
    free.attempt("A", 0, 5, "ag_4")
    free.attempt("B", 0, 1, "ag_5")
    free.attempt("C", 1, 6, "ag_6")  # a third slot was free all along: B did not hold C back
    data = free.build()
    assert path_of(data) == [("C", None)]
    assert data["critical_path"][0]["wait_s"] == 1.0


def test_released_attempts_and_an_other_agents_retry(db):
    run = Run(db, [["A"]], capacity=2, agents=["ag_1", "ag_2"])
    run.event("task_started", "A", 0, "ag_1", context={"attempt": 1})
    run.event("task_failed", "A", 60, "ag_1", context={"attempt": 1, "released": True,
                                                       "error": "agent stale: no heartbeat for more than 60 s"})
    run.event("task_started", "A", 61, "ag_2", context={"attempt": 2})
    run.event("task_completed", "A", 70, "ag_2", context={"attempt": 2, "exit_code": 0})
    segs = row(run.build(), "A")["segments"]
    assert [(g["agent"], g["outcome"], g["duration_s"]) for g in segs] == [
        ("ag_1", "released", 60.0), ("ag_2", "completed", 9.0)]
    assert segs[0]["error"] == "agent stale: no heartbeat for more than 60 s"


def test_a_running_run_lasts_until_the_database_now_and_so_does_its_open_attempt(db):
    run = Run(db, [["A", "B", "C"]], status="running", agents=["ag_1", "ag_2"])

    def event(kind, task_, seconds_ago):  # relative to the database clock
        db.execute("INSERT INTO task_execution_log (execution_id, task_id, instance_id, timestamp, event_type, message) "
                   f"VALUES (?, ?, 'ag_1', {db.sql.ago('?')}, ?, 'x')",
                   (run.ex, run.ids[task_], f"-{seconds_ago:.3f} seconds", kind))

    event("task_started", "A", 10)
    event("task_completed", "A", 5)
    data = run.build()
    assert data["ended_at"] == data["generated_at"]  # nothing runs, but the run goes on
    assert 10.0 <= data["summary"]["wall_s"] < 120 and row(data, "A")["duration_s"] == pytest.approx(5.0, abs=0.01)
    event("task_started", "C", 3)
    data = run.build()
    seg = row(data, "C")["segments"][0]
    assert seg["outcome"] == "running" and seg["ended_at"] == data["generated_at"] == data["ended_at"]
    assert 3.0 <= seg["duration_s"] < 120
    assert row(data, "B")["segments"] == [] and row(data, "B")["duration_s"] is None
    assert path_of(data) == [("A", None), ("C", "slot")]  # one agent ran both


def test_malformed_stored_rows_never_break_the_timeline(db):
    run = Run(db, [["A", "B"]], agents=["ag_1"])
    run.event("task_started", "A", 0, "ag_1", raw_context="{not json")
    run.event("task_failed", "A", 2, "ag_1", message="exit 3", raw_context='[1, 2]')
    run.event("task_started", "A", 3, "ag_1", raw_context='{"attempt": "two", "exit_code": true}')
    run.event("task_completed", "A", 4, "ag_1", raw_context='{"exit_code": 1e999, "duration_s": -5, "error": {"x": 1}}')
    run.event("task_started", "B", 0, "ag_1", raw_context="null")
    db.execute("UPDATE task_execution_log SET timestamp = 'yesterday-ish' WHERE task_id = ? AND event_type = 'task_started'",
               (run.ids["B"],))
    data = run.build()
    assert [(g["attempt"], g["outcome"], g["exit_code"], g["error"]) for g in row(data, "A")["segments"]] == [
        (1, "failed", None, "exit 3"), (2, "completed", None, None)]
    assert data["unreadable_events"] == 1 and row(data, "B")["segments"] == []
    json.dumps(render.jsonable(data), allow_nan=False)


def test_skipped_tasks_have_no_segment_and_are_named_in_their_wave(db):
    run = Run(db, [["A"], ["B"]], deps=[("B", "A")], status="failed", agents=["ag_1"])
    run.attempt("A", 0, 2, "ag_1", outcome="failed", exit_code=2, error="make: *** [all] Error 2")
    run.event("task_skipped", "B", 2, None, context={"reason": "dependency_failed"})
    db.execute("UPDATE wave_task_assignments SET status = 'skipped' WHERE task_id = ?", (run.ids["B"],))
    data = run.build()
    assert data["waves"][1]["skipped"] == ["B"] and row(data, "B")["skipped_at"] == at(2)
    assert data["summary"]["efficiency"] == round(2 / (2 * 3), 4)


def test_refusals(db):
    Run(db, [["A"]])
    with pytest.raises(UsageError, match="grouping"):
        timeline.build(db, "ex_hand", by="wave")
    with pytest.raises(NotFound):
        timeline.build(db, "ex_nope")


# --------------------------------------------------------------------------- a real run

def test_a_real_run_through_the_domain_functions(db, migrated, tmp_path):
    """Workers (real processes) run a diamond whose middle task fails once and is retried in place."""
    from buildctl import executor

    marker = tmp_path / "failed-once"
    tasks = [task("T-001", command="sleep 0.3"),
             task("T-002", ["T-001"], command=f"test -e {marker} || {{ touch {marker}; exit 4; }}"),
             task("T-003", ["T-001"], command="true"),
             task("T-004", ["T-002", "T-003"], command="true")]
    ex = runs.start_run(db, str(write_list(tmp_path / "l.json", tasks, max_parallel_agents=2)))["execution_id"]
    result = executor.execute(str(migrated), ex, jobs=2, config={"retryBackoffMs": [200]})
    assert result.status == "completed", result.worker_errors

    data = timeline.build(db, ex)
    t2 = row(data, "T-002")
    assert [(g["attempt"], g["outcome"], g["exit_code"]) for g in t2["segments"]] == [(1, "failed", 4), (2, "completed", 0)]
    assert t2["segments"][1]["offset_s"] >= t2["segments"][0]["offset_s"] + t2["segments"][0]["duration_s"]
    s = data["summary"]
    assert (s["attempts"], s["retries"], s["tasks_run"]) == (5, 1, 4)
    assert 0 < s["efficiency"] <= 1 and s["capacity"] == 2
    path = path_of(data)
    assert path[0] == ("T-001", None) and path[-1][0] == "T-004"
    assert sum(p["duration_s"] + p["wait_s"] for p in data["critical_path"]) == pytest.approx(s["wall_s"], abs=0.01)
    # Wave barriers hold: every attempt of wave k+1 starts after the last of wave k ends.
    for before, after in zip(data["waves"], data["waves"][1:]):
        assert after["started_at"] >= before["ended_at"]
    agents = timeline.build(db, ex, by="agent")
    assert sum(r["attempts"] for r in agents["rows"]) == 5 and len(agents["rows"]) >= 2


# --------------------------------------------------------------------------- the Gantt chart

def render_text(data, width=80) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=width, no_color=True, highlight=False, soft_wrap=False).print(render.timeline_view(data))
    return out.getvalue()


def test_the_gantt_chart_fits_80_columns_without_splitting_an_id_a_status_or_a_timestamp(db):
    run = Run(db, [["T-001", "T-002", "T-003"], ["T-004", "T-005"], ["T-006"]],
              deps=[("T-004", "T-001"), ("T-006", "T-004")], capacity=3,
              agents=["ag_0123456789ab", "ag_ba9876543210", "ag_aaaaaaaaaaaa"], execution_id="ex_5f3a9c1e2b7d")
    run.attempt("T-001", 0, 40, "ag_0123456789ab")
    run.attempt("T-002", 0, 5, "ag_ba9876543210", outcome="failed", exit_code=1, error="boom")
    run.attempt("T-002", 6, 20, "ag_ba9876543210", attempt=2)
    run.attempt("T-003", 0, 12, "ag_aaaaaaaaaaaa")
    run.attempt("T-004", 41, 90, "ag_0123456789ab")
    run.attempt("T-005", 41, 50, "ag_aaaaaaaaaaaa")
    run.attempt("T-006", 91, 120, "ag_0123456789ab")
    for by in ("task", "agent"):
        data = run.build(by=by)
        text = render_text(data)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 80, text
        words = set(text.split())
        expected = {"ex_5f3a9c1e2b7d", "completed"} | ({r["task"] for r in data["rows"]} if by == "task"
                                                       else {r["agent"] for r in data["rows"]})
        assert expected <= words, (expected - words, text)
        assert "T-001 → T-004 → T-006" in " ".join(text.split()) or by == "agent"
        for stamp in (data["started_at"][:19], data["ended_at"][:19]):
            assert stamp in text, (stamp, text)
    task_text = render_text(run.build())
    # One line per task, under its wave's header; the critical tasks are marked.
    assert re.search(r"^\s*wave 2\b", task_text, re.M)
    marked = {m.group(1) for m in re.finditer(r"^\* (T-\d+)", task_text, re.M)}
    assert marked == {"T-001", "T-004", "T-006"}


def test_the_gantt_chart_scales_its_bars_to_the_width(db):
    run = Run(db, [["A", "B"]], capacity=2, agents=["ag_1", "ag_2"])
    run.attempt("A", 0, 100, "ag_1")
    run.attempt("B", 0, 50, "ag_2")
    data = run.build()
    widths = {}
    for width in (80, 120, 200):
        lines = render_text(data, width).splitlines()
        a_line = next(line for line in lines if line.startswith("* A "))
        b_line = next(line for line in lines if line.startswith("  B "))
        a_cells, b_cells = a_line.count("█"), b_line.count("█")
        assert len(a_line) <= width and a_cells > width * 0.6, a_line
        assert abs(b_cells * 2 - a_cells) <= 2, (a_line, b_line)  # half the time, half the bar
        widths[width] = a_cells
    assert (widths[120] - widths[80], widths[200] - widths[120]) == (40, 80)  # the bars take every extra column
