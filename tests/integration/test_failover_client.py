"""What a failover asks of pgqueue's own connections: enqueues under a time limit, pools that
reconnect about every second, read-only servers treated as lost connections, multi-host URLs,
and one log line per outage."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any
from urllib.parse import quote

import psycopg
import psycopg_pool
import pytest
from psycopg_pool.base import AttemptWithBackoff

import pgqueue
from pgqueue.db.reconnect import RECONNECT_DELAY_MAX, AsyncPromptPool, PromptAttempt, PromptPool
from pgqueue.worker.outage import Outage, connection_lost

pytestmark = pytest.mark.timeout(60)

NOBODY = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1"
"""A port nothing listens on: every connection attempt is refused."""


# --- enqueue_timeout ---------------------------------------------------------------------


def test_enqueue_timeout_defaults_to_ten_seconds_and_reads_its_environment_twin(monkeypatch):
    monkeypatch.delenv("PGQUEUE_ENQUEUE_TIMEOUT", raising=False)
    assert pgqueue.App(NOBODY).enqueue_timeout == 10.0
    assert pgqueue.App(NOBODY, enqueue_timeout=None).enqueue_timeout is None
    monkeypatch.setenv("PGQUEUE_ENQUEUE_TIMEOUT", "2.5")
    assert pgqueue.App(NOBODY).enqueue_timeout == 2.5
    assert pgqueue.App(NOBODY, enqueue_timeout=1).enqueue_timeout == 1.0
    monkeypatch.setenv("PGQUEUE_ENQUEUE_TIMEOUT", "none")
    assert pgqueue.App(NOBODY).enqueue_timeout is None
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("PGQUEUE_ENQUEUE_TIMEOUT", bad)
        with pytest.raises(pgqueue.ConfigurationError, match="PGQUEUE_ENQUEUE_TIMEOUT"):
            pgqueue.App(NOBODY)
    with pytest.raises(pgqueue.ConfigurationError, match="enqueue_timeout"):
        pgqueue.App(NOBODY, enqueue_timeout=0)


def test_an_enqueue_with_no_database_to_reach_gives_up_within_its_time_limit():
    app = pgqueue.App(NOBODY, enqueue_timeout=1.0)
    try:
        began = time.monotonic()
        with pytest.raises(pgqueue.EnqueueTimeout, match="nothing was written") as raised:
            app.enqueue("anything", {"n": 1})
        assert time.monotonic() - began < 2.5
        assert isinstance(raised.value, TimeoutError)
    finally:
        app.close()


def test_an_async_enqueue_with_no_database_to_reach_gives_up_within_its_time_limit():
    async def main() -> None:
        app = pgqueue.App(NOBODY, enqueue_timeout=1.0)
        try:
            began = time.monotonic()
            with pytest.raises(pgqueue.EnqueueTimeout):
                await app.aenqueue("anything", {"n": 1})
            assert time.monotonic() - began < 2.5
        finally:
            await app.aclose()

    asyncio.run(main())


def _locked(dsn: str) -> psycopg.Connection[Any]:
    """A connection holding the job table locked (the caller rolls it back and closes it)."""
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE pgqueue.job IN ACCESS EXCLUSIVE MODE")
    return locker


def test_an_enqueue_the_database_does_not_answer_in_time_may_or_may_not_have_been_written(dsn):
    app = pgqueue.App(dsn, enqueue_timeout=1.0)
    app.enqueue("warm-up")  # the pool is open and its connection stashed
    locker = _locked(dsn)
    try:
        began = time.monotonic()
        with pytest.raises(pgqueue.EnqueueTimeout, match="may or may not have been written"):
            app.enqueue("blocked")
        assert time.monotonic() - began < 2.5
    finally:
        locker.rollback()
        locker.close()
    assert app.enqueue("after") is not None  # the pool is still usable
    app.close()


def test_an_async_enqueue_the_database_does_not_answer_in_time_raises_enqueue_timeout(dsn):
    async def main() -> None:
        app = pgqueue.App(dsn, enqueue_timeout=1.0)
        await app.aenqueue("warm-up")
        locker = _locked(dsn)
        try:
            began = time.monotonic()
            with pytest.raises(pgqueue.EnqueueTimeout, match="may or may not"):
                await app.aenqueue("blocked")
            assert time.monotonic() - began < 2.5
        finally:
            locker.rollback()
            locker.close()
        assert await app.aenqueue("after") is not None
        await app.aclose()

    asyncio.run(main())


def test_an_enqueue_in_the_callers_transaction_is_not_bounded_by_the_apps_limit(dsn, conn):
    app = pgqueue.App(dsn, enqueue_timeout=0.5)
    with conn.transaction():
        conn.execute("SELECT pg_sleep(0.8)")
        assert app.enqueue("in-transaction", conn=conn) is not None
    app.close()


# --- read-only servers ---------------------------------------------------------------------


def test_a_read_only_server_fails_the_enqueue_and_the_next_one_gets_a_new_connection(dsn, conn):
    app = pgqueue.App(dsn)
    app.enqueue("first")
    stashed = app._pool._stash._conns[-1]
    # As after a failover: the server this connection reached no longer takes writes.
    stashed.execute("SET default_transaction_read_only = on")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        app.enqueue("refused")
    assert stashed.closed, "the read-only connection was kept"
    second = app.enqueue("second")
    assert second is not None
    assert conn.execute("SELECT type FROM pgqueue.job ORDER BY id").fetchall() == [("first",), ("second",)]
    app.close()


def test_a_server_that_stays_read_only_is_reported(dsn):
    read_only = psycopg.conninfo.make_conninfo(dsn, options="-c default_transaction_read_only=on")
    app = pgqueue.App(read_only, enqueue_timeout=3.0)
    for _ in range(2):
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            app.enqueue("never")
    app.close()


def test_read_only_and_lost_connections_are_outages_other_errors_are_not():
    assert connection_lost(psycopg.errors.ReadOnlySqlTransaction())
    assert connection_lost(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert connection_lost(TimeoutError())
    assert not connection_lost(psycopg.errors.QueryCanceled())
    assert not connection_lost(psycopg.errors.InsufficientPrivilege())


# --- multi-host URLs -----------------------------------------------------------------------


def test_a_multi_host_url_reaches_the_read_write_server(dsn):
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    auth = info["user"] + (f":{info['password']}" if info.get("password") else "")
    # The first address refuses connections, as a stopped primary does (a socket directory, as
    # the embedded server has, is written percent-encoded in a URL).
    where = quote(host, safe="") if host.startswith("/") else host
    url = f"postgresql://{auth}@{where}:1,{where}:{port}/{info['dbname']}?target_session_attrs=read-write"
    app = pgqueue.App(url)
    assert app.database_url == url
    parsed = psycopg.conninfo.conninfo_to_dict(app.database_url)
    assert parsed["host"] == f"{host},{host}" and parsed["port"] == f"1,{port}"
    assert parsed["target_session_attrs"] == "read-write"
    assert app.enqueue("reached") is not None
    app.close()


# --- reconnecting about every second --------------------------------------------------------


def test_pgqueues_pools_retry_a_connection_at_least_every_second_and_other_pools_are_untouched():
    attempt = PromptAttempt(timeout=60.0)
    delays = []
    for step in range(8):
        attempt.update_delay(float(step))
        delays.append(attempt.delay)
    assert delays[0] < 0.5 and max(delays) <= RECONNECT_DELAY_MAX
    theirs = AttemptWithBackoff(timeout=60.0)
    for step in range(4):
        theirs.update_delay(float(step))
    assert theirs.delay > 4.0  # psycopg_pool's own back-off, unchanged for users' pools
    assert AttemptWithBackoff.INITIAL_DELAY == 1.0


@pytest.mark.timeout(30)
def test_a_pool_reconnects_within_about_a_second_of_the_database_coming_back(dsn):
    """The database is away for 4 s (connections go to a port that refuses them), then back:
    psycopg_pool's own pool would next try after 1 + 2 + 4 = 7 s; pgqueue's within ~1 s."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    target = (info.get("host", "127.0.0.1"), int(info.get("port", 5432)))
    up = threading.Event()
    listener = _Relay(target, up)
    try:
        url = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=listener.port)
        pool = PromptPool(url, min_size=1, max_size=1, open=False, name="pgqueue-test", reconnect_timeout=30)
        pool.open(wait=False)
        time.sleep(4.0)
        back = time.monotonic()
        up.set()
        pool.wait(timeout=10)
        assert time.monotonic() - back < 1.6
        pool.close()
    finally:
        listener.close()


