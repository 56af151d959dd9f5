"""Each example runs in one command against a real database and does what it says; the docs build."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def example_env(dsn: str) -> dict[str, str]:
    return {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PGQUEUE_SCHEMA": "pgqueue"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(90)
def test_the_tasks_example_enqueues_and_a_burst_worker_runs_its_jobs(dsn: str):
    env = example_env(dsn)
    enqueued = subprocess.run(
        [sys.executable, "-m", "examples.tasks", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert enqueued.returncode == 0, enqueued.stderr
    assert "enqueued 9 jobs" in enqueued.stdout
    worked = subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "examples.tasks:app", "--burst", "--poll-interval", "0.1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert worked.returncode == 0, worked.stderr
    with psycopg.connect(dsn) as conn:
        states = conn.execute("SELECT type, state::text, count(*) FROM pgqueue.job GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert states == [("make-avatar", "completed", 3), ("notify-slack", "completed", 3), ("send-welcome-email", "completed", 3)]


@pytest.mark.timeout(90)
def test_the_fastapi_example_delivers_what_register_enqueued_and_what_inline_did(dsn: str, tmp_path: Path):
    port = free_port()
    log = tmp_path / "example.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "examples.fastapi_app", "--port", str(port), "--concurrency", "20"],
            cwd=ROOT, env=example_env(dsn), stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the example did not come up"
            time.sleep(0.1)
        started = time.monotonic()
        queued = httpx.post(f"{base}/register", json={"email": "ada@example.com"}, timeout=30)
        answered_in = time.monotonic() - started
        assert queued.status_code == 200 and answered_in < 1.5  # the 2 s email is not waited for
        inline = httpx.post(f"{base}/register-inline", json={"email": "bob@example.com"}, timeout=60)
        assert inline.status_code == 200
        users = {"ada": queued.json()["id"], "bob": inline.json()["id"]}
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while True:
                effects = conn.execute("SELECT user_id, kind FROM effects ORDER BY 1, 2").fetchall()
                if len(effects) >= 6 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            jobs = conn.execute("SELECT type, state::text FROM pgqueue.job ORDER BY type").fetchall()
        assert effects == [
            (user, kind) for user in sorted(users.values()) for kind in ("crm", "slack", "welcome-email")
        ]
        # Only the queued registration made jobs, and each ran to completion.
        assert jobs == [("notify-slack", "completed"), ("send-welcome-email", "completed"), ("sync-crm", "completed")]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=45)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, log.read_text()


@pytest.mark.timeout(120)
def test_the_documentation_site_builds_strictly(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "testing" / "index.html").is_file()
    assert "raw-SQL ceiling" in (tmp_path / "site" / "benchmarks" / "index.html").read_text()


@pytest.mark.timeout(120)
def test_the_fastapi_benchmark_runs_small_and_finds_nothing_missing(server_dsn: str):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.fastapi_register", "--dsn", server_dsn, "--clients", "2", "--seconds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| POST /register-inline |" in result.stdout and "| POST /register |" in result.stdout
    assert "missing = 0" in result.stdout


@pytest.mark.timeout(120)
def test_the_django_example_commits_orders_with_their_jobs_and_the_worker_runs_them(dsn: str):
    env = {k: v for k, v in example_env(dsn).items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "examples.django_shop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolled back: its jobs were never written" in done.stdout
    assert done.stdout.count("receipt task SUCCESSFUL") == 3, done.stdout
    with psycopg.connect(dsn) as conn:
        orders = conn.execute("SELECT item, receipt_sent, shipped FROM shop_order ORDER BY id").fetchall()
        jobs = conn.execute("SELECT type, state::text, count(*) FROM pgqueue.job GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert orders == [("book", True, True), ("lamp", True, True), ("kettle", True, True)]
    assert jobs == [("django-task", "completed", 3), ("ship-order", "completed", 3)]
