"""A faster `migrated` for the agent/log/hot-path tests: `buildctl migrate` runs once per
session into a template file, and each test gets a copy (same schema, same bookkeeping).

Import it into a test module to override conftest's `migrated` there:
    from fastdb import migrated, migrated_template  # noqa: F401
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import pytest

from conftest import buildctl_executable


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory, request):
    import os

    path = tmp_path_factory.mktemp("template") / "buildctl.db"
    env = {**os.environ, "BUILDCTL_DB": str(path)}
    subprocess.run(buildctl_executable() + ["migrate"], env=env, check=True, capture_output=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture
def migrated(migrated_template, db_path):
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(migrated_template, db_path)
    return db_path
