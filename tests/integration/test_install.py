"""The wheel, installed into a fresh virtualenv (not the editable checkout), migrates a database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys
from pathlib import Path
import pgqueue
from pgqueue import migrate

dsn = sys.argv[1]
with pgqueue.App(dsn) as app:
    job_id = app.enqueue("installed", {"ok": True})
    data = app.get_job(job_id).data
print(json.dumps({
    "package": str(Path(pgqueue.__file__).resolve().parent),
    "migrations": str(migrate.migrations_dir().resolve()),
    "data": data,
}))
"""


def run(*args: Any, cwd: Path, timeout: float = 240) -> str:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(300)
def test_wheel_installs_into_a_fresh_venv_and_migrates(empty_dsn: str, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, ROOT, cwd=tmp_path)
    (wheel,) = wheels.glob("pgqueue-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "pgqueue/migrations/env.py",
        "pgqueue/migrations/script.py.mako",
        "pgqueue/migrations/versions/0001_initial.py",
        "pgqueue/migrations/versions/0001_initial.upgrade.sql",
        "pgqueue/migrations/versions/0001_initial.downgrade.sql",
    } <= names
    assert not any(name.startswith("pgqueue/_migrations/") for name in names)
    assert "pgqueue/db/queries.sql" in names

    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    # Run from outside the checkout, so that only the installed copy can be imported.
    migrated = run(target / "bin" / "pgqueue", "migrate", "--database-url", empty_dsn, cwd=tmp_path)
    assert "0001" in migrated or "migrat" in migrated.lower()
    result = json.loads(run(python, "-c", CHECK, empty_dsn, cwd=tmp_path))

    package = Path(result["package"])
    assert package.is_relative_to(target)
    assert Path(result["migrations"]) == package / "migrations"
    assert (package / "migrations" / "versions" / "0001_initial.upgrade.sql").is_file()
    assert result["data"] == {"ok": True}
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'pgqueue'").fetchall()
        }
        assert tables == {"job", "worker", "queue", "schedule", "job_key", "flow_start", "flow_cursor", "dependency", "subscription",
            "pgqueue_alembic_version"}
        assert conn.execute("SELECT type, data FROM pgqueue.job").fetchall() == [("installed", {"ok": True})]
