"""Git checkpoints: create, list, restore — and the deletion helpers gc needs.

A checkpoint is a commit object holding the whole working tree (tracked files and
untracked files that are not ignored), built in a temporary index so that HEAD, the
user's index, the stash and every file stay exactly as they were. It is pinned at
``refs/buildctl/checkpoints/<id>`` so that git's own gc keeps it.

Commit layout (like ``git stash``): the checkpoint commit W has the snapshot tree and
parents [HEAD (when there is one), I], where I is a commit of the user's *index* at
that moment (its tree; parent HEAD). ``restore --reset-index`` puts I back into the
index. I is absent when the index could not be written as a tree (unmerged entries).

Order of effects, so that nothing is ever lost:
- create: git objects and the ref first, then the database row + ``checkpoint_created``
  event in one short transaction; when that transaction fails, the ref is deleted again.
- restore: every check first (lane, repository, ref, files in the way); then an automatic
  checkpoint of the current state; only then the working tree is changed, and finally
  verified file by file against ``files_snapshot``.

Stdlib only; never prints.
"""

from __future__ import annotations

import getpass
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildctl import execlog, gitrepo, ids, jsonstrict, resolve
from buildctl.errors import BuildctlError, Conflict, GitError, InvalidInput
from buildctl.gitrepo import GITLINK, Entry, Repo
from buildctl.storage import Database

#: What a restore does to one path (also the --dry-run vocabulary).
CHANGE_KINDS = ("modified", "mode", "recreated", "removed")


# --------------------------------------------------------------------------- capturing a working tree

@dataclass
class _Captured:
    """The working tree written into a temporary index: its tree, and the user's index tree."""

    tree: str
    index_tree: str | None
    entries: dict[str, Entry]
    head: str | None
    branch: str | None


def _capture(repo: Repo, keep_paths: dict[str, Entry] | None = None) -> _Captured:
    """Snapshot tracked + untracked-not-ignored files without touching anything of the user's.

    ``keep_paths`` (restore): paths of the checkpoint that exist now but are ignored are
    added too, so that the restore overwriting them never loses their current content.
    """
    head = repo.head()
    branch = repo.branch()
    with repo.temp_index("real") as idx:
        index_tree = idx.write_tree(check=False)  # None with unmerged entries
        idx.add_all()
        entries = idx.entries()
        if keep_paths:
            extra = []
            for path in keep_paths:
                if path in entries:
                    continue
                st = gitrepo.lstat_inside(repo.root, path)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    extra.append(path)
            if extra:
                idx.add_force(sorted(extra))
                entries = idx.entries()
        tree = idx.write_tree()
    return _Captured(tree, index_tree, entries, head, branch)


