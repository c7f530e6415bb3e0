"""completions/ are golden files: regenerated from the app and compared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from buildctl import completions

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
