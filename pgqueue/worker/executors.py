"""Where handlers run: on the event loop, in threads, or in child processes.

Each executor's ``run`` returns ``Outcome`` and never raises for anything the handler does:
exceptions of every kind (``SystemExit`` and ``KeyboardInterrupt`` included), timeouts,
handlers that ignore cancellation, and child processes that die are all turned into a
failed outcome, so a handler cannot take the worker down or keep its slot forever.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..codec import error_text
from ..context import JobContext, _current

log = logging.getLogger("pgqueue.worker")

CANCEL_GRACE = 1.0
"""Seconds a timed-out async handler gets to honour its cancellation before it is abandoned."""

PROCESS_CANCEL_GRACE = 5.0
"""Seconds a process handler whose job was cancelled gets to notice it (``check_cancelled``) and
return before its child is killed, so that a handler that never looks cannot keep a core busy."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    output: Any = None
    error: str | None = None
    timed_out: bool = False


def timed_out(timeout: float) -> Outcome:
    return Outcome(False, error=f"timed out after {timeout:g} s", timed_out=True)


async def run_async(
    fn: Callable[..., Any], data: dict[str, Any], timeout: float | None, job: JobContext
) -> Outcome:
    """Run an async handler in a task of its own, so that it can be abandoned if it ignores cancellation."""

    async def guarded() -> Outcome:
        _current.set(job)
        this = asyncio.current_task()
        # A cancellation of the running job (JobContext._cancel) cancels the task the handler
        # runs in: it sees CancelledError where it awaits.
        object.__setattr__(job, "_on_cancel", None if this is None else this.cancel)
        try:
            return Outcome(True, await fn(**data))
        except BaseException as exc:  # noqa: BLE001 - a handler may raise anything, SystemExit included
            if job.cancelled and isinstance(exc, asyncio.CancelledError) and this is not None:
                this.uncancel()  # handled here: the job's task goes on to finish normally
            return Outcome(False, error=error_text(exc))
        finally:
            object.__setattr__(job, "_on_cancel", None)

    if timeout is None:
        return await guarded()
    task = asyncio.ensure_future(guarded())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not task.done():
        log.error("a handler ignored its cancellation after timing out; it is abandoned and keeps running")
    return timed_out(timeout or 0)


class ThreadRunner:
    """Daemon threads for sync handlers. A thread whose handler overran its timeout is
    abandoned and a new one takes its place, so the worker never loses a slot to it."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def _loop(self, item: Callable[[], None] | None) -> None:
        # A thread counts as idle only once its item has returned: a thread stuck in a hung
        # handler is never counted, so no job waits behind it.
        while item is not None:
            item()
            with self._lock:
                self._idle += 1
            item = self._work.get()

    def _submit(self, item: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._work.put(item)
                return
            self._threads += 1
            name = f"pgqueue-handler-{self._threads}"
        threading.Thread(target=self._loop, args=(item,), name=name, daemon=True).start()

    async def run(
        self, fn: Callable[..., Any], data: dict[str, Any], timeout: float | None, job: JobContext
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()

        def deliver(outcome: Outcome) -> None:
            if not future.done():
                future.set_result(outcome)

        # The handler sees the job task's context variables (a tracing span, for one).
        context = contextvars.copy_context()
        context.run(_current.set, job)

        def call() -> None:
            try:
                outcome = Outcome(True, context.run(fn, **data))
            except BaseException as exc:  # noqa: BLE001
                outcome = Outcome(False, error=error_text(exc))
            try:
                loop.call_soon_threadsafe(deliver, outcome)
            except RuntimeError:  # the loop has closed: the worker is gone
                pass

        self._submit(call)
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if done:
            return future.result()
        log.error("a sync handler overran its timeout; its thread is abandoned and replaced")
        return timed_out(timeout or 0)

    def close(self) -> None:
        with self._lock:
            idle = self._idle
        for _ in range(idle):
            self._work.put(None)


# --- processes -----------------------------------------------------------------------------


def _exit_with_parent(parent: int) -> None:
    """End this child as soon as its worker is gone (killed with SIGKILL, say), even in the
    middle of a handler: an orphan would keep running a job that is rescued and runs again."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _child_main(conn: Any, cancel: Any) -> None:
    """A process-executor child: run handlers named by module and qualified name, JSON in and out.

    ``cancel`` is the worker's ``multiprocessing.Event`` for the job this child runs: the
    handler's :attr:`JobContext.cancelled`. Progress reports go to the worker through the pipe,
    ahead of the reply."""

    def report(progress: dict[str, Any]) -> None:
        conn.send_bytes(json.dumps({"progress": progress}).encode())

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when children stop
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="pgqueue-orphan-watch", daemon=True
    ).start()
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        job = JobContext._from_json(request["job"])
        object.__setattr__(job, "_cancel_event", cancel)
        object.__setattr__(job, "_progress_sink", report)
        _current.set(job)
        try:
            target: Any = importlib.import_module(request["module"])
            for part in request["qualname"].split("."):
                target = getattr(target, part)
            conn.send_bytes(b'{"started": true}')  # the timeout counts from here, not from the spawn
            output = target(**request["data"])
            reply = {"ok": True, "output": output, "completed": job._completed}
            try:
                body = json.dumps(reply, allow_nan=False)
            except (TypeError, ValueError):
                reply["output"] = {"repr": repr(output)[:10_000]}
                body = json.dumps(reply)
        except BaseException as exc:  # noqa: BLE001
            body = json.dumps({"ok": False, "error": error_text(exc), "completed": job._completed})
        conn.send_bytes(body.encode())