def _text(path: str) -> str:
    """A file name as valid UTF-8 text for log messages (undecodable bytes become U+FFFD)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: Overrides the host name checkpoints record and compare (hosts that share one, such
#: as containers cloned from one image; tests simulating several hosts).
HOST_VARIABLE = "BUILDCTL_HOST"


def this_host() -> str:
    """The host a checkpoint made here records (``metadata.created_by.host``)."""
    return os.environ.get(HOST_VARIABLE) or socket.gethostname()


def _who() -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers with a random uid)
        user = None
    return {"user": user, "host": this_host()}


def _made_elsewhere(repo: Repo, row: dict, meta: dict) -> bool:
    """Whether the checkpoint was made on another host (each host of a farm has its own
    clone). Its ref is that clone's; it is restored here only from its commit,
    and refused, changing nothing, when that commit is not in this clone."""
    by = meta.get("created_by")
    made_on = by.get("host") if isinstance(by, dict) else None
    if not made_on or made_on == this_host():
        return False
    if not repo.has_commit(row["git_ref"]):
        raise Conflict(f"checkpoint {row['id']} was made on host {made_on}, not on {this_host()}, and its commit "
                       f"{row['git_ref'][:12]} is not in {repo.root}; restore it on {made_on}, or fetch it first "
                       f"(git fetch <{made_on}'s clone> {gitrepo.checkpoint_ref(row['id'])}); nothing was changed")
    return True


def _record(db: Database, repo: Repo, cap: _Captured, *, execution_id: str, task: dict, agent_id: str | None,
            message: str | None, kind: str, restore_of: str | None = None) -> dict:
    """Commit + ref first, then the row and its event in one transaction (ref removed if that fails)."""
    cp_id = ids.new_id("checkpoint")
    parents = [cap.head] if cap.head else []
    index_commit = None
    if cap.index_tree:
        index_commit = repo.commit_tree(cap.index_tree, parents, f"buildctl checkpoint {cp_id}: index\n")
    lines = [f"buildctl checkpoint {cp_id}", "", f"execution: {execution_id}",
             f"task: {task['display_id']} ({task['id']})"]
    if agent_id:
        lines.append(f"agent: {agent_id}")
    if message:
        lines += ["", message]
    commit = repo.commit_tree(cap.tree, parents + ([index_commit] if index_commit else []), "\n".join(lines) + "\n")
    ref = gitrepo.checkpoint_ref(cp_id)
    repo.create_ref(ref, commit, f"buildctl: checkpoint {cp_id}")
    try:
        files = [{"path": p, "sha": e.sha, "mode": e.mode} for p, e in sorted(repo.ls_tree(commit).items())]
        metadata = {
            "kind": kind,
            "restore_of": restore_of,
            "message": message,
            "head": cap.head,
            "branch": cap.branch,
            "tree": cap.tree,
            "index_commit": index_commit,
            "repo_root": str(repo.root),
            "first_commit": repo.first_commit(),
            "created_by": {"agent": agent_id, **_who()},
        }
        with db.write():
            db.execute(
                "INSERT INTO checkpoints (id, execution_id, task_id, instance_id, git_ref, created_at, files_snapshot, metadata) "
                f"VALUES (?, ?, ?, ?, ?, {db.sql.now}, ?, ?)",
                (cp_id, execution_id, task["id"], agent_id, commit, jsonstrict.dumps(files), jsonstrict.dumps(metadata)),
            )
            what = f"automatic checkpoint before restoring {restore_of}" if kind == "pre-restore" else "checkpoint"
            execlog.append(db, execution_id, "checkpoint_created",
                           f"{what} {cp_id} of {task['display_id']}: {len(files)} files at {commit[:12]}",
                           task_id=task["id"], instance_id=agent_id,
                           context={"checkpoint_id": cp_id, "git_ref": commit, "ref": ref, "files": len(files),
                                    "kind": kind, "restore_of": restore_of, "repo": str(repo.root)})
    except BaseException:
        try:
            repo.delete_ref(ref, commit)
        except BuildctlError:
            pass
        raise
    return {"id": cp_id, "execution_id": execution_id, "task_id": task["id"], "task": task["display_id"],
            "instance_id": agent_id, "git_ref": commit, "ref": ref, "files": len(files), "metadata": metadata}


# --------------------------------------------------------------------------- create / list

def create(db: Database, execution: str, task: str, *, agent: str | None = None, repo_dir: str | None = None,
           message: str | None = None) -> dict:
    """Checkpoint the working tree of the repository at ``repo_dir`` (default: the current folder)."""
    ex = resolve.execution(db, execution)
    tk = resolve.task(db, ex, task)
    agent_id = resolve.agent(db, agent, execution_id=ex["execution_id"])["instance_id"] if agent else None
    repo = gitrepo.open_repo(repo_dir)
    cap = _capture(repo)
    return _record(db, repo, cap, execution_id=ex["execution_id"], task=tk, agent_id=agent_id,
                   message=message, kind="manual")


def list_checkpoints(db: Database, execution: str, task: str | None = None) -> list[dict]:
    """The execution's checkpoints, oldest first (ties by row id)."""
    ex = resolve.execution(db, execution)
    params: list[Any] = [ex["execution_id"]]
    where = "c.execution_id = ?"
    if task is not None:
        where += " AND c.task_id = ?"
        params.append(resolve.task(db, ex, task)["id"])
    rows = db.query(
        "SELECT c.id, c.execution_id, c.task_id, t.display_id AS task, c.instance_id, c.git_ref, c.created_at, "
        f"{db.sql.json_array_length('c.files_snapshot')} AS file_count, c.metadata "
        f"FROM checkpoints c LEFT JOIN tasks t ON t.id = c.task_id WHERE {where} ORDER BY c.created_at, c.id",
        params,
    )
    for r in rows:
        meta = _loads(r["metadata"])
        r["ref"] = gitrepo.checkpoint_ref(r["id"])
        r["kind"] = meta.get("kind", "manual")
        r["head"] = meta.get("head")
        r["branch"] = meta.get("branch")
        r["message"] = meta.get("message")
        r["repo"] = meta.get("repo_root")
    return rows


