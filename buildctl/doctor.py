"""`buildctl doctor`: the invariant check, as a product command.

Each check returns findings (human-readable strings); a healthy database has none.
The reliability tests run the same checks after every injected fault.

Doctor is for damaged databases too: every check runs guarded, and a check that
cannot run (a file that is not a database, a page overwritten) is itself a finding,
so the report lists what is wrong instead of stopping at the first database error.
Open the file with ``storage.open_existing`` (no WAL switch, no schema check), so
that even a file that is not a database at all reaches the checks.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field

from buildctl import jsonstrict, migrations, schema
from buildctl.errors import BuildctlError
from buildctl.storage import Database

#: Every column that stores JSON text: (table, the column naming a row, JSON columns).
STORED_JSON = (
    ("task_execution_log", "id", ("context",)),
    ("build_agent_instances", "instance_id", ("config", "error_context")),
    ("checkpoints", "id", ("files_snapshot", "metadata")),
    ("parallelism_analysis", "id", ("conflict_details",)),
    ("grouping_suggestions", "id", ("suggested_tasks",)),
)
#: Malformed rows listed one by one per column; the rest are counted.
LISTED_PER_COLUMN = 20


@dataclass
class Check:
    name: str
    description: str
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _integrity(db: Database) -> list[str]:
    if db.sql.name == "postgres":
        return []  # the server guards its own pages (WAL, checksums); nothing to ask it from here
    rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    return [] if rows == ["ok"] else rows


def _foreign_keys(db: Database) -> list[str]:
    if db.sql.name == "postgres":
        return []  # enforced on every write, never deferred or switched off
    out = []
    for table, rowid, parent, _fk in db.execute("PRAGMA foreign_key_check").fetchall():
        out.append(f"{table} row {rowid} points to a missing {parent} row")
    return out


def _migrations(db: Database) -> list[str]:
    out = []
    for s in migrations.status(db):
        if s.state == "pending":
            out.append(f"{s.name} is not applied (run `buildctl migrate`)")
        elif s.state == "changed":
            out.append(f"{s.name} has changed since it was applied")
    return out


def _counters(db: Database) -> list[str]:
    from buildctl import assignments

    out = []
    for (execution_id,) in db.execute("SELECT execution_id FROM task_list_execution_runs ORDER BY execution_id").fetchall():
        rc = assignments.recount(db, execution_id)
        if rc["ok"]:
            continue
        stored, recounted = rc["stored"], rc["recounted"]
        for key, value in stored["run"].items():
            if recounted["run"].get(key) != value:
                out.append(f"run {execution_id}: {key} is {value}, recount says {recounted['run'].get(key)}")
        for wave, counts in stored["waves"].items():
            for key, value in counts.items():
                re_value = recounted["waves"].get(wave, {}).get(key)
                if re_value != value:
                    out.append(f"run {execution_id} wave {wave}: {key} is {value}, recount says {re_value}")
    return out


def _orphans(db: Database) -> list[str]:
    rows = db.query(
        """
        SELECT a.id, a.status, a.instance_id, t.display_id, w.execution_id, b.status AS agent_status
        FROM wave_task_assignments a
        JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
        JOIN tasks t ON t.id = a.task_id
        LEFT JOIN build_agent_instances b ON b.instance_id = a.instance_id
        WHERE a.status IN ('assigned', 'running')
          AND (b.instance_id IS NULL OR b.status NOT IN ('initializing', 'running', 'idle'))
        ORDER BY a.id
        """
    )
    return [
        f"assignment {r['id']} ({r['display_id']}, run {r['execution_id']}) is {r['status']} but its agent "
        + (f"{r['instance_id']} is {r['agent_status']}" if r["agent_status"] else "is missing")
        for r in rows
    ]


def _stale(db: Database, threshold_s: float) -> list[str]:
    from buildctl import agents

    return [
        f"agent {r['instance_id']} ({r['status']}, run {r['execution_id']}) silent for {r['seconds_since_heartbeat']}s"
        for r in agents.stale(db, threshold_s)
    ]


def _malformed_json(db: Database) -> list[str]:
    """Every stored JSON text that is not strict JSON (NaN written by an old version, garbage
    written by hand): readers show such a value raw; this names table, row and column."""
    out = []
    for table, key, columns in STORED_JSON:
        for column in columns:
            bad = 0
            # Streamed: the log may hold millions of rows; each is parsed once, in Python,
            # because strictness (1e999, a duplicate key, depth) is more than the engine's json_valid.
            cur = db.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {key}")
            for row_id, text in cur:
                reason = jsonstrict.problem(text)
                if reason is None:
                    continue
                bad += 1
                if bad <= LISTED_PER_COLUMN:
                    out.append(f"{table} row {row_id}: {column} is not valid JSON ({reason})")
            if bad > LISTED_PER_COLUMN:
                out.append(f"{table}: {bad - LISTED_PER_COLUMN} more rows with a {column} that is not valid JSON")
    return out


def _unsettled_runs(db: Database) -> list[str]:
    rows = db.query(
        """
        SELECT r.execution_id, r.status FROM task_list_execution_runs r
        WHERE r.status IN ('pending', 'running')
          AND EXISTS (SELECT 1 FROM parallel_execution_waves w WHERE w.execution_id = r.execution_id)
          AND NOT EXISTS (SELECT 1 FROM wave_task_assignments a JOIN parallel_execution_waves w ON w.wave_id = a.wave_id
                          WHERE w.execution_id = r.execution_id AND a.status IN ('pending', 'assigned', 'running'))
        """
    )
    return [f"run {r['execution_id']} is {r['status']} but none of its tasks is left to run" for r in rows]


def _run(db: Database, name: str, description: str, fn) -> Check:
    """One check; a database error while it runs (a damaged file) becomes its finding."""
    check = Check(name, description)
    try:
        check.findings = fn(db)
    except (sqlite3.Error, BuildctlError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        check.findings = [f"the check could not run: {why}"]
    return check


def diagnose(db: Database, *, stale_after_s: float = 60) -> list[Check]:
    postgres = db.sql.name == "postgres"
    checks = [
        _run(db, "integrity", "kept by the PostgreSQL server" if postgres else "PRAGMA integrity_check", _integrity),
        _run(db, "foreign_keys", "enforced by the PostgreSQL server" if postgres else "PRAGMA foreign_key_check",
             _foreign_keys),
        _run(db, "migrations", "every sql/ file applied and unchanged", _migrations),
    ]
    if checks[-1].ok:  # the rest need the whole schema
        for name, description, fn in (
            ("schema", "every table, column and index the migrations create is there", schema.missing),
            ("counters", "run and wave counters equal a recount", _counters),
            ("orphan_assignments", "no assigned/running assignment without a live agent", _orphans),
            ("stale_agents", f"no agent silent for more than {stale_after_s:g}s", lambda d: _stale(d, stale_after_s)),
            ("unsettled_runs", "no run left running with nothing to run", _unsettled_runs),
            ("malformed_json", "every stored JSON text is strict JSON", _malformed_json),
        ):
            checks.append(_run(db, name, description, fn))
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [{**asdict(c), "ok": c.ok} for c in checks]
