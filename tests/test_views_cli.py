"""`run timeline`, `run report` and `metrics` from the command line (the views' logic is tested
in test_timeline.py, test_report.py and test_metrics.py)."""

from __future__ import annotations

import json

import pytest

from buildctl import exitcodes
from conftest import EXAMPLES, assert_refused, snapshot

pytestmark = pytest.mark.engines


def _finished_run(cli, tmp_path) -> str:
    ex = cli("run", "start", str(EXAMPLES / "five-tasks.toml"), check=True).out
    cli("run", "exec", ex, "--jobs", "2", cwd=tmp_path, check=True)
    return ex


def test_run_timeline_json_and_table(cli, migrated, tmp_path):
    ex = _finished_run(cli, tmp_path)
    doc = json.loads(cli("run", "timeline", ex[:6], "--json", check=True).stdout)
    assert doc["execution_id"] == ex and doc["status"] == "completed"
    assert [s["task"] for s in doc["critical_path"]][-1] == "T-005"
    assert 0 < doc["summary"]["efficiency"] <= 1
    by_agent = json.loads(cli("run", "timeline", ex, "--by", "agent", "--json", check=True).stdout)
    assert by_agent["by"] == "agent" and all(r["segments"] for r in by_agent["rows"])
    table = cli("run", "timeline", ex, check=True, extra_env={"COLUMNS": "100"}).stdout
    assert "critical path" in table and "T-005" in table
    # --watch on an ended run prints once and returns.
    lines = cli("run", "timeline", ex, "--watch", "--json", check=True).stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["execution_id"] == ex


def test_run_report_writes_one_page_and_prints_nothing(cli, migrated, tmp_path):
    ex = _finished_run(cli, tmp_path)
    out = tmp_path / "report.html"
    r = cli("run", "report", ex, "-o", out, check=True)
    assert r.stdout == "" and f"wrote {out}" in r.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and ex in page and page.count('<rect class="attempt ') == 5


def test_metrics_to_stdout_and_to_a_textfile(cli, migrated, tmp_path):
    ex = _finished_run(cli, tmp_path)
    text = cli("metrics", check=True).stdout
    assert 'buildctl_runs{status="completed"} 1' in text and ex in text
    target = tmp_path / "prom" / "buildctl.prom"
    target.parent.mkdir()
    r = cli("metrics", "--textfile", target, check=True)
    assert r.stdout == "" and target.read_text().splitlines()[0].startswith("# HELP")
    assert [p.name for p in target.parent.iterdir()] == ["buildctl.prom"]


def test_refusals_write_nothing(cli, migrated, tmp_path):
    ex = _finished_run(cli, tmp_path)
    before = snapshot(migrated)
    assert_refused(cli("run", "timeline", "ex_nope"), exitcodes.NOT_FOUND)
    assert_refused(cli("run", "timeline", ex, "--by", "wave"), exitcodes.USAGE)
    assert_refused(cli("run", "report", ex), exitcodes.USAGE)  # -o is required
    assert_refused(cli("run", "report", ex, "-o", tmp_path / "no" / "such" / "folder" / "r.html"), exitcodes.USAGE)
    assert_refused(cli("metrics", "--textfile", tmp_path / "missing" / "m.prom"), exitcodes.USAGE)
    assert_refused(cli("metrics", "--stale-after", "-5s"), exitcodes.USAGE)
    assert snapshot(migrated) == before
