"""`run report`'s HTML page (issue 13): what it gathers, that it escapes every stored text and
fetches nothing, and — in a real headless Chromium with every request blocked — that it renders one
bar per attempt with a tooltip and no console error."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from buildctl import report
from timeline_helpers import Run

HOSTILE = '</script><img src=x onerror=alert(1)>'
#: A display id is the user's text too (stored as imported).
ODD_ID = 'T-4<em>"x"</em>'
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture
def hostile_run(db):
    """Two waves; T-002 fails three times in a row and then passes, T-004 fails three times with the
    same error (the SIA trigger, no progress); titles, errors, the list's name and an agent's error
    all carry markup."""
    run = Run(db, [["T-001", "T-002", "T-004"], ["T-003"]], deps=[("T-003", "T-002")], capacity=2,
              agents=["ag_one", "ag_two"], execution_id="ex_report")
    db.execute("UPDATE tasks SET title = ? WHERE id = ?", (f"build {HOSTILE} & <b>bold</b>", run.ids["T-001"]))
    db.execute("UPDATE task_lists_v2 SET name = ? WHERE id = ?", (f"payments {HOSTILE}", "tl_ex_report"))
    db.execute("UPDATE build_agent_instances SET status = 'failed', error_context = ? WHERE instance_id = 'ag_two'",
               ('{"code": "agent_failed", "message": "oom ' + HOSTILE.replace('"', '\\"') + '"}',))
    run.attempt("T-001", 0, 30, "ag_one")
    run.event("task_started", "T-002", 0, "ag_two", context={"attempt": 1})
    for n, end in enumerate((5, 11, 18), 1):
        run.event("task_failed", "T-002", end, "ag_two", message=f"T-002 failed (attempt {n})",
                  context={"attempt": n, "exit_code": 2, "error": f"boom {HOSTILE}", "duration_s": 5, "in_place": True})
    run.event("task_completed", "T-002", 25, "ag_two", context={"attempt": 4, "exit_code": 0, "duration_s": 5})
    run.attempt("T-003", 31, 40, "ag_one")
    for n, (start, end) in enumerate(((26, 27), (27, 28), (28, 29)), 1):  # the same error three times: no progress
        run.attempt("T-004", start, end, "ag_two", outcome="failed", attempt=n, exit_code=1, error="disk full")
    db.execute("UPDATE wave_task_assignments SET status = 'failed' WHERE task_id = ?", (run.ids["T-004"],))
    db.execute("UPDATE tasks SET display_id = ? WHERE id = ?", (ODD_ID, run.ids["T-004"]))
    db.execute("INSERT INTO task_execution_log (execution_id, instance_id, timestamp, event_type, message) "
               "VALUES ('ex_report', 'ag_two', '2026-11-27 08:00:41.000', 'error', ?)", (f"agent ag_two failed: {HOSTILE}",))
    for second in range(0, 41, 2):
        run.heartbeat("ag_one", second, memory_mb=100 + second, cpu=10.0 + second / 2)
    run.heartbeat("ag_two", 1, memory_mb=300, cpu=90.5)
    return run


def attempts_in(data) -> int:
    return sum(len(r["segments"]) for r in data["task_rows"])


def test_collect_gathers_the_timeline_agents_heartbeats_sia_and_problems(db, hostile_run, monkeypatch):
    data = report.collect(db, "ex_report")
    assert attempts_in(data) == 9 and [r["task"] for r in data["task_rows"]] == ["T-001", "T-002", ODD_ID, "T-003"]
    assert {r["agent"] for r in data["agent_rows"]} == {"ag_one", "ag_two"}
    one, two = data["agents"]
    assert (one["instance_id"], one["heartbeat_count"], len(one["heartbeats"])) == ("ag_one", 21, 21)
    assert one["heartbeats"][-1]["memory_usage_mb"] == 140 and two["error"] == f"oom {HOSTILE}"
    assert [(f["task"], f["failure_count"], f["no_progress"]) for f in data["sia"]] == [(ODD_ID, 3, True)]
    assert [p["event_type"] for p in data["problems"]] == ["error"]
    monkeypatch.setattr(report, "CHART_POINTS", 5)
    thinned = report.collect(db, "ex_report")["agents"][0]["heartbeats"]
    assert len(thinned) == 5 and thinned[0]["timestamp"] < thinned[-1]["timestamp"]
    assert thinned[-1]["memory_usage_mb"] == 140  # the last point is always kept


def test_the_page_escapes_every_stored_text_and_names_no_external_resource(db, hostile_run):
    page = report.html(report.collect(db, "ex_report"))
    assert "<img" not in page and "<em>" not in page and "<b>" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert page.count("</script>") == 1  # the page's own, at its end
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "build &lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert not re.search(r"https?:|//[a-z]|\bsrc=|\bhref=|url\(|@import", page.replace("src=x", "")), \
        "the page must fetch nothing"
    assert re.search(r'<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;;', page)
    # One <rect class="attempt ..."> per attempt, each with its tooltip text in a <title> (read without JavaScript).
    rects = re.findall(r'<rect class="attempt ([a-z]+)[^"]*"[^>]*>\s*<title>([^<]*)</title>', page)
    assert len(rects) == 9
    assert [o for o, _ in rects] == ["completed"] + ["failed"] * 3 + ["completed"] + ["failed"] * 3 + ["completed"]
    assert "T-002 · attempt 2 · failed" in rects[2][1] and "exit code 2" in rects[2][1]
    for section in ("summary", "timeline-section", "waves", "tasks", "agents", "failures", "problems"):
        assert f'<section id="{section}">' in page
    assert "@media print" in page


def test_save_writes_the_page_atomically(tmp_path, db, hostile_run):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "run.html"
    page = report.html(report.collect(db, "ex_report"))
    report.save(str(target), page)
    assert target.read_text(encoding="utf-8") == page
    assert [p.name for p in target.parent.iterdir()] == ["run.html"]  # no temporary file left behind


# --------------------------------------------------------------------------- in a real browser

def _chromium_or_skip() -> tuple[object, str]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright): the report's browser test needs it")
    chromium = os.environ.get("BUILDCTL_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium, or set BUILDCTL_TEST_CHROMIUM): "
                    "the report's browser test needs it")
    return sync_playwright, chromium


def test_the_report_in_headless_chromium_with_every_request_blocked(db, hostile_run, tmp_path):
    sync_playwright, chromium = _chromium_or_skip()
    data = report.collect(db, "ex_report")
    target = tmp_path / "report.html"
    report.save(str(target), report.html(data))
    url = target.as_uri()
    blocked, problems, dialogs = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            def route(r):
                if r.request.url == url:
                    return r.continue_()  # the file itself, opened from disk
                blocked.append(r.request.url)
                return r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="load")

            bars = page.locator("svg#timeline rect.attempt")
            assert bars.count() == attempts_in(data) == 9
            assert page.locator("img").count() == 0 and page.locator("script").count() == 1
            assert HOSTILE in page.locator("#tasks").inner_text()  # shown as text, not run as markup
            second = page.locator('rect.attempt[data-task="T-002"][data-attempt="2"]')
            second.hover()
            tip = page.locator("#tip")
            tip.wait_for(state="visible", timeout=10_000)
            text = tip.inner_text()
            assert "T-002 · attempt 2 · failed" in text and "exit code 2" in text and f"boom {HOSTILE}" in text
            assert second.get_attribute("aria-label") == second.get_attribute("data-tip")
            box = page.locator("svg#timeline").bounding_box()
            assert box and box["width"] > 500 and box["height"] > 100
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"report screenshot: {shot}")
            page.emulate_media(media="print")
            assert page.evaluate("getComputedStyle(document.getElementById('tip')).display") == "none"
            assert page.locator("svg#timeline").is_visible()
        finally:
            browser.close()
    assert blocked == [], f"the page requested {blocked}"
    assert problems == [] and dialogs == []
    assert shot.stat().st_size > 10_000