class _Relay:
    """A TCP relay to ``target`` that refuses (closes) connections until ``up`` is set."""

    def __init__(self, target: tuple[str, int], up: threading.Event) -> None:
        import socket

        self.target, self.up = target, up
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            startup = self._admit(client)
            if startup is None:
                client.close()
                continue
            host, port = self.target
            if host.startswith("/"):  # a server behind a Unix socket (the embedded one)
                server = socket.socket(socket.AF_UNIX)
                server.connect(f"{host}/.s.PGSQL.{port}")
            else:
                server = socket.create_connection(self.target)
            server.sendall(startup)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _admit(self, client: Any) -> bytes | None:
        """What of the client's first bytes the relay has read (to send on), or None to refuse it."""
        return b"" if self.up.is_set() else None

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class _RefusingRelay(_Relay):
    """A relay that refuses the connections whose startup message names an application in
    ``refused`` (the URL must ask for no SSL or GSS encryption, so the startup message comes first)."""

    def __init__(self, target: tuple[str, int], refused: set[str]) -> None:
        self.refused = refused
        up = threading.Event()
        up.set()
        super().__init__(target, up)

    def _admit(self, client: Any) -> bytes | None:
        try:
            head = _read(client, 4)
            body = _read(client, int.from_bytes(head, "big") - 4)
        except OSError:
            return None
        fields = body[4:].split(b"\0")  # after the protocol version: name, value, ..., then empty
        params = dict(zip(fields[0::2], fields[1::2], strict=False))
        name = params.get(b"application_name", b"").decode()
        return None if name in self.refused else head + body


