"""Failover: the primary is stopped hard and its streaming standby promoted, under load.

A primary and a standby made with ``pg_basebackup -R`` listen on two ports; the workers (real
``pgqueue work`` processes) and a producer reach them through one multi-host URL with
``target_session_attrs=read-write``, so a new connection finds whichever is the primary.
Mid-run the primary is stopped with ``pg_ctl stop -m immediate`` and the standby promoted,
at once or 5 s late.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import reliability_app
import roles
import scoreboard
from fleet import Fleet, wait_for
from throwaway_cluster import Cluster, free_port

import pgqueue

DATABASE = "failover"


def pgqueue_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgqueue", *args]


class Standby(Cluster):
    """A streaming standby of ``primary``, copied with ``pg_basebackup -R``, on a port of its own."""

    def __init__(self, primary: Cluster) -> None:  # no initdb: the copy is the cluster
        self.bindir = primary.bindir
        self.root = Path(tempfile.mkdtemp(prefix="pgqueue-standby-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("pg_basebackup", "-D", str(self.data), "-h", primary.host, "-p", str(primary.port),
                  "-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
        self._append(self.data / "postgresql.conf", f"\nport = {self.port}\n")

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")


class Pair:
    """A primary with a migrated database (roles, grants, ledger) and its standby."""

    def __init__(self, synchronous: bool) -> None:
        self.primary = Cluster()
        self.standby: Standby | None = None
        self.primary._append(self.primary.data / "pg_hba.conf", "host replication postgres 127.0.0.1/32 trust\n")
        self.primary.start()
        with psycopg.connect(self.primary.dsn("postgres"), autocommit=True) as admin:
            admin.execute(roles.create_roles())
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
            admin.execute(roles.database_grants(DATABASE))
        owner = self.primary.dsn(DATABASE, roles.OWNER, roles.PASSWORDS[roles.OWNER])
        for args in (("migrate",), ("grants", "--worker", roles.WORKER, "--producer", roles.PRODUCER, "--apply")):
            done = subprocess.run(pgqueue_command(*args, "--database-url", owner), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        with psycopg.connect(self.primary.dsn(DATABASE), autocommit=True) as admin:
            admin.execute(scoreboard.LEDGER_DDL)
            admin.execute(roles.ledger_grants())
        self.standby = Standby(self.primary)
        self.standby.start()
        with psycopg.connect(self.primary.dsn("postgres"), autocommit=True) as admin:
            if synchronous:
                # After the copy: the standby, once promoted, must not wait for a standby of its own.
                admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                admin.execute("SELECT pg_reload_conf()")
            wanted = "sync" if synchronous else "async"
            wait_for(lambda: admin.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
                     == (wanted,), 30, f"the standby streaming ({wanted})")

    def dsn(self, role: str) -> str:
        """The multi-host URL, key=value form: both servers, the read-write one chosen."""
        password = roles.PASSWORDS.get(role)
        return (f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby_port} dbname={DATABASE} "
                f"user={role} password={password} target_session_attrs=read-write sslmode=disable "
                "connect_timeout=2")

    @property
    def standby_port(self) -> int:
        assert self.standby is not None
        return self.standby.port

    def destroy(self) -> None:
        for server in (self.standby, self.primary):
            if server is not None:
                server.destroy()


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    made = Pair(synchronous=request.param == "sync")
    try:
        yield made
    finally:
        made.destroy()


class Producer(threading.Thread):
    """Enqueues one job at a time, about ``rate`` a second; records the ids it got back and
    each enqueue that raised (which may or may not have committed)."""

    def __init__(self, app: pgqueue.App, rate: float = 100.0) -> None:
        super().__init__(name="producer", daemon=True)
        self.app, self.pause = app, 1.0 / rate
        self.acknowledged: list[tuple[float, int]] = []
        self.errors: list[tuple[float, str]] = []
        self.longest = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            began = time.time()
            try:
                job_id = self.app.enqueue("work", {"n": n, "ms": 10})
            except (psycopg.Error, pgqueue.PgQueueError) as exc:
                self.errors.append((time.time(), type(exc).__name__))
                time.sleep(0.05)
            else:
                assert job_id is not None
                self.acknowledged.append((time.time(), job_id))
            self.longest = max(self.longest, time.time() - began)
            n += 1
            time.sleep(self.pause)


def run_failover(pair: Pair, tmp_path: Path, name: str, *, synchronous: bool, promote_after: float) -> None:
    started = time.monotonic()
    fleet = Fleet(pair.dsn(roles.WORKER), pair.dsn(roles.WORKER), tmp_path)
    app = reliability_app.make_app(pair.dsn(roles.PRODUCER), enqueue_timeout=5.0)
    feeder = Producer(app)
    try:
        for _ in range(2):
            fleet.start("--concurrency", "8", "--lease-seconds", "3", "--rescue-interval", "0.5",
                        "--log-level", "info")
        with psycopg.connect(pair.primary.dsn(DATABASE), autocommit=True) as admin:
            wait_for(lambda: admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                           "'pgqueue-listener'").fetchone() == (2,), 30, "both workers listening")
        feeder.start()
        time.sleep(2.0)
        killed = time.time()
        pair.primary.stop("immediate")
        time.sleep(promote_after)
        assert pair.standby is not None
        pair.standby.promote()
        promoted = time.time()
        conn = psycopg.connect(pair.standby.dsn(DATABASE), autocommit=True)

        def completed_after(at: float) -> Any:
            return conn.execute("SELECT extract(epoch FROM min(finished_at)) FROM pgqueue.job "
                                "WHERE state = 'completed' AND finished_at > to_timestamp(%s)", (at,)).fetchone()[0]

        wait_for(lambda: completed_after(promoted) is not None, 30, "a job completed on the new primary")
        resumed = float(completed_after(promoted)) - promoted
        time.sleep(3.0)
        feeder.stopping.set()
        feeder.join(30)
        enqueued_again = min((at for at, _ in feeder.acknowledged if at > promoted), default=None)
        ids = [row[0] for row in conn.execute("SELECT id FROM pgqueue.job")]
        drained = scoreboard.wait_finished(conn, ids, timeout=60)
        waiting = conn.execute("SELECT count(*) FROM pgqueue.job WHERE state NOT IN ('completed', 'failed')"
                               ).fetchone()[0]
        codes = fleet.stop()
        present = set(ids)
        missing = [job_id for _, job_id in feeder.acknowledged if job_id not in present]
        outputs = fleet.outputs()
        score = scoreboard.measure(
            conn, name, ids, started=started, recovery=resumed,
            replication="sync" if synchronous else "async", promote_after_s=promote_after,
            acknowledged=len(feeder.acknowledged), acknowledged_lost=len(missing),
            enqueue_errors=len(feeder.errors), longest_enqueue_s=feeder.longest,
            producer_resumed_s=None if enqueued_again is None else enqueued_again - promoted,
            down_s=promoted - killed,
            unreachable_logs=outputs.count("database unreachable since"),
            reachable_logs=outputs.count("database reachable again"),
        )
        conn.close()
    finally:
        feeder.stopping.set()
        fleet.close()
        app.close()
    scoreboard.assert_sound(score)
    if synchronous:
        assert not missing, f"acknowledged enqueues lost with synchronous replication: {missing[:10]}"
    assert drained is not None and waiting == 0, f"{waiting} job(s) left waiting after the load ended"
    assert resumed < 2.5, f"workers resumed {resumed:.2f}s after the promotion"
    assert feeder.longest < 5.0 + 1.0, f"an enqueue took {feeder.longest:.1f}s (enqueue_timeout=5)"
    assert set(codes.values()) == {0}, outputs
    # One warning per worker when the database went away, one line when it came back.
    for worker in fleet.workers:
        log = worker.output()
        assert log.count("database unreachable since") == 1, log
        assert log.count("database reachable again") == 1, log
        noisy = [line for line in log.splitlines() if "WARNING" in line and "database unreachable" not in line and any(
            part in line for part in ("claim failed", "outcomes failed", "heartbeat failed", "connection lost",
                                      "handing jobs back failed", "error connecting", "discarding"))]
        assert not noisy, log
    assert "Traceback" not in outputs, outputs


@pytest.mark.parametrize("pair", ["sync"], indirect=True)
@pytest.mark.timeout(120)
def test_s20_failover_with_synchronous_replication_loses_no_acknowledged_job(pair, tmp_path):
    """With synchronous replication an enqueue returns only once the standby has its commit:
    every id the producer got back exists on the promoted standby."""
    run_failover(pair, tmp_path, "s20 failover (sync)", synchronous=True, promote_after=0.0)


@pytest.mark.parametrize("pair", ["async"], indirect=True)
@pytest.mark.timeout(120)
def test_s20_failover_with_asynchronous_replication_measures_what_is_lost(pair, tmp_path):
    """With asynchronous replication a commit returns before the standby has it: what can be
    lost is the last commits the primary made and had not yet streamed when it stopped
    (acknowledged enqueues, and job outcomes, which then run again). The count is printed;
    nothing else may be lost, and nothing completed twice."""
    run_failover(pair, tmp_path, "s20 failover (async)", synchronous=False, promote_after=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["sync", "async"], indirect=True)
@pytest.mark.timeout(180)
def test_s20_long_failover_with_the_promotion_five_seconds_late(pair, tmp_path, request):
    """The standby is promoted 5 s after the primary stopped: enqueues fail within their
    enqueue_timeout meanwhile, and work resumes within about 2 s of the promotion."""
    mode = request.node.callspec.params["pair"]
    run_failover(pair, tmp_path, f"s20 failover, promoted 5 s late ({mode})", synchronous=mode == "sync",
                 promote_after=5.0)
