"""Scenario 17: workers on four hosts, and one host cut off from the database longer than a lease.

Each "host" is a network namespace of its own (:mod:`netns`) running two ``pgqueue work``
processes. They reach PostgreSQL (which listens on 127.0.0.1 only) through a proxy in the root
namespace bound to the bridge's address, over their veth: the only way out of their namespace.
The ledger's connections go through a Unix socket forwarded to the database instead, which
no partition cuts, so that every execution is counted wherever it ran.

A steady stream of jobs runs on all hosts; then one host's veth goes down while it runs jobs.
Its jobs' leases expire, other hosts' rescuers hand them back and other hosts run them. When
the link comes back, the cut-off workers' held bytes arrive: their late outcomes are refused by
the lease fence (and they say so), their handlers' executions count as re-executions, never
as double completions, and the host claims and completes jobs again. Its recovery is the
seconds from the link coming back to the host's first completed job.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import netns
import roles
import scoreboard
from fault_proxy import FaultProxy
from fleet import FAST_RESCUE, Fleet, Worker, wait_for

PROCESSES_PER_HOST = 2


@pytest.fixture
def hosts() -> Iterator[netns.Hosts]:
    missing = netns.available()
    if missing:
        raise RuntimeError(missing)
    made = netns.Hosts(4)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def ledger_socket(db: Any) -> Iterator[str]:
    """A ledger DSN over a Unix socket forwarded to the database: reachable from every namespace."""
    directory = Path(tempfile.mkdtemp(prefix="pgq-ledger-"))
    forward = FaultProxy(db.cluster.host, db.cluster.port, listen=str(directory / ".s.PGSQL.5432"))
    try:
        yield (f"host={directory} port=5432 dbname={db.name} user={roles.WORKER} "
               f"password={roles.PASSWORDS[roles.WORKER]}")
    finally:
        forward.close()
        shutil.rmtree(directory, ignore_errors=True)


class Stream(threading.Thread):
    """Enqueues ``per_second`` jobs of ``ms`` milliseconds each, in tenths of a second, until stopped."""

    def __init__(self, app: Any, per_second: int, ms: float) -> None:
        super().__init__(name="stream", daemon=True)
        self.app, self.per_second, self.ms = app, per_second, ms
        self.ids: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        batch = max(1, self.per_second // 10)
        while not self.stopping.wait(0.1):
            self.ids += self.app.enqueue_many([("work", {"n": len(self.ids) + k, "ms": self.ms})
                                               for k in range(batch)])


def pids_like(workers: list[Worker]) -> list[str]:
    """LIKE patterns that match the worker ids of ``workers`` (host:pid:random)."""
    return [f"%:{w.pid}:%" for w in workers]


def run_hosts(db: Any, producer: Any, fleet: Fleet, hosts: netns.Hosts, ledger: str, name: str, *,
              cut_for: float, seconds_after: float, lease: float = 2.0) -> None:
    started = time.monotonic()
    proxy = FaultProxy(db.cluster.host, db.cluster.port, listen=hosts.gateway)
    stream = Stream(producer, per_second=40, ms=300)
    try:
        through_bridge = db.dsn(roles.WORKER, host=hosts.gateway, port=proxy.port)
        flags = ("--concurrency", "4", "--lease-seconds", str(lease), *FAST_RESCUE[2:])
        on: dict[str, list[Worker]] = {}
        for host in hosts.names:
            on[host] = [fleet.start(*flags, dsn=through_bridge, env={"RELIABILITY_LEDGER_DSN": ledger},
                                    wrap=hosts.command(host)) for _ in range(PROCESSES_PER_HOST)]
        stream.start()
        cut, others = hosts.names[0], hosts.names[1:]
        cut_pids = {w.pid for w in on[cut]}
        # Every host works before the cut.
        for host in hosts.names:
            wait_for(lambda host=host: db.scalar("SELECT count(*) FROM ledger WHERE pid = ANY(%s)",
                                                 [w.pid for w in on[host]]) > 0,
                     30, f"host {host} to run jobs")
        wait_for(lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE state = 'active' "
                                   "AND worker_id LIKE ANY(%s)", pids_like(on[cut])) >= 2,
                 20, "jobs running on the host to cut off")
        hosts.partition(cut)
        partitioned = time.monotonic()
        stranded = [row[0] for row in db.conn.execute(
            "SELECT id FROM pgqueue.job WHERE state = 'active' AND worker_id LIKE ANY(%s)", (pids_like(on[cut]),)
        ).fetchall()]
        # Its jobs are rescued and run elsewhere while it is cut off.
        takeover = wait_for(
            lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed'",
                              stranded) == len(stranded),
            cut_for, "the cut-off host's jobs to be completed elsewhere")
        time.sleep(max(0.0, cut_for - (time.monotonic() - partitioned)))
        # From a second after the cut (on the database's clock): an exchange the host sent just
        # before it can still be forwarded by the proxy and run on a loaded server a moment after
        # the cut was made.
        second_after_cut = db.scalar("SELECT now() - make_interval(secs => %s)",
                                     time.monotonic() - partitioned - 1.0)
        cut_off_completions = db.scalar(
            "SELECT count(*) FROM completion_log WHERE new_state = 'completed' AND worker_id LIKE ANY(%s) "
            "AND at > %s", pids_like(on[cut]), second_after_cut)
        # A stranded job whose outcome the host sent just before the cut, recorded in that first
        # second under its own, still valid lease (the answer never came back), was not stranded.
        in_flight = {row[0] for row in db.conn.execute(
            "SELECT job_id FROM completion_log WHERE job_id = ANY(%s) AND worker_id LIKE ANY(%s) AND at <= %s",
            (stranded, pids_like(on[cut]), second_after_cut)
        ).fetchall()}
        hosts.heal(cut)
        healed = time.monotonic()
        # It claims and completes jobs again.
        try:
            back = wait_for(
                lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE state = 'completed' "
                                  "AND worker_id LIKE ANY(%s) AND created_at > now() - make_interval(secs => %s)",
                                  pids_like(on[cut]), time.monotonic() - healed) > 0,
                45, "the healed host to complete jobs again")
        except AssertionError:
            back = None
        time.sleep(seconds_after)
        stream.stopping.set()
        stream.join(10)
        scoreboard.wait_finished(db.conn, stream.ids, timeout=30)
        codes = fleet.stop(timeout=30)
    finally:
        stream.stopping.set()
        proxy.close()
    cut_logs = "\n".join(w.output() for w in on[cut])
    stranded = [job for job in stranded if job not in in_flight]
    ran_there = [row[0] for row in db.conn.execute(
        "SELECT DISTINCT job_id FROM ledger WHERE job_id = ANY(%s) AND pid = ANY(%s)", (stranded, list(cut_pids))
    ).fetchall()]
    refused = [job for job in ran_there if f"job {job}: lease" in cut_logs]
    finished_there = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND worker_id LIKE ANY(%s)",
                               stranded, pids_like(on[cut]))
    per_host = {host: db.scalar("SELECT count(*) FROM pgqueue.job WHERE state = 'completed' AND worker_id LIKE ANY(%s)",
                                pids_like(workers)) for host, workers in on.items()}
    score = scoreboard.measure(
        db.conn, name, stream.ids, started=started, recovery=back, hosts=len(hosts.names),
        processes=sum(len(w) for w in on.values()), cut_for_s=healed - partitioned, stranded=len(stranded),
        takeover_s=takeover, refused_by_fence=len(refused), completed_per_host=list(per_host.values()),
    )
    scoreboard.assert_sound(score, max_re_executions=len(stranded) + 8)
    assert cut_off_completions == 0, "the cut-off host completed jobs while it was cut off"
    assert finished_there == 0, "a stranded job's outcome came from the host that was cut off"
    assert score.re_executions >= len(ran_there) > 0, (ran_there, score.line())
    assert refused == ran_there, f"late outcomes not refused by the fence: {set(ran_there) - set(refused)}\n{cut_logs[-3000:]}"
    assert back is not None, f"the host cut off for {healed - partitioned:.0f} s never worked again:\n{cut_logs[-3000:]}"
    assert all(per_host.values()), per_host
    assert set(codes.values()) == {0}, fleet.outputs()[-5000:]


@pytest.mark.timeout(120)
def test_s17_four_hosts_one_cut_off_longer_than_its_lease(db, producer, fleet, hosts, ledger_socket):
    run_hosts(db, producer, fleet, hosts, ledger_socket, "s17 four hosts, one partitioned",
              cut_for=8, seconds_after=3)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_s17_long_partition_outlasts_tcp_timeouts(db, producer, fleet, hosts, ledger_socket):
    # 45 s: longer than the workers' tcp_user_timeout (30 s), so their connections are given up
    # while cut off and new ones must be made once the link is back.
    run_hosts(db, producer, fleet, hosts, ledger_socket, "s17 four hosts, one partitioned 45 s (long)",
              cut_for=45, seconds_after=20, lease=5.0)