def _loads(text: str | None) -> dict:
    """A stored metadata object; {} when it is missing or malformed."""
    value = jsonstrict.stored(text, {})
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- restore

def _snapshot_entries(row: dict) -> dict[str, Entry]:
    try:
        files = jsonstrict.loads(row["files_snapshot"] or "[]", what="files_snapshot", max_chars=None)
        return {f["path"]: Entry(f["mode"], f["sha"]) for f in files}
    except (InvalidInput, KeyError, TypeError):
        raise GitError(f"checkpoint {row['id']} has an unreadable files_snapshot; it cannot be verified") from None


def _check_same_repository(repo: Repo, row: dict, meta: dict) -> None:
    recorded_root = meta.get("repo_root")
    if recorded_root and os.path.realpath(recorded_root) == str(repo.root):
        return
    if repo.has_commit(meta.get("first_commit")) or repo.has_commit(row["git_ref"]):
        return  # the same repository, moved or seen through another worktree / clone
    first = meta.get("first_commit")
    raise Conflict(f"checkpoint {row['id']} was taken in another repository ({recorded_root}"
                   f"{', first commit ' + first[:12] if first else ', no commits yet'}), not in {repo.root}; "
                   "pass --repo with the repository it was taken in")


def _plan(snap: dict[str, Entry], cur: dict[str, Entry]) -> list[dict]:
    changes = []
    for path, want in snap.items():
        if want.mode == GITLINK:
            continue  # submodules / nested repositories are left alone
        have = cur.get(path)
        if have is None:
            kind = "recreated"
        elif have.sha != want.sha or (have.mode == gitrepo.SYMLINK) != (want.mode == gitrepo.SYMLINK):
            kind = "modified"
        elif have.mode != want.mode:
            kind = "mode"
        else:
            continue
        changes.append({"path": path, "change": kind, "mode_now": have.mode if have else None, "mode_checkpoint": want.mode})
    for path, have in cur.items():
        if path not in snap and have.mode != GITLINK:
            changes.append({"path": path, "change": "removed", "mode_now": have.mode, "mode_checkpoint": None})
    changes.sort(key=lambda c: c["path"])
    return changes