class _Child:
    def __init__(self, context: Any) -> None:
        self.conn, child_conn = context.Pipe()
        self.cancel = context.Event()
        self.process = context.Process(
            target=_child_main, args=(child_conn, self.cancel), daemon=True, name="pgqueue-process"
        )
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


START_LIMIT = 60.0
"""Seconds a process handler may take to start (a new child's spawn and imports) before its
timeout starts counting anyway."""


class ProcessRunner:
    """Child processes for CPU-bound handlers: one job at a time each, replaced when they die
    or overrun their timeout (the overrunning child is killed)."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Child] = []

    async def run(
        self, fn: Callable[..., Any], data: dict[str, Any], timeout: float | None, job: JobContext
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        child = self._idle.pop() if self._idle else await loop.run_in_executor(None, _Child, self._context)
        reply: asyncio.Future[bytes | None] = loop.create_future()
        started: asyncio.Future[None] = loop.create_future()
        cancelled: asyncio.Future[None] = loop.create_future()
        fd = child.conn.fileno()

        def readable() -> None:
            try:
                body: bytes | None = child.conn.recv_bytes()
            except (EOFError, OSError):
                body = None
            if body == b'{"started": true}':
                if not started.done():
                    started.set_result(None)
                return
            if body is not None and body.startswith(b'{"progress"'):
                sink = job._progress_sink
                if sink is not None:
                    sink(json.loads(body)["progress"])
                return  # the reply is still to come
            loop.remove_reader(fd)
            if not reply.done():
                reply.set_result(body)

        def cancel() -> None:
            child.cancel.set()
            if not cancelled.done():
                cancelled.set_result(None)

        request = {"module": fn.__module__, "qualname": fn.__qualname__, "data": data, "job": job._to_json()}
        child.cancel.clear()
        object.__setattr__(job, "_on_cancel", cancel)
        try:
            return await self._exchange(child, request, job, (started, reply, cancelled), timeout, readable)
        finally:
            object.__setattr__(job, "_on_cancel", None)

    async def _exchange(
        self,
        child: _Child,
        request: dict[str, Any],
        job: JobContext,
        futures: tuple[asyncio.Future[None], asyncio.Future[bytes | None], asyncio.Future[None]],
        timeout: float | None,
        readable: Callable[[], None],
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        started, reply, cancelled = futures
        fd = child.conn.fileno()
        try:
            child.conn.send_bytes(json.dumps(request).encode())
        except OSError:
            child.kill()
            return Outcome(False, error="the handler's process could not be reached")
        loop.add_reader(fd, readable)
        try:
            if timeout is not None:
                # A new child may take seconds to start (spawn, imports) on a busy machine: the
                # handler's timeout counts from when it starts, within a bound.
                first: set[asyncio.Future[Any]] = {started, reply, cancelled}
                await asyncio.wait(first, timeout=START_LIMIT, return_when=asyncio.FIRST_COMPLETED)
            deadline = None if timeout is None else loop.time() + timeout
            either: set[asyncio.Future[Any]] = {reply, cancelled}
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if cancelled.done() and not reply.done():
                # Cancelled: the handler may notice (check_cancelled) and return; else it is killed.
                grace = PROCESS_CANCEL_GRACE if deadline is None else max(0.0, deadline - loop.time())
                await asyncio.wait({reply}, timeout=min(grace, PROCESS_CANCEL_GRACE))
        except asyncio.CancelledError:
            loop.remove_reader(fd)
            await loop.run_in_executor(None, child.kill)
            raise
        if not reply.done():
            loop.remove_reader(fd)
            await loop.run_in_executor(None, child.kill)
            if cancelled.done():
                return Outcome(False, error="the job was cancelled and its handler's process was stopped")
            return timed_out(timeout or 0)
        body = reply.result()
        if body is None:
            await loop.run_in_executor(None, child.kill)
            code = child.process.exitcode
            how = (
                f"was killed by signal {-code}"
                if code is not None and code < 0
                else f"exited with code {code}"
            )
            return Outcome(False, error=f"the handler's process {how}")
        self._idle.append(child)
        answer = json.loads(body)
        if answer.get("completed"):  # the child's handler completed the job in its own transaction
            object.__setattr__(job, "_completed", True)
        if answer["ok"]:
            return Outcome(True, answer["output"])
        return Outcome(False, error=answer["error"])

    def close(self) -> None:
        for child in self._idle:
            child.kill()
        self._idle.clear()


class Executors:
    """Every place a handler can run: the event loop, threads, child processes."""

    def __init__(self) -> None:
        self.threads = ThreadRunner()
        self.processes = ProcessRunner()

    async def run(self, task: Any, data: dict[str, Any], timeout: float | None, job: JobContext) -> Outcome:
        """Run ``task`` (a registered handler: ``fn`` and ``executor``) with its job's data."""
        if task.executor == "async":
            return await run_async(task.fn, data, timeout, job)
        if task.executor == "thread":
            return await self.threads.run(task.fn, data, timeout, job)
        return await self.processes.run(task.fn, data, timeout, job)

    def close(self) -> None:
        self.threads.close()
        self.processes.close()


def process_cap() -> int:
    """Default concurrency of a process-executor task: the machine's cores."""
    return os.cpu_count() or 1
