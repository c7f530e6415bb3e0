"""Property: any sequence of edits, creates, deletes, chmods and symlinks across a few folders,
then a checkpoint, more of the same, and a restore, reproduces the checkpointed tree exactly
(and the automatic pre-restore checkpoint reproduces the state the restore replaced)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seed
from checkpoint_helpers import git, git_env, ignored, init_repo, tree_state
from conftest import git_available

from buildctl import checkpoints
from buildctl.errors import Conflict

pytestmark = pytest.mark.skipif(not git_available(), reason="git is not installed")

FOLDERS = ["", "d1/", "d1/sub/", "d two/", "ü/"]
NAMES = ["f", "g h", "ñ.txt", "nl\nx", "k.ign", "d1", "sub"]
PATHS = sorted({folder + name for folder in FOLDERS for name in NAMES})
LINK_TARGETS = ["f", "d1", "missing", "../f", "d two"]

op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(PATHS), st.binary(max_size=6)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS + ["d1", "d two", "ü", "d1/sub"]), st.none()),
    st.tuples(st.just("chmod"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("symlink"), st.sampled_from(PATHS), st.sampled_from(LINK_TARGETS)),
)
ops = st.lists(op, max_size=10)
changes = st.lists(op, min_size=2, max_size=10)


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def _clear_for(root: Path, rel: str) -> None:
    """Make room for a file at ``rel``: real folders above it, nothing at it."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
            cur.unlink()
        if not cur.exists():
            cur.mkdir()
    _remove(root / rel)


def apply_ops(root: Path, sequence) -> None:
    for kind, rel, data in sequence:
        full = root / rel
        if kind == "write":
            _clear_for(root, rel)
            full.write_bytes(data)
        elif kind == "delete":
            if all(not (root / "/".join(rel.split("/")[:i])).is_symlink() for i in range(1, rel.count("/") + 1)):
                _remove(full)
        elif kind == "chmod":
            if full.is_file() and not full.is_symlink() and not any(
                    (root / "/".join(rel.split("/")[:i])).is_symlink() for i in range(1, rel.count("/") + 1)):
                full.chmod(full.stat().st_mode ^ 0o111)
        elif kind == "symlink":
            _clear_for(root, rel)
            os.symlink(data, full)


def visible(root: Path, genv: dict) -> dict:
    """Tracked and untracked-not-ignored files: what a checkpoint holds."""
    return tree_state(root, skip=ignored(root, genv))


@pytest.fixture
def world(db, tmp_path, monkeypatch):
    genv = git_env(tmp_path / "home")
    for k in [k for k in os.environ if k.startswith("GIT_")]:
        monkeypatch.delenv(k)
    for k, v in genv.items():
        monkeypatch.setenv(k, v)
    seed.seed_list(db.conn, "tl_prop")
    seed.seed_run(db.conn, "ex_prop", "tl_prop")
    return {"db": db, "genv": genv, "base": tmp_path / "repos"}


@settings(max_examples=25, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(before=ops, after=changes)
def test_checkpoint_then_restore_reproduces_the_snapshot_exactly(world, before, after):
    db, genv = world["db"], world["genv"]
    world["base"].mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=world["base"]))
    init_repo(root, genv, {".gitignore": "*.ign\n", "f": "tracked\n", "d1/f": "tracked too\n", "d two/g h": "x\n"})
    apply_ops(root, before)
    at_create = visible(root, genv)
    head = git(root, "rev-parse", "HEAD", env=genv)
    index = (root / ".git" / "index").read_bytes()

    cp = checkpoints.create(db, "ex_prop", "T-001", repo_dir=root)["id"]
    assert visible(root, genv) == at_create
    assert (root / ".git" / "index").read_bytes() == index

    apply_ops(root, after)
    everything_before_restore = tree_state(root)
    visible_before_restore = visible(root, genv)
    ignored_before_restore = {p: everything_before_restore[p] for p in ignored(root, genv) if p in everything_before_restore}

    try:
        result = checkpoints.restore(db, cp, execution="ex_prop", repo_dir=root)
    except Conflict as exc:  # an ignored file stands where the checkpoint needs a file: refused, untouched
        assert "in the way" in str(exc)
        assert tree_state(root) == everything_before_restore
        return
    assert visible(root, genv) == at_create
    after_restore = tree_state(root)
    for path, content in ignored_before_restore.items():
        assert after_restore.get(path) == content, path
    assert git(root, "rev-parse", "HEAD", env=genv) == head
    assert (root / ".git" / "index").read_bytes() == index

    # restore of the restore: the automatic checkpoint brings back what was overwritten
    checkpoints.restore(db, result["pre_restore_checkpoint"], execution="ex_prop", repo_dir=root)
    assert visible(root, genv) == visible_before_restore
    assert tree_state(root) == everything_before_restore
    shutil.rmtree(root, ignore_errors=True)
