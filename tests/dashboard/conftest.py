"""A dashboard served for real: uvicorn on a free port, in a thread of the test process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import uvicorn

import pgqueue
from pgqueue.dashboard import create_app

XSS = "<script>alert(1)</script>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app: pgqueue.App, asgi: Any = None, **options: Any) -> Iterator[str]:
    """Serve ``asgi``, by default ``create_app(app, **options)``; yields its base URL. The App's
    async pool, opened on the server's loop, is closed on it when the server stops."""
    asgi = asgi or create_app(app, **options)
    server = uvicorn.Server(
        uvicorn.Config(asgi, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )

    async def main() -> None:
        try:
            await server.serve()
        finally:
            await app.aclose()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def serve(app: pgqueue.App):
    """``serve(**options)``: the dashboard of the test's App, served until the test ends."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(serving(app, **options))
