"""Worker processes under measurement.

:class:`WorkerRun` starts one or more commands (``pgqueue work ...`` by default), and while
they run samples the resident memory of every process in their trees (from ``/proc``) and
the number of the run database's connections that pgqueue opened (``pg_stat_activity``).
When a command exits, ``os.wait4`` gives its CPU time, its own and that of the children it
waited for (a ``--processes N`` supervisor waits for its workers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .harness import Bench
from .tasks import SCHEMA

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "benchmarks.tasks:app"
SAMPLE_EVERY = 0.05
"""Seconds between memory and connection samples."""

# pgqueue names its connections pgqueue-worker / -heartbeat / -listener (and plain pgqueue
# for an App's own pool); the suite's own connections are pgqueue-bench-*.
CONNECTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'pgqueue%%'
  AND application_name NOT LIKE %(own)s
"""


def work_command(*flags: str) -> list[str]:
    """``python -m pgqueue work benchmarks.tasks:app FLAGS...`` (the same as the ``pgqueue`` script)."""
    return [sys.executable, "-m", "pgqueue", "work", APP, *flags]


def api_worker_command(**config: Any) -> list[str]:
    """A worker started through ``App.run_worker(**config)``, for settings the CLI does not take."""
    import json

    return [sys.executable, "-m", "benchmarks.api_worker", json.dumps(config)]


@dataclass
class Usage:
    """What the processes of one run used."""

    cpu_s: float
    """User + system CPU seconds of the commands and every child they waited for."""
    peak_rss_mb: float
    """The largest peak resident set (``VmHWM``) of any one process, as last sampled.

    Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` also counts the parent's memory
    image it was forked from (kept at exec), which here is the benchmark process itself."""
    rss_samples: list[tuple[float, dict[int, tuple[float, float]]]] = field(default_factory=list)
    """``(seconds since start, {pid: (RSS MB, peak RSS so far MB)})`` every :data:`SAMPLE_EVERY` seconds."""
    peak_connections: int = 0
    wall_s: float = 0.0
    supervisors: frozenset[int] = frozenset()
    """Processes that had children of their own (a ``--processes N`` supervisor)."""
    hung: bool = False
    """The processes did not exit by themselves once their work was over, and were killed."""

    def memory(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, float, float]:
        """Of the worker process that grew largest (supervisors left out), between ``start``
        and ``end`` seconds after the run started: RSS at the first sample, RSS at the last
        sample, and the highest peak RSS (``VmHWM``) seen by the last one, in MB. A worker
        whose memory is flat over a drain shows three close figures."""
        series: dict[int, list[tuple[float, float]]] = {}
        for at, by_pid in self.rss_samples:
            if start <= at <= end:
                for pid, pair in by_pid.items():
                    if pid not in self.supervisors:
                        series.setdefault(pid, []).append(pair)
        if not series:
            return 0.0, 0.0, 0.0
        biggest = max(series.values(), key=lambda pairs: max(hwm for _, hwm in pairs))
        return biggest[0][0], biggest[-1][0], biggest[-1][1]


