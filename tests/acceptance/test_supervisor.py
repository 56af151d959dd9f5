"""``pgqueue work --processes N``: signals forwarded, crashed children restarted, bursts drained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue

APP_MODULE = """
    import asyncio
    import os

    import psycopg

    import pgqueue

    if os.environ.get("PGQUEUE_WORKER_INDEX") and os.environ.get("CRASH_CHILDREN") == "import":
        raise RuntimeError("this worker process cannot start")
    if os.environ.get("PGQUEUE_WORKER_INDEX") and os.environ.get("CRASH_CHILDREN") == "settings":
        raise pgqueue.ConfigurationError("a setting the workers need is wrong")

    app = pgqueue.App()
    _conn = None


    @app.task("record", queue="supervised")
    async def record(n: int, sleep: float = 0.0) -> int:
        global _conn
        if _conn is None:
            _conn = await psycopg.AsyncConnection.connect(app.database_url, autocommit=True)
        await asyncio.sleep(sleep)
        await _conn.execute("INSERT INTO executions (job_n, pid) VALUES (%s, %s)", (n, os.getpid()))
        return n
"""


@pytest.fixture
def project(tmp_path: Path, dsn: str, conn: psycopg.Connection[Any]) -> Path:
    (tmp_path / "supervised_app.py").write_text(textwrap.dedent(APP_MODULE))
    conn.execute("CREATE TABLE executions (job_n integer PRIMARY KEY, pid integer NOT NULL)")
    return tmp_path


@pytest.fixture
def start(project: Path, dsn: str) -> Iterator[Any]:
    """Start ``pgqueue work supervised_app:app --processes N ...``; kill what is left at the end."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, **env: str) -> subprocess.Popen[str]:
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k != "DATABASE_URL"
        }
        environment.update(PGQUEUE_DATABASE_URL=dsn, **env)
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", "supervised_app:app", "--shutdown-grace", "10", *args],
            cwd=project,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def enqueue(dsn: str, count: int, sleep: float = 0.0) -> None:
    app = pgqueue.App(dsn)
    try:
        app.enqueue_many(
            [("record", {"n": n, "sleep": sleep}, {"queue": "supervised"}) for n in range(count)]
        )
    finally:
        app.close()


def live_workers(conn: psycopg.Connection[Any]) -> set[int]:
    """Process ids of registered workers that are still alive."""
    pids = {row[0] for row in conn.execute("SELECT pid FROM pgqueue.worker").fetchall()}
    return {pid for pid in pids if _alive(pid)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.timeout(120)
def test_two_processes_drain_a_few_hundred_jobs_then_exit_zero(dsn, conn, start):
    enqueue(dsn, 300)
    supervisor = start("--processes", "2", "--burst", "--concurrency", "8", "--log-level", "warning")
    out, err = supervisor.communicate(timeout=90)
    assert supervisor.returncode == 0, err
    assert conn.execute("SELECT count(*) FROM executions").fetchone() == (300,)
    assert conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall() == [
        ("completed", 300)
    ]
    assert "Traceback" not in err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_supervisor_stops_every_child_and_it_exits_zero(dsn, conn, start, signum):
    enqueue(dsn, 6, sleep=1.0)
    supervisor = start("--processes", "2", "--concurrency", "3")
    children = wait_until(lambda: len(live_workers(conn)) == 2 and live_workers(conn), 60, "two workers")
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM pgqueue.job WHERE state = 'active'").fetchone()[0] > 0,
        30,
        "running jobs",
    )
    supervisor.send_signal(signum)
    out, err = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, err
    assert not any(_alive(pid) for pid in children)
    # The running jobs finished within the grace period; nothing is left active.
    assert conn.execute("SELECT count(*) FROM pgqueue.job WHERE state = 'active'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgqueue.worker").fetchone() == (0,)
    assert "stopping the workers gracefully" in err


@pytest.mark.timeout(120)
def test_a_child_that_dies_is_restarted(dsn, conn, start):
    supervisor = start("--processes", "2")
    def two_live(without: int | None = None) -> set[int]:
        live = live_workers(conn)  # one look per poll: a set seen whole, not three moments apart
        return live if len(live) == 2 and without not in live else set()

    first = wait_until(two_live, 60, "two workers")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_until(lambda: two_live(without=victim), 60, "a replacement worker")
    assert replaced - first  # a new process took the dead one's place
    enqueue(dsn, 20)
    wait_until(lambda: conn.execute("SELECT count(*) FROM executions").fetchone()[0] == 20, 30, "jobs to run")
    supervisor.send_signal(signal.SIGTERM)
    out, err = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, err
    assert "exited unexpectedly with signal SIGKILL: restarting it" in err


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("crash", "code", "message"),
    [
        ("import", 1, "crashes in a row: giving up"),
        ("settings", 2, "bad settings"),
    ],
)
def test_burst_mode_gives_up_on_children_that_keep_crashing(dsn, start, crash, code, message):
    supervisor = start("--processes", "2", "--burst", CRASH_CHILDREN=crash)
    out, err = supervisor.communicate(timeout=90)
    assert supervisor.returncode == code, err
    assert message in err
