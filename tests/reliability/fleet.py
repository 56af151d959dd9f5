"""Real ``pgqueue work reliability_app:app`` processes, started, killed and restarted by the scenarios.

Each worker writes its output to a file of its own (a pipe nobody reads would block a
worker that logs a lot). :meth:`Fleet.supervise` keeps N workers alive the way a process
manager would: a worker that dies is started again at once, and its death is recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

HERE = Path(__file__).resolve().parent

FAST_RESCUE = ("--lease-seconds", "2", "--rescue-interval", "0.5")
"""Short leases: a dead worker's jobs run again within about 2.5 s."""


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)
    died: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def rss_kib(self) -> int:
        """Resident memory of the worker process, in KiB (0 once it is gone)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


@dataclass
class Slot:
    flags: tuple[str, ...]
    env: dict[str, str]
    dsn: str | None
    workers: list[Worker] = field(default_factory=list)

    @property
    def current(self) -> Worker:
        return self.workers[-1]


class Fleet:
    """Starts workers for one database; ``close()`` kills whatever is left."""

    def __init__(self, dsn: str, ledger_dsn: str, logdir: Path, base_flags: tuple[str, ...] = ()) -> None:
        self.dsn = dsn
        self.ledger_dsn = ledger_dsn
        self.logdir = logdir
        self.base_flags = ("--poll-interval", "0.2", "--log-level", "warning", *base_flags)
        self.workers: list[Worker] = []
        self.slots: list[Slot] = []
        self.deaths: list[tuple[float, Worker]] = []
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()

    def environment(self, dsn: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PGQUEUE_") and k not in ("DATABASE_URL", "LD_PRELOAD", "FAKETIME")}
        env.update(PGQUEUE_DATABASE_URL=dsn or self.dsn, RELIABILITY_LEDGER_DSN=self.ledger_dsn,
                   PYTHONUNBUFFERED="1")
        env.update(extra or {})
        return env

    def start(self, *flags: str, dsn: str | None = None, env: dict[str, str] | None = None,
              target: str = "reliability_app:app", command: list[str] | None = None,
              wrap: Sequence[str] = ()) -> Worker:
        """Start one ``pgqueue work`` process with the base flags, then ``flags``; ``wrap`` is a
        prefix that runs it elsewhere (``ip netns exec HOST``: it must exec, keeping the pid)."""
        with self._lock:
            number = len(self.workers) + 1
        log = self.logdir / f"worker-{number}.log"
        argv = [*wrap, *(command or [sys.executable, "-m", "pgqueue", "work", target, *self.base_flags, *flags])]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=HERE, env=self.environment(dsn, env), stdout=out,
                                       stderr=subprocess.STDOUT)
        worker = Worker(f"worker-{number}", process, log)
        with self._lock:
            self.workers.append(worker)
        return worker

    def supervise(self, count: int, *flags: str, dsn: str | None = None,
                  env: dict[str, str] | None = None) -> list[Slot]:
        """Keep ``count`` workers alive: one that dies is restarted at once (its death recorded)."""
        slots = [Slot(flags, dict(env or {}), dsn) for _ in range(count)]
        for slot in slots:
            slot.workers.append(self.start(*flags, dsn=dsn, env=env))
        with self._lock:
            self.slots.extend(slots)
        if self._monitor is None:
            self._stop.clear()
            self._monitor = threading.Thread(target=self._watch, name="fleet-monitor", daemon=True)
            self._monitor.start()
        return slots

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                slots = list(self.slots)
            for slot in slots:
                worker = slot.current
                if worker.alive():
                    continue
                worker.died = time.time()
                with self._lock:
                    self.deaths.append((worker.died, worker))
                if not self._stop.is_set():
                    slot.workers.append(self.start(*slot.flags, dsn=slot.dsn, env=slot.env))

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def stop_supervising(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(5)
            self._monitor = None

    def stop(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM every live worker and wait; return each one's exit code (by name)."""
        self.stop_supervising()
        live = self.live()
        for worker in live:
            worker.signal(signal.SIGTERM)
        codes = {}
        for worker in live:
            try:
                codes[worker.name] = worker.wait(timeout)
            except subprocess.TimeoutExpired:
                codes[worker.name] = -999
        return codes

    def close(self) -> None:
        self.stop_supervising()
        for worker in self.workers:
            if worker.alive():
                worker.process.kill()
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def outputs(self) -> str:
        return "\n".join(f"--- {w.name} (pid {w.pid}) ---\n{w.output()}" for w in self.workers)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``condition`` until it holds; return the seconds it took (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started