def _walk_files(top: str) -> list[str]:
    """Every non-directory below ``top`` (symlinks are not followed), as absolute paths."""
    out, stack = [], [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    out.append(e.path)
    return out


def _check_in_the_way(root: Path, changes: list[dict]) -> None:
    """Refuse (before anything changes) when a file that no checkpoint holds — an ignored
    file or a nested repository — stands where the checkpoint needs a file or a folder."""
    removed = {c["path"] for c in changes if c["change"] == "removed"}
    for c in changes:
        if c["change"] == "removed":
            continue
        path = c["path"]
        parts = path.split("/")
        blocker = None
        for i in range(1, len(parts)):
            anc = "/".join(parts[:i])
            try:
                st = os.lstat(os.path.join(root, anc))
            except FileNotFoundError:
                break
            if stat.S_ISDIR(st.st_mode):
                continue
            if anc not in removed:
                blocker = anc
            break
        if blocker is None:
            st = gitrepo.lstat_inside(root, path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                for f in sorted(_walk_files(os.path.join(root, path))):
                    rel = os.path.relpath(f, root).replace(os.sep, "/")
                    if rel not in removed:
                        blocker = rel
                        break
        if blocker is not None:
            raise Conflict(f"cannot restore {path!r}: {blocker!r} is in the way and is in no checkpoint "
                           "(an ignored file or a nested repository); move it away and retry; nothing was changed")


def _prune_empty_parents(root: Path, rel: str) -> None:
    parts = rel.split("/")[:-1]
    while parts:
        try:
            os.rmdir(os.path.join(root, *parts))
        except OSError:
            return
        parts.pop()


def _remove_empty_tree(path: str) -> None:
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        os.rmdir(dirpath)


def _apply(repo: Repo, commit: str, changes: list[dict]) -> None:
    root = repo.root
    for c in changes:
        if c["change"] != "removed":
            continue
        st = gitrepo.lstat_inside(root, c["path"])
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(os.path.join(root, c["path"]))
            _prune_empty_parents(root, c["path"])
    writes = [c["path"] for c in changes if c["change"] != "removed"]
    for path in writes:
        st = gitrepo.lstat_inside(root, path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            _remove_empty_tree(os.path.join(root, path))  # only folders are left: checked before
    repo.checkout_paths(commit, writes)


def _verify(repo: Repo, commit: str, snap: dict[str, Entry], before: dict[str, Entry],
            inside=lambda p: True) -> tuple[list[str], list[str]]:
    """Re-hash the working tree (a fresh index seeded from the checkpoint, so every file is
    read again) and compare path by path with ``files_snapshot``: content, mode, symlinks."""
    with repo.temp_index(seed=commit) as idx:
        idx.add_all()
        now = idx.entries()
    problems: list[str] = []
    for path, want in sorted(snap.items()):
        if want.mode == GITLINK:
            continue
        have = now.get(path)
        if have is None:
            problems.append(f"{path!r} is missing")
        elif have.sha != want.sha:
            problems.append(f"{path!r} has other content ({have.sha[:12]}, expected {want.sha[:12]})")
        elif have.mode != want.mode:
            problems.append(f"{path!r} has mode {have.mode}, expected {want.mode}")
    kept = []
    for path, have in sorted(now.items()):
        if path in snap or have.mode == GITLINK or not inside(path):
            continue
        if path in before:
            problems.append(f"{path!r} is still there")
        else:
            kept.append(path)  # was ignored before the restore, so it was never ours to remove
    return problems, kept


def _within(paths: list[str] | None):
    """A predicate for 'this repository path is one of ``paths`` or below one of them'."""
    if not paths:
        return lambda p: True
    prefixes = [p.strip("/") for p in paths if p.strip("/")]
    return lambda p: any(p == q or p.startswith(q + "/") for q in prefixes)


def restore(db: Database, checkpoint: str, *, execution: str | None = None, repo_dir: str | None = None,
            dry_run: bool = False, reset_index: bool = False, paths: list[str] | None = None) -> dict:
    """Make the working tree match checkpoint ``checkpoint`` exactly, after checkpointing it first.

    ``paths`` limits the restore (and its verification) to those files and folders, so
    that a worker retrying one task does not undo what tasks running beside it wrote.
    The automatic pre-restore checkpoint still covers the whole tree."""
    row = resolve.checkpoint(db, checkpoint)
    cp_id = row["id"]
    if execution is not None:
        ex = resolve.execution(db, execution)
        if ex["execution_id"] != row["execution_id"]:
            raise Conflict(f"checkpoint {cp_id} belongs to execution {row['execution_id']}, not {ex['execution_id']} "
                           "(another lane); nothing was changed")
    repo = gitrepo.open_repo(repo_dir)
    meta = _loads(row["metadata"])
    _check_same_repository(repo, row, meta)
    elsewhere = _made_elsewhere(repo, row, meta)
    ref = gitrepo.checkpoint_ref(cp_id)
    target = repo.ref_target(ref)
    if target is None and not elsewhere:  # another host's checkpoint is pinned in its own clone
        raise GitError(f"checkpoint {cp_id} cannot be restored: its git ref {ref} is missing from {repo.root} "
                       "(deleted or pruned by hand)")
    if target is not None and target != row["git_ref"]:
        raise GitError(f"checkpoint {cp_id} cannot be restored: {ref} points at {target[:12]}, "
                       f"but the checkpoint recorded {row['git_ref'][:12]}")
    inside = _within(paths)
    snap = {p: e for p, e in _snapshot_entries(row).items() if inside(p)}
    task = db.one("SELECT id, display_id FROM tasks WHERE id = ?", (row["task_id"],))

    cap = _capture(repo, keep_paths=snap)
    current = {p: e for p, e in cap.entries.items() if inside(p)}
    changes = _plan(snap, current)
    _check_in_the_way(repo.root, changes)
    counts = {k: sum(1 for c in changes if c["change"] == k) for k in CHANGE_KINDS}
    result: dict[str, Any] = {
        "checkpoint": cp_id, "execution_id": row["execution_id"], "task_id": row["task_id"],
        "repo": str(repo.root), "git_ref": row["git_ref"], "dry_run": dry_run, "counts": counts, "paths": paths or None,
        "changes": [{**c, "path": _text(c["path"])} for c in changes],
    }
    if dry_run:
        return result

    pre = _record(db, repo, cap, execution_id=row["execution_id"], task=task, agent_id=None,
                  message=f"before restoring {cp_id}", kind="pre-restore", restore_of=cp_id)
    result["pre_restore_checkpoint"] = pre["id"]
    undo = f"the state before the restore is checkpoint {pre['id']}"
    try:
        _apply(repo, row["git_ref"], changes)
        if reset_index:
            repo.reset_index(meta.get("index_commit") or meta.get("head"))
        problems, kept = _verify(repo, row["git_ref"], snap, current, inside)
    except (OSError, GitError) as exc:
        _log_failure(db, row, _text(f"restore of {cp_id} failed: {exc}; {undo}"))
        raise GitError(f"restore of {cp_id} failed: {exc}; {undo}") from exc
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        _log_failure(db, row, _text(f"restore of {cp_id} did not verify: {shown}"),
                     {"problems": [_text(p) for p in problems[:100]]})
        raise GitError(f"restore of {cp_id} did not verify: {len(problems)} file(s) differ: {shown}; {undo}")
    result.update({"verified_files": sum(1 for e in snap.values() if e.mode != GITLINK), "kept": [_text(p) for p in kept],
                   "reset_index": reset_index})
    with db.write():
        execlog.append(db, row["execution_id"], "checkpoint_restored",
                       f"restored checkpoint {cp_id} ({counts['modified']} modified, {counts['mode']} mode, "
                       f"{counts['recreated']} recreated, {counts['removed']} removed); undo: {pre['id']}",
                       task_id=row["task_id"],
                       context={"checkpoint_id": cp_id, "git_ref": row["git_ref"], "pre_restore_checkpoint": pre["id"],
                                "counts": counts, "reset_index": reset_index, "kept": [_text(p) for p in kept[:100]],
                                "paths": paths or None,
                                "repo": str(repo.root)})
    return result


def _log_failure(db: Database, row: dict, message: str, context: dict | None = None) -> None:
    try:
        with db.write():
            execlog.append(db, row["execution_id"], "error", message, task_id=row["task_id"],
                           context={"checkpoint_id": row["id"], **(context or {})})
    except Exception:
        pass  # the GitError that follows is what the user must see


# --------------------------------------------------------------------------- deletion (for gc)

def delete_checkpoints(db: Database, checkpoint_ids: list[str], repo_dir: str | os.PathLike | None = None) -> dict:
    """Delete checkpoints: their refs first (in ``repo_dir``, else each one's recorded
    repository), then their rows in one short transaction.

    Refs first, so that an interrupted run leaves rows whose ref is gone (restore refuses
    them clearly, the next run deletes them) rather than refs nobody knows about.
    A repository that is gone or unusable does not stop the rows from being deleted;
    it is reported in ``ref_errors``.
    """
    if not checkpoint_ids:
        return {"rows": 0, "refs": 0, "deleted_refs": [], "ref_errors": []}
    marks = ",".join("?" for _ in checkpoint_ids)
    rows = db.query(f"SELECT id, metadata FROM checkpoints WHERE id IN ({marks})", list(checkpoint_ids))
    deleted_refs, errors = [], []
    repos: dict[str, Repo | GitError] = {}
    for r in rows:
        where = str(repo_dir) if repo_dir is not None else _loads(r["metadata"]).get("repo_root")
        if not where:
            errors.append({"id": r["id"], "error": "no repository recorded"})
            continue
        if where not in repos:
            try:
                repos[where] = gitrepo.open_repo(where)
            except GitError as exc:
                repos[where] = exc
        repo = repos[where]
        if isinstance(repo, GitError):
            errors.append({"id": r["id"], "error": repo.message})
            continue
        ref = gitrepo.checkpoint_ref(r["id"])
        try:
            if repo.delete_ref(ref):
                deleted_refs.append(ref)
        except GitError as exc:
            errors.append({"id": r["id"], "error": exc.message})
    with db.write():
        deleted = db.execute(f"DELETE FROM checkpoints WHERE id IN ({marks})", list(checkpoint_ids)).rowcount
    return {"rows": deleted, "refs": len(deleted_refs), "deleted_refs": deleted_refs, "ref_errors": errors}
