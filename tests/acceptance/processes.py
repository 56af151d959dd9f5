"""Real `pgqueue work` processes for the acceptance tests: started on the test's database with
an app module of this folder, stopped at the end of the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent

Start = Callable[..., "subprocess.Popen[str]"]


def worker_processes(dsn: str, app: str, *base_flags: str, graceful: bool = False) -> Iterator[Start]:
    """A fixture body: yields ``start(*flags)``, which runs ``pgqueue work APP *base_flags *flags``;
    at the end every process still running is killed (``graceful``: sent SIGTERM and given 20 s)."""
    started: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", app, *base_flags, *flags],
            cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            if graceful:
                process.send_signal(signal.SIGTERM)
            else:
                process.kill()
    for process in started:
        try:
            process.communicate(timeout=20 if graceful else 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Wait until ``condition()`` is true; the seconds it took. Past ``timeout``: AssertionError."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started
