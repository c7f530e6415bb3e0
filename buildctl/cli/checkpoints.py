"""`buildctl checkpoint …`: git checkpoints (create, list, restore)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from buildctl import render
from buildctl.cli.common import CheckpointArg, ExecArg, JsonOption, complete_agent, complete_execution, open_db

app = typer.Typer(
    help="Git checkpoints: snapshot a working tree without touching HEAD, the index or any file; restore it exactly.",
    no_args_is_help=True,
)

RepoOption = Annotated[Optional[str], typer.Option(
    "--repo", metavar="DIR", help="A folder inside the git working tree (default: the current folder).")]


@app.command("create")
def create(
    execution: ExecArg,
    task: Annotated[str, typer.Option("--task", metavar="T", help="Task of the execution's list: display id (T-001) or task id.")],
    agent: Annotated[Optional[str], typer.Option(
        "--agent", metavar="ID", help="Agent instance taking the checkpoint (any unique prefix; must belong to EXEC).",
        autocompletion=complete_agent)] = None,
    repo: RepoOption = None,
    message: Annotated[Optional[str], typer.Option("--message", "-m", metavar="M", help="A note stored with the checkpoint.")] = None,
) -> None:
    """Snapshot the working tree into a commit pinned at refs/buildctl/checkpoints/ID; print the id.

    The snapshot holds tracked files and untracked files that are not ignored. HEAD, the index,
    the stash and every file stay exactly as they are."""
    from buildctl import checkpoints

    with open_db() as db:
        result = checkpoints.create(db, execution, task, agent=agent, repo_dir=repo, message=message)
    render.print_id(result["id"])


def _change_rows(result: dict) -> list[dict]:
    return [{"change": c["change"], "path": c["path"],
             "mode": c["mode_checkpoint"] if c["change"] != "removed" else c["mode_now"]} for c in result["changes"]]


@app.command("restore")
def restore(
    checkpoint: CheckpointArg,
    execution: Annotated[Optional[str], typer.Option(
        "--exec", metavar="EXEC", help="The lane restoring: refuse (exit 5) a checkpoint of another execution.",
        autocompletion=complete_execution)] = None,
    repo: RepoOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change (modified, mode, recreated, removed); change nothing.")] = False,
    reset_index: Annotated[bool, typer.Option(
        "--reset-index", help="Also put the index back as it was at the checkpoint (default: HEAD and the index stay).")] = False,
    path: Annotated[Optional[list[str]], typer.Option(
        "--path", metavar="PATH", help="Restore only this file or folder (repeatable); the rest of the tree is left as it is.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make the working tree match a checkpoint exactly; print the id of the automatic undo checkpoint.

    First the current state is checkpointed automatically (its id goes to stdout: restore it to undo);
    then changed files are restored, deleted ones recreated, files created since removed, and every
    file is verified (exit 8 on a mismatch). Ignored files are left alone; HEAD and the index stay
    unless --reset-index."""
    from buildctl import checkpoints

    with open_db() as db:
        result = checkpoints.restore(db, checkpoint, execution=execution, repo_dir=repo, dry_run=dry_run,
                                     reset_index=reset_index, paths=path)
    counts = result["counts"]
    summary = ", ".join(f"{counts[k]} {k}" for k in checkpoints.CHANGE_KINDS)
    if as_json:
        render.print_json(result)
        return
    if dry_run:
        if result["changes"]:
            render.emit(_change_rows(result), [
                render.Column("change", "change"),
                render.Column("path", "path"),
                render.Column("mode", "mode"),
            ], as_json=False)
        render.info(f"dry run: restoring {result['checkpoint']} would change {len(result['changes'])} file(s) "
                    f"({summary}); nothing was changed")
        return
    render.print_id(result["pre_restore_checkpoint"])
    render.info(f"restored {result['checkpoint']} in {result['repo']}: {summary}; "
                f"verified {result['verified_files']} file(s)")
    if result["kept"]:
        render.info(f"kept {len(result['kept'])} file(s) that were ignored before the restore: "
                    + ", ".join(repr(p) for p in result["kept"][:5]) + (", …" if len(result["kept"]) > 5 else ""))
    render.info(f"undo: buildctl checkpoint restore {result['pre_restore_checkpoint']}")


def register(root: typer.Typer) -> None:
    from buildctl import readspec
    from buildctl.cli import hot

    hot.register(app, readspec.CHECKPOINT_LIST)
    root.add_typer(app, name="checkpoint")
