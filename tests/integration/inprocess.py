"""A worker running in the test's own event loop, for the integration tests that watch its
inside (``worker.running``, its stats) while real jobs go through a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pgqueue
from pgqueue.worker import Worker, WorkerConfig


class Running:
    """A worker running in the test's event loop, stopped gracefully at the end."""

    def __init__(self, app: pgqueue.App, **config: Any) -> None:
        self.worker = Worker(app.runtime(), WorkerConfig(**{"poll_interval": 0.2, **config}))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        self.task = asyncio.create_task(self.worker.run())
        return self.worker

    async def __aexit__(self, *exc: Any) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=15)


async def until(check: Callable[[], Any], timeout: float = 15.0) -> float:
    """Wait (every 20 ms) until ``check()`` is true; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started
