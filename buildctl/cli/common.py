"""Shared pieces of the Typer commands: the global --db, option types, opening the database."""

from __future__ import annotations

from typing import Annotated

import typer

from buildctl import storage


class State:
    #: Set by the root callback from --db; None means BUILDCTL_DB or the state folder.
    db_location: str | None = None


def open_db(*, create: bool = False, check_schema: bool = True) -> storage.Database:
    return storage.connect(State.db_location, create=create, check_schema=check_schema)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (stable keys, ISO-8601 UTC timestamps) instead of a table.")]


# --------------------------------------------------------------------------- completion of ids

def _complete(sql: str, incomplete: str) -> list[str]:
    """Ids from the database for shell completion; silent when there is no database."""
    try:
        db = storage.connect(State.db_location or storage.resolve_location(None))
    except Exception:
        return []
    try:
        return [r[0] for r in db.execute(sql, (incomplete, incomplete)).fetchall()]
    except Exception:
        return []
    finally:
        db.close()


def complete_execution(incomplete: str) -> list[str]:
    return _complete("SELECT execution_id FROM task_list_execution_runs WHERE substr(execution_id,1,length(?))=? "
                     "ORDER BY started_at DESC LIMIT 50", incomplete)


def complete_agent(incomplete: str) -> list[str]:
    return _complete("SELECT instance_id FROM build_agent_instances WHERE substr(instance_id,1,length(?))=? "
                     "ORDER BY spawned_at DESC LIMIT 50", incomplete)


def complete_list(incomplete: str) -> list[str]:
    return _complete("SELECT id FROM task_lists_v2 WHERE substr(id,1,length(?))=? ORDER BY created_at DESC LIMIT 50", incomplete)


def complete_checkpoint(incomplete: str) -> list[str]:
    return _complete("SELECT id FROM checkpoints WHERE substr(id,1,length(?))=? ORDER BY created_at DESC LIMIT 50", incomplete)


ExecArg = Annotated[str, typer.Argument(metavar="EXEC", help="Execution id (any unique prefix).", autocompletion=complete_execution)]
AgentArg = Annotated[str, typer.Argument(metavar="ID", help="Agent instance id (any unique prefix).", autocompletion=complete_agent)]
ListArg = Annotated[str, typer.Argument(metavar="LIST", help="Task list id (any unique prefix) or name.", autocompletion=complete_list)]
CheckpointArg = Annotated[str, typer.Argument(metavar="ID", help="Checkpoint id (any unique prefix).", autocompletion=complete_checkpoint)]
