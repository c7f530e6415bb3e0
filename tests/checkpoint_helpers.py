"""Real temporary git repositories for the checkpoint tests (no global git config is read)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path


def git_env(home: Path) -> dict:
    """What every git call of these tests runs with: no system/global config, a fixed identity."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.invalid",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@example.invalid",
    }


def git(repo: Path, *args: str, env: dict, input: bytes | None = None, check: bool = True) -> str:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    e.update(env)
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=e, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout.decode("utf-8", "surrogateescape")


def init_repo(path: Path, env: dict, files: dict[str, str] | None = None, commit: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main", env=env)
    for rel, text in (files or {}).items():
        write(path, rel, text)
    if commit and files:
        git(path, "add", "-A", env=env)
        git(path, "commit", "-q", "-m", "initial", env=env)
    return path


def write(root: Path, rel: str, text: str | bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink():
        p.unlink()
    if isinstance(text, str):
        text = text.encode("utf-8")
    p.write_bytes(text)


def chmod_x(root: Path, rel: str, on: bool = True) -> None:
    p = root / rel
    mode = p.stat().st_mode
    p.chmod(mode | 0o111 if on else mode & ~0o111)


def tree_state(root: Path, *, skip: set[str] | None = None) -> dict[str, tuple]:
    """Every file and symlink below ``root`` except .git: bytes and permission bits, or the link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".git" or rel_dir.startswith(".git" + os.sep):
            dirnames[:] = []
            continue
        if ".git" in dirnames and rel_dir == ".":
            dirnames.remove(".git")
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name)).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            else:
                with open(full, "rb") as fh:
                    out[rel] = ("file", fh.read(), stat.S_IMODE(st.st_mode))
    if skip:
        out = {k: v for k, v in out.items() if k not in skip}
    return out


def ignored(root: Path, env: dict) -> set[str]:
    out = git(root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", env=env)
    return {p for p in out.split("\0") if p}


def repo_state(root: Path, env: dict) -> dict:
    """Everything a checkpoint operation must not change by accident."""
    index = root / ".git" / "index"
    return {
        "files": tree_state(root),
        "head": git(root, "rev-parse", "--verify", "-q", "HEAD", env=env, check=False).strip(),
        "symbolic": git(root, "symbolic-ref", "-q", "HEAD", env=env, check=False).strip(),
        "index": index.read_bytes() if index.exists() else None,
        "stash": git(root, "stash", "list", env=env),
        "refs": git(root, "for-each-ref", env=env),
    }
