"""`buildctl checkpoint …`: git checkpoints (create, list, restore)."""

from __future__ import annotations

from buildctl.cli.grammar import Command, Param
from buildctl.cli.params import EXEC, JSON

GROUP = ("checkpoint",
         "Git checkpoints: snapshot a working tree without touching HEAD, the index or any file; restore it exactly.")

GIT_REPO = Param("repo", ("--repo",), metavar="DIR", complete="path",
                 help="A folder inside the git working tree (default: the current folder).")


def _run_create(db, v: dict) -> str:
    from buildctl import checkpoints

    return checkpoints.create(db, v["execution"], v["task"], agent=v["agent"], repo_dir=v["repo"],
                              message=v["message"])["id"]


def _run_list(db, v: dict) -> None:
    from buildctl import checkpoints, render

    rows = checkpoints.list_checkpoints(db, v["execution"], v["task"])
    render.emit(rows, render.CHECKPOINT_COLUMNS, as_json=v["as_json"], empty="no checkpoints")


def _run_restore(db, v: dict) -> str | None:
    from buildctl import checkpoints, render

    result = checkpoints.restore(db, v["checkpoint"], execution=v["exec"], repo_dir=v["repo"], dry_run=v["dry_run"],
                                 reset_index=v["reset_index"], paths=v["path"] or None)
    if v["as_json"]:
        render.print_json(result)
        return None
    counts = result["counts"]
    summary = ", ".join(f"{counts[k]} {k}" for k in checkpoints.CHANGE_KINDS)
    if v["dry_run"]:
        if result["changes"]:
            render.show(render.restore_changes(result))
        render.info(f"dry run: restoring {result['checkpoint']} would change {len(result['changes'])} file(s) "
                    f"({summary}); nothing was changed")
        return None
    render.info(f"restored {result['checkpoint']} in {result['repo']}: {summary}; "
                f"verified {result['verified_files']} file(s)")
    if result["kept"]:
        render.info(f"kept {len(result['kept'])} file(s) that were ignored before the restore: "
                    + ", ".join(repr(p) for p in result["kept"][:5]) + (", …" if len(result["kept"]) > 5 else ""))
    render.info(f"undo: buildctl checkpoint restore {result['pre_restore_checkpoint']}")
    return result["pre_restore_checkpoint"]


CHECKPOINT_CREATE = Command(
    ("checkpoint", "create"),
    help=("Snapshot the working tree into a commit pinned at refs/buildctl/checkpoints/ID; print the id. The "
          "snapshot holds tracked files and untracked files that are not ignored. HEAD, the index, the stash and "
          "every file stay exactly as they are."),
    short_help="Snapshot the working tree into a pinned commit; print the checkpoint id.",
    params=(
        EXEC,
        Param("task", ("--task",), required=True, metavar="T", complete="task",
              help="Task of the execution's list: display id (T-001) or task id."),
        Param("agent", ("--agent",), metavar="ID", complete="agent",
              help="Agent instance taking the checkpoint (any unique prefix; must belong to EXEC)."),
        GIT_REPO,
        Param("message", ("--message", "-m"), metavar="M", help="A note stored with the checkpoint."),
    ),
    runner=_run_create,
)

CHECKPOINT_LIST = Command(
    ("checkpoint", "list"),
    help="An execution's checkpoints, oldest first.",
    params=(EXEC, Param("task", ("--task",), metavar="T", complete="task",
                        help="Only this task's checkpoints (T-001 or task id)."), JSON),
    runner=_run_list,
)

CHECKPOINT_RESTORE = Command(
    ("checkpoint", "restore"),
    help=("Make the working tree match a checkpoint exactly; print the id of the automatic undo checkpoint. "
          "First the current state is checkpointed automatically (its id goes to stdout: restore it to undo); "
          "then changed files are restored, deleted ones recreated, files created since removed, and every file "
          "is verified (exit 8 on a mismatch). Ignored files are left alone; HEAD and the index stay unless "
          "--reset-index."),
    short_help="Make the working tree match a checkpoint exactly (undoable).",
    params=(
        Param("checkpoint", metavar="CHECKPOINT", complete="checkpoint", help="Checkpoint id (any unique prefix)."),
        Param("exec", ("--exec",), metavar="EXEC", complete="execution",
              help="The lane restoring: refuse (exit 5) a checkpoint of another execution."),
        GIT_REPO,
        Param("dry_run", ("--dry-run",), type="bool",
              help="List what would change (modified, mode, recreated, removed); change nothing."),
        Param("reset_index", ("--reset-index",), type="bool",
              help="Also put the index back as it was at the checkpoint (default: HEAD and the index stay)."),
        Param("path", ("--path",), metavar="PATH", multiple=True, complete="path",
              help="Restore only this file or folder (repeatable); the rest of the tree is left as it is."),
        JSON,
    ),
    runner=_run_restore,
)

COMMANDS = (CHECKPOINT_CREATE, CHECKPOINT_LIST, CHECKPOINT_RESTORE)