class WorkerRun:
    """Start ``commands`` with the run's database in ``PGQUEUE_DATABASE_URL``; sample them until they exit.

    >>> run = WorkerRun(bench, [work_command("--burst")]).start()
    >>> usage = run.wait()
    """

    def __init__(self, bench: Bench, commands: Sequence[Sequence[str]], timeout: float = 900) -> None:
        self.bench = bench
        self.commands = [list(c) for c in commands]
        self.timeout = timeout
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.exits: dict[int, tuple[int, Any]] = {}
        self.samples: list[tuple[float, dict[int, tuple[float, float]]]] = []
        self.peak_connections = 0
        self.supervisors: set[int] = set()
        self.hung = False
        self.started = 0.0

    def start(self) -> WorkerRun:
        env = {
            **os.environ,
            "PGQUEUE_DATABASE_URL": self.bench.dsn,
            "PGQUEUE_SCHEMA": SCHEMA,
            "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
        }
        self.started = time.monotonic()
        for command in self.commands:
            # Output goes to a file: cheap to write (as a log file or journald pipe would be),
            # and read back only if the worker fails.
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self.logs.append(log)
            self.processes.append(
                subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def alive(self) -> bool:
        return len(self.exits) < len(self.processes)

    def sample(self) -> None:
        """Take one memory sample of every live process tree, one connection count, and reap
        commands that exited."""
        tree: dict[int, tuple[float, float]] = {}
        for process in self.processes:
            if process.pid not in self.exits:
                pids = _tree(process.pid)
                if len(pids) > 1:
                    self.supervisors.add(process.pid)
                for pid in pids:
                    memory = _memory_mb(pid)
                    if memory is not None:
                        tree[pid] = memory
        if tree:
            self.samples.append((time.monotonic() - self.started, tree))
        row = self.bench.admin.execute(CONNECTIONS, {"own": "pgqueue-bench%"}).fetchone()
        self.peak_connections = max(self.peak_connections, int(row[0]) if row else 0)
        for process in self.processes:
            if process.pid not in self.exits:
                pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)
                    self.exits[pid] = (process.returncode, rusage)

    def wait(
        self,
        until: Callable[[], bool] | None = None,
        done: Callable[[], bool] | None = None,
        exit_within: float = 30.0,
    ) -> Usage:
        """Sample until every command exited.

        When ``until()`` turns true (checked at each sample), send SIGTERM (a graceful stop)
        and keep waiting for the exit. Once the work is over (``until()`` fired, or ``done()``
        turned true, for a ``--burst`` run), the processes get ``exit_within`` seconds to exit
        by themselves; then they are killed and the usage says ``hung``, so one stuck
        shutdown costs a scenario half a minute, not the run.
        """
        deadline = time.monotonic() + self.timeout
        over_at: float | None = None
        try:
            while self.alive():
                self.sample()
                if over_at is None:
                    if until is not None and until():
                        self.stop()
                        over_at = time.monotonic()
                    elif done is not None and done():
                        over_at = time.monotonic()
                elif self.alive() and time.monotonic() - over_at > exit_within:
                    self.hung = True
                    self.kill()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker processes still running after {self.timeout:.0f} s")
                if self.alive():
                    time.sleep(SAMPLE_EVERY)
        except BaseException:
            self.kill()
            raise
        wall = time.monotonic() - self.started
        failed = [(p, self.exits[p.pid][0]) for p in self.processes if self.exits[p.pid][0] != 0]
        if failed and not self.hung:
            process, code = failed[0]
            raise RuntimeError(
                f"{' '.join(process.args)} exited with {code}:\n{self.output(process)[-3000:]}"
            )
        self.close()
        usages = [rusage for _, rusage in self.exits.values()]
        return Usage(
            cpu_s=sum(u.ru_utime + u.ru_stime for u in usages),
            peak_rss_mb=max((hwm for _, tree in self.samples for _, hwm in tree.values()), default=0.0),
            rss_samples=self.samples,
            peak_connections=self.peak_connections,
            wall_s=wall,
            supervisors=frozenset(self.supervisors),
            hung=self.hung,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for process in self.processes:
            if process.pid not in self.exits:
                try:
                    process.send_signal(sig)
                except ProcessLookupError:
                    pass

    def kill(self) -> None:
        """End whatever is left of the run (its own processes only), and reap them."""
        for process in self.processes:
            if process.pid in self.exits:
                continue
            for pid in reversed(_tree(process.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                _, status, rusage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                self.exits[process.pid] = (process.returncode, rusage)
            except ChildProcessError:
                pass
        self.close()

    def output(self, process: subprocess.Popen[bytes]) -> str:
        log = self.logs[self.processes.index(process)]
        log.seek(0)
        return log.read().decode(errors="replace")

    def close(self) -> None:
        for log in self.logs:
            log.close()
        self.logs = []


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60, run: WorkerRun | None = None) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds, or as soon as ``run`` has
    a process that exited."""
    deadline = time.monotonic() + timeout
    while not check():
        if run is not None:
            run.sample()
            if run.exits:
                raise RuntimeError(f"a worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- /proc --------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents first (Linux; just ``pid`` elsewhere)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                todo.extend(int(child) for child in f.read().split())
        except OSError:
            pass
    return out


def _memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a process, in MB."""
    found: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    if len(found) < 2:
        return None
    return found["VmRSS"], found["VmHWM"]
