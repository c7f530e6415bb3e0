"""Git plumbing for checkpoints: the real `git` command, NUL-separated output everywhere.

Nothing here touches HEAD, the real index, the stash or a file of the working tree
unless a function says so (``checkout_paths``, ``remove_paths``, ``reset_index``).
Snapshots are built in a temporary index file (``GIT_INDEX_FILE``) so that the
user's staging area is never disturbed.

Paths are ``str`` decoded with ``os.fsdecode`` (UTF-8, surrogateescape), so names
that are not valid UTF-8 survive the round trip to git and to the file system.
Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from buildctl.errors import GitError

#: Variables that would point git somewhere else than the repository we were given.
_STRIP_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_NAMESPACE")

#: Settings for commands on a temporary index: no shared index files, no untracked
#: cache or fsmonitor state written on the user's behalf.
_TMP_INDEX_CONFIG = ("-c", "core.splitIndex=false", "-c", "core.untrackedCache=false", "-c", "core.fsmonitor=false")

REF_PREFIX = "refs/buildctl/checkpoints/"

GITLINK = "160000"
SYMLINK = "120000"


@dataclass(frozen=True)
class Entry:
    """One file of a snapshot: git mode (``100644``, ``100755``, ``120000``, ``160000``) and object id."""

    mode: str
    sha: str


def checkpoint_ref(checkpoint_id: str) -> str:
    return REF_PREFIX + checkpoint_id


def _base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    return env


def _git_message(stderr: bytes) -> str:
    lines = [l.strip() for l in os.fsdecode(stderr).splitlines() if l.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "no message"


def _run(cmd: list[str], *, env: dict, input: bytes | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, input=input, capture_output=True, env=env, cwd=cwd)
    except FileNotFoundError as exc:
        raise GitError("git is not installed (the `git` command was not found on PATH)") from exc


class Repo:
    """A git working tree, found from any folder inside it."""

    def __init__(self, root: Path, git_dir: Path):
        self.root = root
        self.git_dir = git_dir
        self._env = _base_env()
        self._identity_checked = False

    # ------------------------------------------------------------------ running git
    def git(self, *args: str, input: bytes | None = None, env: dict | None = None, check: bool = True,
            config: tuple[str, ...] = ()) -> bytes | None:
        """stdout of ``git -C ROOT ARGS``; a failure raises GitError, or returns None when not ``check``."""
        e = self._env if env is None else {**self._env, **env}
        p = _run(["git", *config, "-C", str(self.root), *args], env=e, input=input)
        if p.returncode != 0:
            if check:
                raise GitError(f"git {args[0]} failed in {self.root}: {_git_message(p.stderr)}")
            return None
        return p.stdout

    def ok(self, *args: str) -> bool:
        return self.git(*args, check=False) is not None

    def text(self, *args: str, check: bool = True) -> str | None:
        out = self.git(*args, check=check)
        return None if out is None else os.fsdecode(out).strip()

    # ------------------------------------------------------------------ facts
    def head(self) -> str | None:
        """HEAD's commit, or None in a repository with no commits yet."""
        return self.text("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False) or None

    def branch(self) -> str | None:
        """The checked-out branch (also on an unborn branch), or None when HEAD is detached."""
        return self.text("symbolic-ref", "-q", "--short", "HEAD", check=False) or None

    def first_commit(self) -> str | None:
        """The oldest root commit reachable from HEAD (identifies the repository across moves and clones)."""
        if self.head() is None:
            return None
        out = self.text("rev-list", "--max-parents=0", "HEAD", check=False)
        return out.split()[-1] if out else None

    def has_commit(self, sha: str | None) -> bool:
        return bool(sha) and self.ok("cat-file", "-e", f"{sha}^{{commit}}")

    def ref_target(self, ref: str) -> str | None:
        return self.text("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False) or None

    def real_index_path(self) -> Path:
        p = Path(self.text("rev-parse", "--git-path", "index"))
        return p if p.is_absolute() else self.root / p

    # ------------------------------------------------------------------ identity
    def _ensure_identity(self) -> None:
        """commit-tree needs a name and email; agents on fresh machines often have none."""
        if self._identity_checked:
            return
        self._identity_checked = True
        for var, name_key, email_key in (("GIT_AUTHOR_IDENT", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"),
                                         ("GIT_COMMITTER_IDENT", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")):
            if not self.ok("var", var):
                self._env.setdefault(name_key, "buildctl")
                self._env.setdefault(email_key, "buildctl@localhost")

    # ------------------------------------------------------------------ objects and refs
    def commit_tree(self, tree: str, parents: Iterable[str], message: str) -> str:
        self._ensure_identity()
        args = ["commit-tree", "--no-gpg-sign", tree]
        for p in parents:
            args += ["-p", p]
        return os.fsdecode(self.git(*args, input=message.encode("utf-8"))).strip()

    def create_ref(self, ref: str, sha: str, reason: str) -> None:
        """Create ``ref`` at ``sha``; refuses to overwrite an existing ref."""
        self.git("update-ref", "-m", reason, "--no-deref", ref, sha, "")

    def delete_ref(self, ref: str, expected: str | None = None) -> bool:
        """Delete ``ref`` (only while it still points at ``expected``, when given); False when it did not exist."""
        if not self.ok("show-ref", "--verify", "-q", ref):
            return False
        self.git("update-ref", "--no-deref", "-d", ref, *([expected] if expected else []))
        return True

    def ls_tree(self, commit: str) -> dict[str, Entry]:
        # "<mode> <type> <sha>\t<path>"
        return _parse_entries(self.git("ls-tree", "-r", "-z", "--full-tree", commit), sha_field=2)

    # ------------------------------------------------------------------ temporary index
    @contextmanager
    def temp_index(self, seed: str | None = "real") -> Iterator["TempIndex"]:
        """A private index file. ``seed``: ``"real"`` (a copy of the user's index, or HEAD's
        tree when there is none), a commit/tree to read, or None for an empty index."""
        tmpdir = tempfile.mkdtemp(prefix="buildctl-index-")
        idx = TempIndex(self, os.path.join(tmpdir, "index"))
        try:
            if seed == "real":
                real = self.real_index_path()
                if real.is_file():
                    shutil.copyfile(real, idx.path)
                    idx.clear_trust_bits()
                elif self.head() is not None:
                    idx.git("read-tree", "HEAD")
            elif seed:
                idx.git("read-tree", seed)
            yield idx
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    # ------------------------------------------------------------------ the working tree
    def checkout_paths(self, commit: str, paths: list[str]) -> None:
        """Write ``paths`` from ``commit`` into the working tree (content, mode, symlinks)."""
        if not paths:
            return
        with self.temp_index(seed=commit) as idx:
            idx.git("checkout-index", "-f", "-z", "--stdin", input=_nul(paths))

    def reset_index(self, tree_ish: str | None) -> None:
        """Set the user's real index to ``tree_ish`` (empty when None), keeping the working tree."""
        if tree_ish:
            self.git("read-tree", tree_ish)
        else:
            self.git("read-tree", "--empty")
        self.git("update-index", "-q", "--refresh", check=False)


class TempIndex:
    def __init__(self, repo: Repo, path: str):
        self.repo = repo
        self.path = path

    def git(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes | None:
        return self.repo.git(*args, input=input, check=check, env={"GIT_INDEX_FILE": self.path},
                             config=_TMP_INDEX_CONFIG)

    def clear_trust_bits(self) -> None:
        """Drop assume-unchanged and skip-worktree marks copied from the user's index, so that
        ``add -A`` reads those files too (a snapshot must hold what is on disk)."""
        assumed, skipped = [], []
        for rec in (self.git("ls-files", "-v", "-z") or b"").split(b"\0"):
            if len(rec) < 3:
                continue
            tag, path = rec[:1], os.fsdecode(rec[2:])
            if tag.islower():
                assumed.append(path)
            if tag in (b"S", b"s"):
                skipped.append(path)
        if assumed:
            self.git("update-index", "--no-assume-unchanged", "-z", "--stdin", input=_nul(assumed))
        if skipped:
            self.git("update-index", "--no-skip-worktree", "-z", "--stdin", input=_nul(skipped))

    def add_all(self) -> None:
        """Stage every tracked and untracked-not-ignored file (``git add -A``) into this index."""
        self.git("add", "-A")

    def add_force(self, paths: list[str]) -> None:
        """Stage ``paths`` even when ignored (literal names, NUL-separated)."""
        if paths:
            self.repo.git("add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul", input=_nul(paths),
                          env={"GIT_INDEX_FILE": self.path, "GIT_LITERAL_PATHSPECS": "1"}, config=_TMP_INDEX_CONFIG)

    def write_tree(self, check: bool = True) -> str | None:
        """The tree of this index; None (when not ``check``) if it cannot be written, e.g. unmerged entries."""
        out = self.git("write-tree", check=check)
        return None if out is None else os.fsdecode(out).strip()

    def entries(self) -> dict[str, Entry]:
        """Stage-0 entries of this index (``git ls-files -s -z``)."""
        # "<mode> <sha> <stage>\t<path>"
        return _parse_entries(self.git("ls-files", "-s", "-z"), sha_field=1)


def _parse_entries(out: bytes, sha_field: int) -> dict[str, Entry]:
    """NUL-separated `<fields>\t<path>` records (ls-tree, ls-files -s) -> path: Entry(mode, sha)."""
    entries: dict[str, Entry] = {}
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        fields = meta.decode().split(" ")
        entries[os.fsdecode(path)] = Entry(fields[0], fields[sha_field])
    return entries


def _nul(paths: Iterable[str]) -> bytes:
    return b"".join(os.fsencode(p) + b"\0" for p in paths)


# ---------------------------------------------------------------------- opening

def open_repo(directory: str | os.PathLike | None) -> Repo:
    """The working tree containing ``directory`` (default: the current folder)."""
    d = Path(directory if directory not in (None, "") else ".").expanduser()
    if not d.exists():
        raise GitError(f"not a git repository: {d} does not exist")
    if not d.is_dir():
        raise GitError(f"not a git repository: {d} is not a directory")
    env = _base_env()
    p = _run(["git", "-C", str(d), "rev-parse", "--is-inside-work-tree"], env=env)
    if p.returncode != 0:
        raise GitError(f"not a git repository: {d.resolve()}")
    if p.stdout.strip() != b"true":
        raise GitError(f"not a git working tree: {d.resolve()} (a .git folder or a bare repository)")
    p = _run(["git", "-C", str(d), "rev-parse", "--show-toplevel", "--absolute-git-dir"], env=env)
    if p.returncode != 0:
        raise GitError(f"not a git repository: {d.resolve()}: {_git_message(p.stderr)}")
    root, git_dir = os.fsdecode(p.stdout).splitlines()[:2]
    return Repo(Path(os.path.realpath(root)), Path(git_dir))


# ---------------------------------------------------------------------- file system helpers

def lstat_inside(root: Path, rel: str) -> os.stat_result | None:
    """lstat of ``root/rel`` when every parent folder is a real folder (not a symlink, not
    a file); None when the path does not exist as such."""
    parts = rel.split("/")
    cur = str(root)
    for part in parts[:-1]:
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
    try:
        return os.lstat(os.path.join(cur, parts[-1]))
    except (FileNotFoundError, NotADirectoryError):
        return None
