"""`buildctl checkpoint create / list / restore` on real temporary git repositories (issue 5)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import seed
from checkpoint_helpers import chmod_x, git, git_env, ignored, init_repo, repo_state, tree_state, write
from conftest import Result, assert_refused, git_available, snapshot

from buildctl import exitcodes

pytestmark = pytest.mark.skipif(not git_available(), reason="git is not installed")

REF = "refs/buildctl/checkpoints/"


@pytest.fixture
def genv(tmp_path) -> dict:
    return git_env(tmp_path / "home")


@pytest.fixture
def migrated(db_path) -> Path:
    """The real migrations on a real SQLite file, applied in-process (saves a process start per test;
    `buildctl migrate` itself is tested in test_migrations.py)."""
    from buildctl import migrations, storage

    d = storage.connect(str(db_path), create=True, check_schema=False)
    try:
        migrations.apply(d)
    finally:
        d.close()
    return db_path


@pytest.fixture
def bcx(cli, genv):
    """The real `buildctl` process, with the tests' git environment."""

    def run(*args, **kw):
        return cli(*args, extra_env=genv, **kw)

    return run


@pytest.fixture
def bc(env, genv, monkeypatch, capsys):
    """The same command line run in-process (`run_app`, the Typer path every checkpoint command
    takes), because two shared cores make a process start per call too slow for this many calls."""
    from buildctl.entry import run as run_app

    def run(*args, check: bool = False, cwd=None):
        with monkeypatch.context() as m:
            for k in [k for k in os.environ if k.startswith("GIT_")]:
                m.delenv(k)
            for k, v in {**env, **genv}.items():
                m.setenv(k, v)
            m.delenv("BUILDCTL_DEBUG", raising=False)
            if cwd is not None:
                m.chdir(cwd)
            capsys.readouterr()
            code = run_app([str(a) for a in args])
            out, err = capsys.readouterr()
        r = Result(code, out, err)
        if check and code != 0:
            raise AssertionError(f"buildctl {' '.join(map(str, args))} exited {code}\nstdout: {out}\nstderr: {err}")
        return r

    return run


@pytest.fixture
def lanes(db):
    """Two executions (two lanes), each with its own list; an agent in the first."""
    conn = db.conn
    tasks = seed.seed_list(conn, "tl_one")
    seed.seed_run(conn, "ex_one", "tl_one")
    other = seed.seed_list(conn, "tl_two")
    seed.seed_run(conn, "ex_two", "tl_two")
    seed.seed_agent(conn, "ag_one", "ex_one")
    seed.seed_agent(conn, "ag_two", "ex_two")
    return {"tasks": tasks, "other_tasks": other}


@pytest.fixture
def repo(tmp_path, genv):
    return init_repo(tmp_path / "work repo", genv, {
        ".gitignore": "*.log\nbuild/\n",
        "a.txt": "alpha\n",
        "b.txt": "bravo\n",
        "run.sh": "#!/bin/sh\necho hi\n",
        "src/mod.py": "x = 1\n",
        "src/keep.py": "y = 2\n",
    })


