"""`buildctl doctor`: the invariant check of SPEC §8, as a product command.

Each check returns findings (human-readable strings); a healthy database has none.
The reliability tests run the same checks after every injected fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from buildctl import migrations
from buildctl.storage import Database


@dataclass
class Check:
    name: str
    description: str
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _integrity(db: Database) -> list[str]:
    rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    return [] if rows == ["ok"] else rows


def _foreign_keys(db: Database) -> list[str]:
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


def diagnose(db: Database, *, stale_after_s: float = 60) -> list[Check]:
    checks = [
        Check("integrity", "PRAGMA integrity_check"),
        Check("foreign_keys", "PRAGMA foreign_key_check"),
        Check("migrations", "every sql/ file applied and unchanged"),
    ]
    checks[0].findings = _integrity(db)
    checks[1].findings = _foreign_keys(db)
    checks[2].findings = _migrations(db)
    if checks[2].ok:  # the rest need the whole schema
        for name, description, fn in (
            ("counters", "run and wave counters equal a recount", _counters),
            ("orphan_assignments", "no assigned/running assignment without a live agent", _orphans),
            ("stale_agents", f"no agent silent for more than {stale_after_s:g}s", lambda d: _stale(d, stale_after_s)),
            ("unsettled_runs", "no run left running with nothing to run", _unsettled_runs),
        ):
            check = Check(name, description)
            check.findings = fn(db)
            checks.append(check)
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [{**asdict(c), "ok": c.ok} for c in checks]
