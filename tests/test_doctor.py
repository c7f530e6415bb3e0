"""`buildctl doctor`: healthy database exits 0; corruptions are reported and exit 1."""

from __future__ import annotations

import json

import seed
from conftest import snapshot


def _seed_consistent_run(path):
    conn = seed.connect(path)
    ids = seed.seed_list(conn, tasks=("T-001", "T-002"))
    seed.seed_run(conn)
    seed.seed_wave(conn, wave_number=1, task_ids=[ids["T-001"], ids["T-002"]])
    return conn, ids


def test_healthy_database_exits_zero(cli, migrated):
    conn, _ = _seed_consistent_run(migrated)
    conn.close()
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"integrity", "foreign_keys", "migrations", "counters",
                                                      "orphan_assignments", "stale_agents"}


def test_hand_corrupted_counter_and_orphan_assignment_are_reported(cli, migrated):
    conn, ids = _seed_consistent_run(migrated)
    conn.execute("UPDATE task_list_execution_runs SET completed_tasks = 7 WHERE execution_id = 'ex_seed'")
    # An assignment running for an agent that has ended: nobody will ever finish it.
    seed.seed_agent(conn, "ag_gone", status="completed", heartbeat_ago_s=1)
    conn.execute("UPDATE wave_task_assignments SET status = 'running', instance_id = 'ag_gone' WHERE task_id = ?",
                 (ids["T-002"],))
    conn.close()
    before = snapshot(migrated)
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert any("completed_tasks is 7, recount says 0" in f for f in checks["counters"]["findings"])
    assert any("T-002" in f and "ag_gone is completed" in f for f in checks["orphan_assignments"]["findings"])
    assert checks["integrity"]["ok"] and checks["foreign_keys"]["ok"]
    assert snapshot(migrated) == before  # doctor only reads
    table = cli("doctor")
    assert table.returncode == 1 and "counters" in table.stdout


def test_pending_migration_is_reported(cli, db_path):
    from buildctl import migrations, storage

    db = storage.connect(str(db_path), create=True, check_schema=False)
    migrations.apply(db, upto="074_build_agent_instances.sql")
    db.close()
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert any("075_execution_runs.sql is not applied" in f for f in checks["migrations"]["findings"])


def test_broken_foreign_key_is_reported(cli, migrated):
    conn, _ = _seed_consistent_run(migrated)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO agent_heartbeats (instance_id, status) VALUES ('ag_nobody', 'running')")
    conn.close()
    r = cli("doctor", "--json")
    assert r.returncode == 1
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert any("agent_heartbeats" in f for f in checks["foreign_keys"]["findings"])
