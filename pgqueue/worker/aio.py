"""asyncio helpers the worker's parts share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import ConfigurationError
from ..settings import WorkerConfig, check, declared
from .executors import CANCEL_GRACE

log = logging.getLogger("pgqueue.worker")


_EVENT_LOOP = next(spec for name, _, spec in declared(WorkerConfig) if name == "event_loop")


def new_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """A new event loop: ``"asyncio"``'s own, ``"uvloop"``'s (ConfigurationError if uvloop is not
    installed), or with ``"auto"`` uvloop's when it is installed, else asyncio's."""
    check("event_loop", _EVENT_LOOP, kind)
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ConfigurationError(
                    "event_loop uvloop needs uvloop installed: pip install 'pgqueue[uvloop]'"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_blocking(main: Coroutine[Any, Any, None], loop_kind: str = "auto") -> None:
    """Run ``main`` in a new event loop of ``loop_kind`` (see :func:`new_loop`), like
    :func:`asyncio.run`, but without waiting forever at exit for tasks that ignore cancellation
    (an abandoned handler stuck in a ``while True`` that swallows ``CancelledError``): they get
    ``CANCEL_GRACE`` seconds, then are left behind."""
    try:
        loop = new_loop(loop_kind)
    except BaseException:
        main.close()  # never awaited: no warning about it
        raise
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    finally:
        try:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                _, stuck = loop.run_until_complete(asyncio.wait(leftover, timeout=CANCEL_GRACE))
                if stuck:
                    log.warning("%d abandoned handler(s) still running at exit are left behind", len(stuck))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until they have ended, cancelling again any that missed it.

    Python 3.11's ``asyncio.wait_for`` (used inside psycopg_pool too) can swallow a
    cancellation that races with its own completion; one cancel() is then not enough.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed: %r", task.get_name(), task.exception())


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of the events is set, or ``timeout`` seconds pass."""
    if len(events) == 1:
        # Awaited directly: a wake-up reaches the waiter without passing through a task of its own.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await events[0].wait()
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def cancelling() -> bool:
    """Whether the current task itself has been asked to stop (not merely a task it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def describe(exc: BaseException) -> str:
    """An error in a few words, on one line, for a log line."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


RETRY_DELAY_MAX = 1.0
"""Longest wait before trying the database again after a failure: a database that comes back
(a restart, a promoted standby) has the worker's claims again within about a second."""


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: 0.25 s, doubling, at most RETRY_DELAY_MAX."""
    return min(0.125 * 2.0 ** min(failures, 10), RETRY_DELAY_MAX)


def install_signals(stop: Callable[[], None]) -> list[signal.Signals]:
    """Call ``stop`` on SIGTERM and SIGINT (where this thread may); return the signals it now handles."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
            pass
    return installed


def remove_signals(installed: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        loop.remove_signal_handler(sig)


async def wait_tasks(tasks: set[asyncio.Task[None]], hard_stop: asyncio.Event, grace: float) -> None:
    """Wait for ``tasks`` until ``grace`` seconds pass or ``hard_stop`` is set."""
    hard = asyncio.ensure_future(hard_stop.wait())
    deadline = time.monotonic() + grace
    pending: set[asyncio.Future[Any]] = set(tasks)
    try:
        while pending and not hard.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            _, pending = await asyncio.wait(
                {*pending, hard}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(hard)
    finally:
        hard.cancel()