def _read(sock: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the client went away")
        data += chunk
    return data


def _through(relay: _Relay, dsn: str) -> str:
    return psycopg.conninfo.make_conninfo(
        dsn, host="127.0.0.1", port=relay.port, sslmode="disable", gssencmode="disable"
    )


@pytest.mark.timeout(30)
def test_a_wait_for_a_connection_the_pool_cannot_open_is_the_outage_not_a_blocked_statement(dsn):
    """The worker's pool cannot open a connection (the relay refuses it, as a stopped primary with
    its standby not yet promoted would) until the time limit passes, while a new connection gets an
    answer (as it does once the standby is promoted): the wait was the database out of reach, and
    the error says so (a plain TimeoutError, which the worker reports as the outage), not a
    statement blocked behind a lock. Once the pool can connect again, it does."""
    from pgqueue.worker.database import WorkerDatabase
    from pgqueue.worker.outage import Blocked

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    relay = _RefusingRelay((info.get("host", "127.0.0.1"), int(info.get("port", 5432))), {"pgqueue-worker"})
    app = pgqueue.App(_through(relay, dsn))

    async def main() -> None:
        db = WorkerDatabase(app.runtime(), io_timeout=1.0, async_commit=False)
        await db.open()
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError) as raised:
                async with db.pooled():
                    pytest.fail("the pool lent a connection it could not have opened")
            assert not isinstance(raised.value, Blocked), raised.value
            assert 1.0 <= time.monotonic() - started < 5.0
            assert await db.answers()  # the server answered a new connection all along
            relay.refused.clear()
            async with db.pooled(timeout=5.0) as conn:
                cur = await conn.execute("SELECT current_setting('application_name')")
                assert await cur.fetchone() == ("pgqueue-worker",)
        finally:
            await db.close()

    try:
        asyncio.run(main())
    finally:
        app.close()
        relay.close()