def status(root, genv) -> str:
    return git(root, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all", env=genv)


def non_ignored(root, genv) -> dict:
    return tree_state(root, skip=ignored(root, genv))


def events(migrated, event_type=None) -> list[dict]:
    conn = sqlite3.connect(migrated)
    conn.row_factory = sqlite3.Row
    try:
        sql = "SELECT * FROM task_execution_log" + (" WHERE event_type = ?" if event_type else "") + " ORDER BY id"
        return [dict(r) for r in conn.execute(sql, (event_type,) if event_type else ())]
    finally:
        conn.close()


def checkpoint_row(migrated, cp_id) -> dict:
    conn = sqlite3.connect(migrated)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM checkpoints WHERE id = ?", (cp_id,)).fetchone())
    finally:
        conn.close()


def create(bc, root, *extra, task="T-001", execution="ex_one") -> str:
    r = bc("checkpoint", "create", execution, "--task", task, "--repo", root, *extra, check=True)
    assert r.stdout.count("\n") == 1, r.stdout  # only the id
    return r.out


# --------------------------------------------------------------------------- acceptance: the round trip

def test_round_trip_restores_every_file_byte_and_mode_identical(bcx, lanes, repo, genv, migrated):
    # the state to checkpoint: a modified, a deleted and a chmod +x tracked file, untracked
    # files with awkward names, a symlink, an ignored file
    write(repo, "a.txt", "alpha, edited\n")
    os.unlink(repo / "b.txt")
    chmod_x(repo, "src/mod.py")
    write(repo, "untracked.txt", "new\n")
    write(repo, "dir with space/ünïcødé name.txt", "non-ascii\n")
    write(repo, "line\nbreak.txt", "newline in the name\n")
    os.symlink("a.txt", repo / "link-to-a")
    write(repo, "debug.log", "ignored at create\n")
    head = git(repo, "rev-parse", "HEAD", env=genv).strip()
    at_create = non_ignored(repo, genv)
    status_at_create = status(repo, genv)
    cp = create(bcx, repo, "--message", "before the risky step")
    assert cp.startswith("cp_")

    # change everything again
    write(repo, "a.txt", "alpha, broken\n")
    write(repo, "b.txt", "bravo is back\n")
    chmod_x(repo, "src/mod.py", on=False)
    chmod_x(repo, "src/keep.py")
    os.unlink(repo / "untracked.txt")
    os.unlink(repo / "dir with space/ünïcødé name.txt")
    write(repo, "line\nbreak.txt", "changed\n")
    os.unlink(repo / "link-to-a")
    write(repo, "link-to-a", "a file where the link was\n")
    write(repo, "created later.txt", "gone after the restore\n")
    write(repo, "newdir/deep/file.txt", "gone too\n")
    os.symlink("b.txt", repo / "new-link")
    write(repo, "debug.log", "ignored, changed after create\n")
    write(repo, "later.log", "ignored, created after create\n")
    write(repo, "build/out.o", "ignored folder\n")
    ignored_before_restore = {p: tree_state(repo)[p] for p in ("debug.log", "later.log", "build/out.o")}

    r = bcx("checkpoint", "restore", cp, "--exec", "ex_one", "--repo", repo)
    assert r.returncode == 0, r.stderr
    pre = r.out
    assert pre.startswith("cp_") and pre != cp

    assert non_ignored(repo, genv) == at_create
    after = tree_state(repo)
    for p, content in ignored_before_restore.items():
        assert after[p] == content  # ignored files untouched
    assert "created later.txt" not in after and "new-link" not in after
    assert not (repo / "newdir").exists()  # the folders of removed files go too
    assert os.readlink(repo / "link-to-a") == "a.txt"
    assert os.access(repo / "src/mod.py", os.X_OK) and not os.access(repo / "src/keep.py", os.X_OK)
    assert status(repo, genv) == status_at_create
    assert git(repo, "rev-parse", "HEAD", env=genv).strip() == head
    assert git(repo, "symbolic-ref", "HEAD", env=genv).strip() == "refs/heads/main"

    restored = events(migrated, "checkpoint_restored")
    assert len(restored) == 1 and restored[0]["execution_id"] == "ex_one"
    ctx = json.loads(restored[0]["context"])
    assert ctx["checkpoint_id"] == cp and ctx["pre_restore_checkpoint"] == pre
    assert ctx["counts"] == {"modified": 3, "mode": 2, "recreated": 2, "removed": 4}
    assert "undo: buildctl checkpoint restore " + pre in r.stderr


def test_create_records_git_ref_sorted_files_snapshot_metadata_and_event(bc, lanes, repo, genv, migrated):
    write(repo, "z-untracked.txt", "z\n")
    write(repo, "B/upper.txt", "B\n")
    write(repo, "ignored.log", "no\n")
    chmod_x(repo, "run.sh")
    os.symlink("run.sh", repo / "run-link")
    cp = create(bc, repo, "--agent", "ag_one", "-m", "note")
    row = checkpoint_row(migrated, cp)
    assert row["execution_id"] == "ex_one" and row["task_id"] == lanes["tasks"]["T-001"]
    assert row["instance_id"] == "ag_one"
    assert git(repo, "rev-parse", REF + cp, env=genv).strip() == row["git_ref"]
    files = json.loads(row["files_snapshot"])
    paths = [f["path"] for f in files]
    assert paths == sorted(paths)
    assert "ignored.log" not in paths and "z-untracked.txt" in paths and "B/upper.txt" in paths
    by_path = {f["path"]: f for f in files}
    assert by_path["run.sh"]["mode"] == "100755"
    assert by_path["run-link"]["mode"] == "120000"
    assert by_path["a.txt"]["mode"] == "100644"
    assert by_path["a.txt"]["sha"] == git(repo, "hash-object", "a.txt", env=genv).strip()
    tree = git(repo, "ls-tree", "-r", "-z", row["git_ref"], env=genv)
    assert sorted(rec.split("\t", 1)[1] for rec in tree.split("\0") if rec) == paths
    meta = json.loads(row["metadata"])
    assert meta["head"] == git(repo, "rev-parse", "HEAD", env=genv).strip()
    assert meta["branch"] == "main"
    assert meta["message"] == "note"
    assert meta["repo_root"] == os.path.realpath(repo)
    assert meta["first_commit"] == meta["head"]
    assert meta["created_by"]["agent"] == "ag_one"
    # the checkpoint commit's first parent is HEAD
    assert git(repo, "rev-parse", row["git_ref"] + "^1", env=genv).strip() == meta["head"]
    [ev] = events(migrated, "checkpoint_created")
    assert ev["execution_id"] == "ex_one" and ev["instance_id"] == "ag_one"
    assert json.loads(ev["context"])["checkpoint_id"] == cp


# --------------------------------------------------------------------------- acceptance: no side effects, gc-proof

def test_create_changes_nothing_and_survives_git_gc(bc, lanes, repo, genv):
    # a stash entry, a staged change, an unstaged change, an untracked file
    write(repo, "a.txt", "stashed\n")
    git(repo, "stash", "push", "-q", env=genv)
    write(repo, "b.txt", "staged\n")
    git(repo, "add", "b.txt", env=genv)
    write(repo, "b.txt", "staged, then edited\n")
    write(repo, "new.txt", "untracked\n")
    before = repo_state(repo, genv)
    index_listing = git(repo, "ls-files", "-s", env=genv)
    cp = create(bc, repo)
    after = repo_state(repo, genv)
    new_ref = [l for l in after.pop("refs").splitlines() if REF in l]
    assert after == {k: v for k, v in before.items() if k != "refs"}
    assert before["refs"] == "\n".join(l for l in git(repo, "for-each-ref", env=genv).splitlines() if REF not in l) + "\n"
    assert len(new_ref) == 1 and new_ref[0].endswith(REF + cp)
    assert git(repo, "ls-files", "-s", env=genv) == index_listing

    sha = git(repo, "rev-parse", REF + cp, env=genv).strip()
    git(repo, "gc", "-q", "--prune=now", env=genv)
    assert git(repo, "cat-file", "-t", sha, env=genv).strip() == "commit"
    assert git(repo, "show", f"{sha}:new.txt", env=genv) == "untracked\n"
    # and it still restores after the gc
    os.unlink(repo / "new.txt")
    r = bc("checkpoint", "restore", cp, "--repo", repo)
    assert r.returncode == 0, r.stderr
    assert (repo / "new.txt").read_text() == "untracked\n"
    assert (repo / "b.txt").read_text() == "staged, then edited\n"
    assert git(repo, "stash", "list", env=genv) == before["stash"]


# --------------------------------------------------------------------------- acceptance: restore of a restore

def test_the_automatic_pre_restore_checkpoint_undoes_the_restore(bc, lanes, repo, genv, migrated):
    write(repo, "a.txt", "state A\n")
    cp_a = create(bc, repo)
    write(repo, "a.txt", "state B, never checkpointed by hand\n")
    os.unlink(repo / "src/keep.py")
    write(repo, "src/new.py", "B only\n")
    chmod_x(repo, "b.txt")
    state_b = non_ignored(repo, genv)
    status_b = status(repo, genv)

    pre = bc("checkpoint", "restore", cp_a, "--repo", repo, check=True).out
    assert (repo / "a.txt").read_text() == "state A\n"
    assert non_ignored(repo, genv) != state_b
    meta = json.loads(checkpoint_row(migrated, pre)["metadata"])
    assert meta["kind"] == "pre-restore" and meta["restore_of"] == cp_a

    again = bc("checkpoint", "restore", pre, "--repo", repo, check=True).out
    assert non_ignored(repo, genv) == state_b
    assert status(repo, genv) == status_b
    assert again not in (cp_a, pre)
    listed = json.loads(bc("checkpoint", "list", "ex_one", "--json", check=True).stdout)
    assert [c["id"] for c in listed] == [cp_a, pre, again]
    assert [c["kind"] for c in listed] == ["manual", "pre-restore", "pre-restore"]


def test_an_ignored_file_at_a_checkpointed_path_is_saved_before_it_is_overwritten(bc, lanes, repo, genv):
    write(repo, "notes.log", "checkpointed while tracked\n")
    git(repo, "add", "-f", "notes.log", env=genv)
    cp = create(bc, repo)
    git(repo, "rm", "-q", "--cached", "notes.log", env=genv)  # now an ignored, untracked file
    write(repo, "notes.log", "precious, ignored, never checkpointed by hand\n")
    pre = bc("checkpoint", "restore", cp, "--repo", repo, check=True).out
    assert (repo / "notes.log").read_text() == "checkpointed while tracked\n"
    bc("checkpoint", "restore", pre, "--repo", repo, check=True)
    assert (repo / "notes.log").read_text() == "precious, ignored, never checkpointed by hand\n"


def test_a_file_ignored_before_the_restore_is_kept_even_when_the_restored_rules_do_not_ignore_it(bc, lanes, repo, genv):
    cp = create(bc, repo)
    write(repo, ".gitignore", "*.log\nbuild/\n*.tmp\n")
    write(repo, "scratch.tmp", "ignored now, never checkpointed\n")
    r = bc("checkpoint", "restore", cp, "--repo", repo, check=True)
    assert (repo / ".gitignore").read_text() == "*.log\nbuild/\n"
    assert (repo / "scratch.tmp").read_text() == "ignored now, never checkpointed\n"
    assert "kept 1 file(s)" in r.stderr and "scratch.tmp" in r.stderr


# --------------------------------------------------------------------------- repositories in unusual states

def test_files_marked_assume_unchanged_are_still_read(bc, lanes, repo, genv):
    cp = create(bc, repo)
    git(repo, "update-index", "--assume-unchanged", "a.txt", env=genv)
    write(repo, "a.txt", "edited behind git's back\n")
    pre = bc("checkpoint", "restore", cp, "--repo", repo, check=True).out
    assert (repo / "a.txt").read_text() == "alpha\n"
    bc("checkpoint", "restore", pre, "--repo", repo, check=True)
    assert (repo / "a.txt").read_text() == "edited behind git's back\n"
    assert git(repo, "ls-files", "-v", "a.txt", env=genv).startswith("h ")  # the user's mark stays



def test_repository_with_no_commits_yet(bc, lanes, tmp_path, genv, migrated):
    root = init_repo(tmp_path / "fresh", genv, commit=False)
    write(root, "first.txt", "1\n")
    write(root, "staged.txt", "s\n")
    git(root, "add", "staged.txt", env=genv)
    before = repo_state(root, genv)
    cp = create(bc, root)
    assert repo_state(root, genv)["files"] == before["files"]
    assert repo_state(root, genv)["index"] == before["index"]
    meta = json.loads(checkpoint_row(migrated, cp)["metadata"])
    assert meta["head"] is None and meta["first_commit"] is None and meta["branch"] == "main"
    write(root, "first.txt", "changed\n")
    write(root, "second.txt", "2\n")
    bc("checkpoint", "restore", cp, "--repo", root, check=True)
    assert non_ignored(root, genv) == before["files"]
    assert git(root, "rev-parse", "--verify", "-q", "HEAD", env=genv, check=False) == ""


def test_detached_head(bc, lanes, repo, genv, migrated):
    write(repo, "a.txt", "second\n")
    git(repo, "commit", "-qam", "second", env=genv)
    git(repo, "checkout", "-q", "--detach", "HEAD~1", env=genv)
    head = git(repo, "rev-parse", "HEAD", env=genv).strip()
    write(repo, "scratch.txt", "detached work\n")
    cp = create(bc, repo)
    meta = json.loads(checkpoint_row(migrated, cp)["metadata"])
    assert meta["branch"] is None and meta["head"] == head
    os.unlink(repo / "scratch.txt")
    bc("checkpoint", "restore", cp, "--repo", repo, check=True)
    assert (repo / "scratch.txt").read_text() == "detached work\n"
    assert git(repo, "rev-parse", "HEAD", env=genv).strip() == head
    assert git(repo, "symbolic-ref", "-q", "HEAD", env=genv, check=False) == ""
    listed = bc("checkpoint", "list", "ex_one", check=True).stdout
    assert "(detached)" in listed


def test_repo_option_accepts_a_subfolder_and_defaults_to_the_current_folder(bc, lanes, repo, genv):
    write(repo, "a.txt", "from a subfolder\n")
    r = bc("checkpoint", "create", "ex_one", "--task", "T-002", cwd=repo / "src", check=True)
    cp = r.out
    write(repo, "a.txt", "later\n")
    bc("checkpoint", "restore", cp[:8], "--repo", repo / "src", check=True)
    assert (repo / "a.txt").read_text() == "from a subfolder\n"


def test_reset_index_puts_the_index_back_otherwise_it_stays(bc, lanes, repo, genv):
    write(repo, "a.txt", "staged at create\n")
    git(repo, "add", "a.txt", env=genv)
    staged_at_create = git(repo, "ls-files", "-s", env=genv)
    status_at_create = status(repo, genv)
    cp = create(bc, repo)
    write(repo, "b.txt", "staged later\n")
    write(repo, "a.txt", "edited later\n")
    git(repo, "add", "a.txt", "b.txt", env=genv)
    staged_later = git(repo, "ls-files", "-s", env=genv)

    pre = bc("checkpoint", "restore", cp, "--repo", repo, check=True).out
    assert git(repo, "ls-files", "-s", env=genv) == staged_later  # the index stayed
    assert (repo / "a.txt").read_text() == "staged at create\n"

    bc("checkpoint", "restore", cp, "--repo", repo, "--reset-index", check=True)
    assert git(repo, "ls-files", "-s", env=genv) == staged_at_create
    assert status(repo, genv) == status_at_create
    # and the restore of the first restore brings back the later index too
    bc("checkpoint", "restore", pre, "--repo", repo, "--reset-index", check=True)
    assert git(repo, "ls-files", "-s", env=genv) == staged_later


# --------------------------------------------------------------------------- dry run, list

def test_dry_run_lists_the_changes_and_changes_nothing(bc, lanes, repo, genv, migrated):
    cp = create(bc, repo)
    write(repo, "a.txt", "modified\n")
    os.unlink(repo / "b.txt")
    write(repo, "extra.txt", "created since\n")
    chmod_x(repo, "src/mod.py")
    db_before, repo_before = snapshot(migrated), repo_state(repo, genv)
    r = bc("checkpoint", "restore", cp, "--dry-run", "--json", "--repo", repo, check=True)
    doc = json.loads(r.stdout)
    assert doc["dry_run"] is True
    assert [(c["change"], c["path"]) for c in doc["changes"]] == [
        ("modified", "a.txt"), ("recreated", "b.txt"), ("removed", "extra.txt"), ("mode", "src/mod.py")]
    table = bc("checkpoint", "restore", cp, "--dry-run", "--repo", repo, check=True)
    for word in ("modified", "recreated", "removed", "mode", "extra.txt"):
        assert word in table.stdout
    assert "nothing was changed" in table.stderr
    assert snapshot(migrated) == db_before
    assert repo_state(repo, genv) == repo_before


def test_list_filters_by_task_and_prints_json(bc, lanes, repo, genv):
    c1 = create(bc, repo, task="T-001")
    c2 = create(bc, repo, task="T-002", execution="ex_o")  # any unique prefix of the execution id
    c3 = create(bc, repo, task=lanes["tasks"]["T-001"])  # the task id works too
    create(bc, repo, task="T-001", execution="ex_two")  # another lane
    rows = json.loads(bc("checkpoint", "list", "ex_one", "--json", check=True).stdout)
    assert [r["id"] for r in rows] == [c1, c2, c3]
    assert {"id", "execution_id", "task_id", "task", "instance_id", "git_ref", "ref", "created_at", "kind",
            "head", "branch", "file_count", "metadata"} <= set(rows[0])
    assert rows[0]["created_at"].endswith("Z") and "T" in rows[0]["created_at"]
    assert rows[0]["ref"] == REF + c1 and rows[0]["file_count"] == 6
    only = json.loads(bc("checkpoint", "list", "ex_one", "--task", "T-001", "--json", check=True).stdout)
    assert [r["id"] for r in only] == [c1, c3]
    table = bc("checkpoint", "list", "ex_one", check=True).stdout
    assert c1 in table and "T-002" in table
    empty = bc("checkpoint", "list", "ex_one", "--task", "T-003", check=True)
    assert empty.stdout == "" and "no checkpoints" in empty.stderr


# --------------------------------------------------------------------------- refusals: one line, nothing changed

def _refused(bc, migrated, roots, genv, args, code, contains):
    db_before = snapshot(migrated)
    repos_before = [tree_state(r) if not (r / ".git").exists() else repo_state(r, genv) for r in roots]
    r = bc(*args)
    assert_refused(r, code, contains)
    assert snapshot(migrated) == db_before
    assert [tree_state(r) if not (r / ".git").exists() else repo_state(r, genv) for r in roots] == repos_before
    return r


def test_restore_of_another_lanes_checkpoint_is_refused_and_changes_nothing(bc, bcx, lanes, repo, genv, migrated):
    cp = create(bc, repo)
    write(repo, "a.txt", "work in progress\n")
    _refused(bcx, migrated, [repo], genv, ("checkpoint", "restore", cp, "--exec", "ex_two", "--repo", repo),
             exitcodes.CONFLICT, "another lane")
    _refused(bc, migrated, [repo], genv, ("checkpoint", "restore", cp, "--exec", "ex_two", "--repo", repo, "--dry-run"),
             exitcodes.CONFLICT, "another lane")


def test_refusals_of_create(bc, lanes, repo, genv, migrated, tmp_path):
    plain = tmp_path / "not a repo"
    plain.mkdir()
    write(plain, "f.txt", "x\n")
    cases = [
        (("checkpoint", "create", "ex_one", "--task", "T-001", "--repo", plain), exitcodes.GIT, "not a git repository"),
        (("checkpoint", "create", "ex_one", "--task", "T-001", "--repo", tmp_path / "missing"), exitcodes.GIT, "not a git repository"),
        (("checkpoint", "create", "ex_nope", "--task", "T-001", "--repo", repo), exitcodes.NOT_FOUND, "no execution matches"),
        (("checkpoint", "create", "ex_one", "--task", "T-999", "--repo", repo), exitcodes.NOT_FOUND, "no task 'T-999'"),
        (("checkpoint", "create", "ex_one", "--task", lanes["other_tasks"]["T-001"], "--repo", repo),
         exitcodes.NOT_FOUND, "in execution ex_one (task list tl_one)"),
        (("checkpoint", "create", "ex_one", "--task", "T-001", "--agent", "ag_two", "--repo", repo),
         exitcodes.CONFLICT, "belongs to execution ex_two"),
        (("checkpoint", "create", "ex_one", "--task", "T-001", "--agent", "ag_nope", "--repo", repo),
         exitcodes.NOT_FOUND, "no agent matches"),
        (("checkpoint", "create", "ex_one", "--repo", repo), exitcodes.USAGE, "--task"),
    ]
    for args, code, contains in cases:
        _refused(bc, migrated, [repo, plain], genv, args, code, contains)


def test_refusals_of_list_and_restore_ids(bc, lanes, repo, genv, migrated):
    cp = create(bc, repo)
    write(repo, "a.txt", "uncheckpointed\n")
    cases = [
        (("checkpoint", "list", "ex_nope"), exitcodes.NOT_FOUND, "no execution matches"),
        (("checkpoint", "list", "ex_one", "--task", "T-404"), exitcodes.NOT_FOUND, "no task 'T-404'"),
        (("checkpoint", "restore", "cp_nope", "--repo", repo), exitcodes.NOT_FOUND, "no checkpoint matches"),
        (("checkpoint", "restore", cp, "--exec", "ex_nope", "--repo", repo), exitcodes.NOT_FOUND, "no execution matches"),
    ]
    for args, code, contains in cases:
        _refused(bc, migrated, [repo], genv, args, code, contains)


def test_restore_refuses_outside_a_repository_and_in_another_repository(bc, lanes, repo, genv, migrated, tmp_path):
    cp = create(bc, repo)
    plain = tmp_path / "plain"
    plain.mkdir()
    write(plain, "a.txt", "not git\n")
    other = init_repo(tmp_path / "other", genv, {"a.txt": "another project\n"})
    write(other, "a.txt", "uncommitted work there\n")
    _refused(bc, migrated, [repo, plain], genv, ("checkpoint", "restore", cp, "--repo", plain),
             exitcodes.GIT, "not a git repository")
    _refused(bc, migrated, [repo, other], genv, ("checkpoint", "restore", cp, "--repo", other),
             exitcodes.CONFLICT, "another repository")
    _refused(bc, migrated, [repo, other], genv, ("checkpoint", "restore", cp, "--repo", other, "--dry-run"),
             exitcodes.CONFLICT, "another repository")


def test_restore_refuses_when_the_ref_was_deleted_by_hand(bc, lanes, repo, genv, migrated):
    cp = create(bc, repo)
    git(repo, "update-ref", "-d", REF + cp, env=genv)
    git(repo, "gc", "-q", "--prune=now", env=genv)
    write(repo, "a.txt", "uncheckpointed\n")
    _refused(bc, migrated, [repo], genv, ("checkpoint", "restore", cp, "--repo", repo), exitcodes.GIT, "is missing")


def test_restore_refuses_when_the_ref_was_moved(bc, lanes, repo, genv, migrated):
    cp = create(bc, repo)
    git(repo, "update-ref", REF + cp, "HEAD", env=genv)
    write(repo, "a.txt", "uncheckpointed\n")
    _refused(bc, migrated, [repo], genv, ("checkpoint", "restore", cp, "--repo", repo), exitcodes.GIT, "points at")


def test_restore_refuses_when_an_ignored_file_is_in_the_way(bc, lanes, repo, genv, migrated):
    write(repo, "out", "a file named like the ignored folder to come\n")
    cp = create(bc, repo)
    os.unlink(repo / "out")
    write(repo, ".gitignore", "*.log\nbuild/\nout/\n")
    write(repo, "out/cache.bin", "ignored and never checkpointed\n")
    _refused(bc, migrated, [repo], genv, ("checkpoint", "restore", cp, "--repo", repo), exitcodes.CONFLICT, "in the way")
    assert (repo / "out/cache.bin").read_text() == "ignored and never checkpointed\n"


# --------------------------------------------------------------------------- failures after the checks

def test_a_restore_that_does_not_verify_fails_loudly(bc, lanes, repo, genv, migrated):
    cp = create(bc, repo)
    # the recorded snapshot disagrees with the commit (a corrupted row): verification must catch it
    conn = seed.connect(migrated)
    files = json.loads(conn.execute("SELECT files_snapshot FROM checkpoints WHERE id = ?", (cp,)).fetchone()[0])
    files[0]["sha"] = "0" * 40
    conn.execute("UPDATE checkpoints SET files_snapshot = ? WHERE id = ?", (json.dumps(files), cp))
    conn.close()
    write(repo, "a.txt", "uncheckpointed\n")
    r = bc("checkpoint", "restore", cp, "--repo", repo)
    assert_refused(r, exitcodes.GIT, "did not verify")
    assert files[0]["path"] in r.stderr
    pre = [c for c in json.loads(bc("checkpoint", "list", "ex_one", "--json", check=True).stdout) if c["kind"] == "pre-restore"]
    assert len(pre) == 1 and pre[0]["id"] in r.stderr  # the work it overwrote is still recoverable
    assert events(migrated, "checkpoint_restored") == []
    assert [e["message"] for e in events(migrated, "error")][0].startswith(f"restore of {cp} did not verify")


def test_when_the_database_write_fails_the_ref_is_deleted_again(bc, lanes, repo, genv, migrated):
    conn = seed.connect(migrated)
    conn.execute("CREATE TRIGGER refuse_checkpoints BEFORE INSERT ON checkpoints BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    conn.close()
    before = repo_state(repo, genv)
    r = bc("checkpoint", "create", "ex_one", "--task", "T-001", "--repo", repo)
    assert_refused(r, contains="disk says no")
    assert git(repo, "for-each-ref", REF, env=genv) == ""
    assert repo_state(repo, genv) == before
    assert events(migrated) == []


# --------------------------------------------------------------------------- helpers for gc

def test_delete_ref_and_delete_checkpoints(bc, lanes, repo, genv, db):
    from buildctl import checkpoints, gitrepo

    c1, c2, c3 = create(bc, repo), create(bc, repo), create(bc, repo)
    git_repo = gitrepo.open_repo(repo)
    assert git_repo.delete_ref(gitrepo.checkpoint_ref(c1)) is True
    assert git_repo.delete_ref(gitrepo.checkpoint_ref(c1)) is False
    result = checkpoints.delete_checkpoints(db, [c1, c2])
    assert result == {"rows": 2, "refs": 1, "deleted_refs": [REF + c2], "ref_errors": []}
    assert git(repo, "for-each-ref", "--format=%(refname)", REF, env=genv).split() == [REF + c3]
    assert [r["id"] for r in db.query("SELECT id FROM checkpoints")] == [c3]
    result = checkpoints.delete_checkpoints(db, [c3], repo_dir=repo.parent / "gone")
    assert result["rows"] == 1 and result["refs"] == 0 and result["ref_errors"][0]["id"] == c3


def test_help_texts(bc):
    for cmd in ("create", "list", "restore"):
        r = bc("checkpoint", cmd, "--help", check=True)
        assert "--json" in r.stdout or cmd == "create"
    r = bc("checkpoint", "restore", "--help", check=True)
    for opt in ("--exec", "--repo", "--dry-run", "--reset-index"):
        assert opt in r.stdout
