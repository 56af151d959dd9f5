"""``pgqueue work --processes N``: run N worker processes and look after them.

Each child is ``python -m pgqueue work MODULE:APP ... --processes 1``, so a child is exactly
what a single ``pgqueue work`` would be. The supervisor forwards SIGTERM and SIGINT (the
first to stop gracefully, the second to stop at once), restarts a child that dies while it
should be running, and exits 0 once every child has stopped after a signal or, with
``--burst``, once every child has drained the queues and exited 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("pgqueue.supervisor")

EXIT_CONFIGURATION = 2
"""The exit code of a child that was given bad settings: restarting it cannot help."""

WORKER_INDEX_ENV = "PGQUEUE_WORKER_INDEX"
"""Set in each child to its slot number (0 to N-1), for applications that shard by it."""


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    """Crashes in a row; reset once a child has run for ``stable_after`` seconds."""
    restart_at: float | None = None
    done: bool = False
    """Burst mode: the child drained the queues and exited 0."""


@dataclass
class Supervisor:
    """Start ``processes`` copies of ``command`` and supervise them until they are done.

    >>> Supervisor([sys.executable, "-m", "pgqueue", "work", "app:app", "--processes", "1"], 4).run()
    """

    command: Sequence[str]
    processes: int
    burst: bool = False
    env: dict[str, str] | None = None
    restart_delay: float = 0.5
    """Seconds before the first restart of a crashed child; doubled after each crash in a row."""
    restart_delay_max: float = 30.0
    burst_max_crashes: int = 3
    """In burst mode, a child that crashes this many times in a row ends the run with its exit code."""
    stable_after: float = 30.0
    """A child that ran this many seconds is healthy again: its next crash restarts it quickly."""
    tick: float = 0.05
    slots: list[_Slot] = field(init=False, default_factory=list)
    _signals: list[int] = field(init=False, default_factory=list)
    _forwarded: int = field(init=False, default=0)
    _exit_code: int | None = field(init=False, default=None)

    @property
    def stopping(self) -> bool:
        return bool(self._signals) or self._exit_code is not None

    def run(self) -> int:
        """Run until done; return the exit code for the supervisor process."""
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.slots = [_Slot(i) for i in range(self.processes)]
            for slot in self.slots:
                self._start(slot)
            log.info("supervising %d worker processes", self.processes, extra={"pids": self.pids()})
            while not self._finished():
                self._forward_signals()
                self._reap()
                self._restart_due()
                time.sleep(self.tick)
            return self._result()
        finally:
            self._kill_leftovers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return [s.process.pid for s in self.slots if s.process is not None and s.process.poll() is None]

    # --- signals -------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only record it: the main loop forwards, outside the signal handler.
        self._signals.append(signum)

    def _forward_signals(self) -> None:
        while self._forwarded < len(self._signals):
            signum = self._signals[self._forwarded]
            self._forwarded += 1
            if self._forwarded == 1:
                log.info("received %s: stopping the workers gracefully", signal.Signals(signum).name)
            elif self._forwarded == 2:
                log.warning("received %s again: stopping the workers now", signal.Signals(signum).name)
            else:
                log.warning("received %s a third time: killing the workers", signal.Signals(signum).name)
                signum = signal.SIGKILL
            self._send(signum)

    def _send(self, signum: int) -> None:
        for slot in self.slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.poll() is None:
                try:
                    slot.process.send_signal(signum)
                except ProcessLookupError:
                    pass

    # --- children ------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        env = dict(os.environ if self.env is None else self.env)
        env[WORKER_INDEX_ENV] = str(slot.index)
        slot.process = subprocess.Popen(
            list(self.command),
            env=env,
            preexec_fn=_child_setup(),
        )
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.debug("started worker process %d", slot.process.pid, extra={"slot": slot.index})

    def _reap(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.poll() is None:
                continue
            code = process.returncode
            slot.process = None
            ran = time.monotonic() - slot.started_at
            if self.stopping:
                log.debug("worker process %d exited with %s", process.pid, code, extra={"slot": slot.index})
                continue
            if self.burst and code == 0:
                slot.done = True
                continue
            if code == EXIT_CONFIGURATION:
                log.error(
                    "worker process %d exited with code 2 (bad settings): stopping the others",
                    process.pid,
                    extra={"slot": slot.index},
                )
                self._give_up(code)
                continue
            slot.crashes = 1 if ran >= self.stable_after else slot.crashes + 1
            if self.burst and slot.crashes >= self.burst_max_crashes:
                log.error(
                    "worker process %d exited with %s, %d crashes in a row: giving up",
                    process.pid,
                    _describe(code),
                    slot.crashes,
                    extra={"slot": slot.index},
                )
                self._give_up(code if code > 0 else 1)
                continue
            delay = min(self.restart_delay * 2 ** (slot.crashes - 1), self.restart_delay_max)
            log.warning(
                "worker process %d exited unexpectedly with %s: restarting it in %.1f s",
                process.pid,
                _describe(code),
                delay,
                extra={"slot": slot.index},
            )
            slot.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _give_up(self, code: int) -> None:
        self._exit_code = code
        self._send(signal.SIGTERM)

    def _finished(self) -> bool:
        if any(slot.process is not None for slot in self.slots):
            return False
        if self.stopping:
            return True
        return self.burst and all(slot.done for slot in self.slots)

    def _result(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        return 0

    def _kill_leftovers(self) -> None:
        # Only reached with children alive if the supervisor itself is failing: do not orphan them.
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _child_setup() -> Any:
    """What a child runs between fork and exec (prepared here, in the parent)."""
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        # Own process group: a Ctrl-C in the terminal reaches only the supervisor, which
        # forwards it once, so a single Ctrl-C stays a graceful stop for the children.
        os.setpgid(0, 0)
        if prctl is not None:
            # If the supervisor is killed (kill -9), its children get SIGTERM instead of running on orphaned.
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup
