"""completions/ are golden files: regenerated from the app and compared."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildctl import completions
from conftest import EXAMPLES

REPO = Path(__file__).resolve().parent.parent


def test_completion_scripts_are_up_to_date():
    generated = completions.generate(REPO / "completions")
    for name, text in generated.items():
        path = REPO / "completions" / name
        assert path.exists(), f"completions/{name} is missing: run `python -m buildctl.completions`"
        assert path.read_text() == text, f"completions/{name} is stale: run `python -m buildctl.completions`"


def test_header_lists_every_command():
    tree = completions.command_tree()
    assert any(line.startswith("buildctl migrate ") for line in tree)
    text = (REPO / "completions" / "buildctl.bash").read_text()
    for line in tree:
        assert f"#   {line}\n" in text


def test_bash_completion_answers_subcommands(tmp_path):
    env = {**os.environ, "_BUILDCTL_COMPLETE": "complete_bash", "COMP_WORDS": "buildctl mig", "COMP_CWORD": "1",
           "BUILDCTL_DB": str(tmp_path / "none.db")}
    p = subprocess.run([sys.executable, "-m", "buildctl"], env=env, capture_output=True, text=True)
    assert p.returncode == 0
    assert "migrate" in p.stdout.split()


def _bash_complete(words: list[str], env: dict) -> list[str]:
    """Run the generated bash completion script in a real bash, as TAB would, and return COMPREPLY."""
    script = (f"source {REPO / 'completions' / 'buildctl.bash'}\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n"
              "_buildctl_completion buildctl\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line for line in p.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ids_complete_from_the_database_named_with_db_on_the_line(cli, migrated, env, tmp_path):
    ex = cli("run", "start", str(EXAMPLES / "five-tasks.toml"), check=True).out
    agent = cli("agent", "spawn", ex, check=True).out
    # The default database is elsewhere (and empty): only --db on the line finds the run.
    bare = {**env, "BUILDCTL_DB": str(tmp_path / "elsewhere.db"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
    assert ex in _bash_complete(["buildctl", "--db", str(migrated), "waves", ex[:4]], bare)
    assert ex in _bash_complete(["buildctl", "waves", "--db", str(migrated), ex[:4]], bare)
    assert ex in _bash_complete(["buildctl", "log", "tail", "--db", str(migrated), ex[:4]], bare)
    assert agent in _bash_complete(["buildctl", "--db", str(migrated), "heartbeat", "ag_"], bare)
    # A task completes from the run named on the same line.
    tasks = _bash_complete(["buildctl", "--db", str(migrated), "log", "tail", ex, "--task", "T-00"], bare)
    assert sorted(tasks) == ["T-001", "T-002", "T-003", "T-004", "T-005"], tasks
    # Without --db the default (empty) database has nothing to offer.
    assert ex not in _bash_complete(["buildctl", "waves", ex[:4]], bare)
    # Fixed words complete too.
    assert "task_failed" in _bash_complete(["buildctl", "log", "add", ex, "task_f"], bare)


def test_the_command_reference_is_up_to_date(tmp_path):
    """docs/CLI.md is generated from the Typer app by Typer's own `utils docs` (typer-cli's command)."""
    typer_cmd = Path(sys.executable).with_name("typer")
    if not typer_cmd.exists():
        pytest.skip("needs the `typer` command (installed with typer >= 0.26, or typer-cli)")
    out = tmp_path / "CLI.md"
    subprocess.run([str(typer_cmd), "buildctl.cli.typer_app", "utils", "docs", "--name", "buildctl", "--output", str(out)],
                   check=True, capture_output=True, env={**os.environ, "COLUMNS": "80"})
    assert out.read_text() == (REPO / "docs" / "CLI.md").read_text(), (
        "docs/CLI.md is stale: run `typer buildctl.cli.typer_app utils docs --name buildctl --output docs/CLI.md`")
    from buildctl.cli import commands

    for path in commands():
        assert f"## `buildctl {' '.join(path)}`" in out.read_text(), path