@pytest.mark.timeout(30)
def test_a_wait_for_a_connection_while_every_one_is_stuck_is_reported_as_blocked(dsn):
    """Every connection of the worker's pool runs a statement that does not end in time, and the
    server answers a new connection: the part waiting for a connection is told it is blocked."""
    from pgqueue.worker.database import WorkerDatabase
    from pgqueue.worker.outage import Blocked

    app = pgqueue.App(dsn)

    async def main() -> None:
        db = WorkerDatabase(app.runtime(), io_timeout=10.0, async_commit=False)
        await db.open()
        busy = asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with db.pooled() as conn:
                holding += 1
                if holding == db.pool.max_size:
                    busy.set()
                await conn.execute("SELECT pg_sleep(2)")

        holders = [asyncio.create_task(hold()) for _ in range(db.pool.max_size)]
        try:
            await asyncio.wait_for(busy.wait(), 10)
            with pytest.raises(Blocked, match="though the server answers a new connection"):
                async with db.pooled(timeout=0.5):
                    pytest.fail("a connection was free")
            await asyncio.gather(*holders)
        finally:
            for holder in holders:
                holder.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            await db.close()

    try:
        asyncio.run(main())
    finally:
        app.close()


# --- logs ----------------------------------------------------------------------------------


def test_psycopg_pool_warnings_are_quietened_for_pgqueues_pools_only(caplog):
    AsyncPromptPool(NOBODY, open=False, name="pgqueue-quiet-test")
    pool_log = logging.getLogger("psycopg.pool")
    with caplog.at_level(logging.DEBUG):
        pool_log.warning("error connecting in %r: %s", "pgqueue-quiet-test", "refused")
        pool_log.warning("error connecting in %r: %s", "users-own-pool", "refused")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["error connecting in 'users-own-pool': refused"]
    assert any("pgqueue-quiet-test" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert psycopg_pool.ConnectionPool is not PromptPool


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(caplog):
    outage = Outage()
    lost = psycopg.OperationalError("server closed the connection unexpectedly\n\tThis probably means...")
    with caplog.at_level(logging.DEBUG, logger="pgqueue.worker"):
        for _ in range(5):
            outage.report(lost, "claim failed (%s); retrying in %.1fs", "closed", 1.0)
            outage.report(lost, "heartbeat failed (%s); reconnecting", "closed")
        outage.report(psycopg.errors.InsufficientPrivilege("no"), "rescue failed (%s)", "no")

        class Conn:
            class info:  # noqa: N801
                host, port = "10.0.0.2", 5432

        outage.reached(Conn())
        outage.reached(Conn())
    above_debug = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    assert len(above_debug) == 3, above_debug
    assert above_debug[0][0] == "WARNING" and above_debug[0][1].startswith("database unreachable since ")
    assert "retrying every 1 s" in above_debug[0][1] and "\n" not in above_debug[0][1]
    assert above_debug[1] == ("WARNING", "rescue failed (no)")
    assert above_debug[2][0] == "INFO"
    assert above_debug[2][1].startswith("database reachable again after ")
    assert above_debug[2][1].endswith("; server 10.0.0.2:5432")


# --- a statement stuck behind a lock is not an outage ------------------------------------


def test_a_claim_stuck_behind_a_lock_is_reported_as_blocked_not_as_the_database_unreachable(dsn, caplog):
    """The claim outlives the worker's time limit (5 s) behind a lock: a new connection still
    gets an answer, so the worker says the claim was blocked; it never says the database went away,
    and it claims again once the lock is gone."""
    from pgqueue.worker import Worker, WorkerConfig

    caplog.set_level(logging.DEBUG, logger="pgqueue")

    async def main() -> None:
        app = pgqueue.App(dsn)

        @app.task("after-the-lock")
        async def after_the_lock() -> str:
            return "ran"

        worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, listen=False, lease_seconds=2.0))
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(1.0)  # started, polling
            locker = await asyncio.to_thread(_locked, dsn)
            try:
                deadline = time.monotonic() + 15
                while "claim failed (no answer within 5 s" not in caplog.text:
                    assert time.monotonic() < deadline, caplog.text
                    await asyncio.sleep(0.1)
            finally:
                locker.rollback()
                locker.close()
            job_id = await app.aenqueue("after-the-lock")
            assert await app.await_result(job_id, timeout=15) == "ran"
        finally:
            worker.stop()
            await asyncio.wait_for(running, 15)
            await app.aclose()

    asyncio.run(main())
    assert "though the server answers a new connection" in caplog.text
    assert "database unreachable" not in caplog.text
