"""Raw-SQL fixture data for tests that need runs, waves, agents or log rows without
going through the commands that create them (those commands have their own tests).

Engine-neutral: every function takes a raw sqlite3 connection or a buildctl
``storage.Database`` (either engine), and writes timestamps with the connection's
dialect, from the database clock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from buildctl.dialect import SQLITE


def connect(where: Path | str):
    """A connection for raw seeding, each statement committing on its own: sqlite3 for a
    SQLite file, buildctl's own Database for a postgresql:// location."""
    from buildctl import storage

    if storage.is_postgres(str(where)):
        return storage.connect(str(where), check_schema=False)
    conn = sqlite3.connect(where, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def dialect(conn):
    """The dialect of ``conn``: a storage.Database knows its own; raw sqlite3 is SQLite."""
    return getattr(conn, "sql", SQLITE)


def seed_list(conn, list_id="tl_seed", tasks=("T-001", "T-002", "T-003"), max_parallel=3) -> dict[str, str]:
    """A task list with the given display ids; returns display id -> task id."""
    conn.execute("INSERT INTO task_lists_v2 (id, name, status, max_parallel_agents) VALUES (?, ?, 'ready', ?)",
                 (list_id, f"list {list_id}", max_parallel))
    ids = {}
    for pos, display in enumerate(tasks):
        tid = f"tk_{list_id}_{display}"
        conn.execute("INSERT INTO tasks (id, display_id, task_list_id, title, command, position) VALUES (?, ?, ?, ?, ?, ?)",
                     (tid, display, list_id, f"task {display}", "true", pos))
        ids[display] = tid
    return ids


def seed_run(conn, execution_id="ex_seed", list_id="tl_seed", status="running", run_number=1,
             completed_at=None) -> str:
    """``completed_at``: UTC text ('2026-01-01 00:00:00') or None."""
    d = dialect(conn)
    conn.execute(
        "INSERT INTO task_list_execution_runs (execution_id, task_list_id, run_number, status, created_at, started_at, "
        f"completed_at, triggered_by) VALUES (?, ?, ?, ?, {d.now}, {d.now}, {d.utc('?')}, 'user')",
        (execution_id, list_id, run_number, status, completed_at),
    )
    return execution_id


def seed_wave(conn, execution_id="ex_seed", wave_number=1, task_ids=(), status="pending") -> str:
    wave_id = f"wv_{execution_id}_{wave_number}"
    conn.execute("INSERT INTO parallel_execution_waves (wave_id, execution_id, wave_number, status, task_count) VALUES (?, ?, ?, ?, ?)",
                 (wave_id, execution_id, wave_number, status, len(task_ids)))
    for tid in task_ids:
        conn.execute("INSERT INTO wave_task_assignments (wave_id, task_id, status) VALUES (?, ?, 'pending')", (wave_id, tid))
    conn.execute("UPDATE task_list_execution_runs SET total_tasks = total_tasks + ? WHERE execution_id = ?",
                 (len(task_ids), execution_id))
    return wave_id


def seed_agent(conn, instance_id="ag_seed", execution_id="ex_seed", status="running", wave_number=1,
               spawned_ago_s=0, heartbeat_ago_s=None) -> str:
    d = dialect(conn)
    heartbeat = "NULL" if heartbeat_ago_s is None else d.ago("?")
    params = [instance_id, execution_id, wave_number, status, f"-{spawned_ago_s} seconds"]
    if heartbeat_ago_s is not None:
        params.append(f"-{heartbeat_ago_s} seconds")
    conn.execute(
        "INSERT INTO build_agent_instances (instance_id, execution_id, wave_number, status, spawned_at, last_heartbeat, config) "
        f"VALUES (?, ?, ?, ?, {d.ago('?')}, {heartbeat}, ?)",
        (*params, '{"maxRetries": 3}'),
    )
    return instance_id


def without_foreign_keys(conn, write) -> None:
    """Call ``write()`` with ``conn``'s foreign keys unchecked, to make the broken rows only a
    hand-edited database holds (SQLite's PRAGMA; on PostgreSQL, the superuser's
    session_replication_role, which turns off the triggers that check them)."""
    if dialect(conn).name == "sqlite":
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            write()
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
        return
    conn.execute("SET session_replication_role = replica")
    try:
        write()
    finally:
        conn.execute("RESET session_replication_role")


def query(where, sql: str, params=()) -> list[tuple]:
    """Rows of one statement, as tuples, on a connection of its own (either engine)."""
    conn = connect(where)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def rows(where, sql: str, params=()) -> list[dict]:
    """Rows of one statement, as dicts, on a connection of its own (either engine)."""
    conn = connect(where)
    try:
        cur = conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def scalar(where, sql: str, params=()):
    found = query(where, sql, params)
    return found[0][0] if found else None
