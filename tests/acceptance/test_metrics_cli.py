"""``pgqueue work --metrics-port``: each worker process serves its metrics on port + its index."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import pgqueue
from test_cli import clean_env, write_tasks

pytestmark = pytest.mark.timeout(90)


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free (checked, not reserved)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            for offset in range(n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def scrape(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None


def test_two_processes_serve_on_port_and_port_plus_one(dsn, tmp_path):
    write_tasks(tmp_path)
    app = pgqueue.App(dsn)
    try:
        app.enqueue_many([("add", {"a": i, "b": 1}, {"queue": "math"}) for i in range(40)])
    finally:
        app.close()
    port = free_ports(2)
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "work", "cli_tasks:app", "--processes", "2", "--metrics-port", str(port)],
        env=clean_env(PGQUEUE_DATABASE_URL=dsn),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 45
        bodies: list[str | None] = [None, None]
        total = 0.0
        while time.monotonic() < deadline:
            bodies = [scrape(port), scrape(port + 1)]
            if all(bodies):
                total = sum(
                    float(line.rsplit(" ", 1)[1])
                    for body in bodies
                    for line in body.splitlines()  # type: ignore[union-attr]
                    if line.startswith('pgqueue_jobs_completed_total{queue="math",type="add"}')
                )
                if total == 40:
                    break
            time.sleep(0.2)
        assert all(bodies), bodies
        assert total == 40
        assert all("pgqueue_jobs_in_flight 0.0" in body for body in bodies)  # type: ignore[operator]
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out
    assert f"serving metrics on http://0.0.0.0:{port}/metrics" in out
    assert f"serving metrics on http://0.0.0.0:{port + 1}/metrics" in out
