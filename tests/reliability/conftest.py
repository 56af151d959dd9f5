"""Fixtures of the reliability suite: a throwaway PostgreSQL cluster it may crash, one fresh
database per test (migrated by the owner role, with least-privilege grants and the ledger),
worker fleets, a fault proxy, pgbouncer.

Everything runs on the suite's own cluster, never on a shared server: restarting it,
terminating its backends and creating roles touch nothing else. Tools the suite needs
(PostgreSQL server programs, pgbouncer, libfaketime) must be installed — run
``tests/reliability/setup-system.sh`` — and a test that needs a missing one fails.
"""

from __future__ import annotations

import glob
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
import reliability_app
import roles
import scoreboard
from fault_proxy import FaultProxy
from fleet import Fleet
from throwaway_cluster import Cluster, as_server_user, free_port

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests ``reliability`` (selected with ``-m reliability``); leave
    the long (``slow``) variants out unless the marker expression names them
    (``-m "reliability and slow"``)."""
    wants_slow = "slow" in (config.option.markexpr or "")
    kept, dropped = [], []
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)
            if item.get_closest_marker("slow") and not wants_slow:
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pgqueue_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgqueue", *args]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The suite's own PostgreSQL, with the owner, worker and producer roles, and a template database."""
    server = Cluster()
    try:
        server.start()
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(roles.create_roles())
            admin.execute('CREATE DATABASE "reliability_template"')
            admin.execute(roles.database_grants("reliability_template"))
        owner = server.dsn("reliability_template", roles.OWNER, roles.PASSWORDS[roles.OWNER])
        migrated = subprocess.run(pgqueue_command("migrate", "--database-url", owner),
                                  capture_output=True, text=True, timeout=120)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        granted = subprocess.run(
            pgqueue_command("grants", "--worker", roles.WORKER, "--producer", roles.PRODUCER, "--apply",
                            "--database-url", owner),
            capture_output=True, text=True, timeout=60,
        )
        assert granted.returncode == 0, granted.stdout + granted.stderr
        with psycopg.connect(server.dsn("reliability_template"), autocommit=True) as admin:
            admin.execute(scoreboard.LEDGER_DDL)
            admin.execute(roles.ledger_grants())
        yield server
    finally:
        server.destroy()


@dataclass
class Database:
    """One test's database on the throwaway cluster, and a DSN per role."""

    cluster: Cluster
    name: str
    conn: psycopg.Connection[Any]
    """Superuser, autocommit: for looking at what happened and for setting faults up."""

    def dsn(self, role: str = "postgres", **address: Any) -> str:
        password = roles.PASSWORDS.get(role)
        return self.cluster.dsn(self.name, role, password, **address)

    @property
    def admin(self) -> str:
        return self.dsn("postgres")

    @property
    def worker(self) -> str:
        return self.dsn(roles.WORKER)

    @property
    def producer(self) -> str:
        return self.dsn(roles.PRODUCER)

    @property
    def owner(self) -> str:
        return self.dsn(roles.OWNER)

    def scalar(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def cluster_connection(self, application_name: str) -> psycopg.Connection[Any]:
        """A new superuser connection to this database (the caller closes it)."""
        return psycopg.connect(self.admin, autocommit=True, application_name=application_name)

    def job(self, job_id: int) -> pgqueue.Job:
        """A job as the superuser sees it (the producer role may not read jobs)."""
        return pgqueue.App(self.admin).get_job(job_id, conn=self.conn)

    def reconnect(self) -> None:
        """After a server restart: a new inspection connection."""
        try:
            self.conn.close()
        except psycopg.Error:
            pass
        self.conn = psycopg.connect(self.admin, autocommit=True)


@pytest.fixture
def db(cluster: Cluster) -> Iterator[Database]:
    name = f"rel_{uuid.uuid4().hex[:10]}"
    if not cluster.running():
        cluster.start()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "reliability_template"')
        admin.execute(roles.database_grants(name))
    database = Database(cluster, name, psycopg.connect(cluster.dsn(name), autocommit=True))
    yield database
    database.conn.close()
    if not cluster.running():
        cluster.start()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def producer(db: Database) -> Iterator[pgqueue.App]:
    """The suite's App connected as the producer role (insert-only): jobs get their tasks' options."""
    app = reliability_app.make_app(db.producer)
    yield app
    app.close()


@pytest.fixture
def fleet(db: Database, tmp_path: Path) -> Iterator[Fleet]:
    """Workers connected as the worker role; the ledger written as the worker role too."""
    workers = Fleet(db.worker, db.worker, tmp_path)
    yield workers
    workers.close()


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(cluster.host, cluster.port)
    yield fault_proxy
    fault_proxy.close()


# --- pgbouncer ---------------------------------------------------------------------------


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(iter(glob.glob("/usr/sbin/pgbouncer")), None)
    if not found:
        raise RuntimeError("pgbouncer is not installed: run tests/reliability/setup-system.sh")
    return found


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, database: str) -> str:
        """A client URL of pgbouncer's ``worker`` or ``producer`` database (as that role)."""
        user = roles.WORKER if database == "worker" else roles.PRODUCER
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?sslmode=disable&connect_timeout=5"


@contextmanager
def running_pgbouncer(db: Database, *, worker_pool: int = 20, producer_pool: int = 20,
                      max_client_conn: int = 500) -> Iterator[PgBouncer]:
    """pgbouncer in transaction mode in front of ``db``, for the worker and producer roles.

    Databases ``worker`` and ``producer`` log in to PostgreSQL as those roles (with their
    passwords), with at most ``worker_pool`` and ``producer_pool`` server connections;
    clients reach pgbouncer with trust authentication on 127.0.0.1.
    """
    binary = pgbouncer_binary()
    # pgbouncer runs as the postgres OS user, which cannot enter pytest's private tmp_path.
    root = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
    port = free_port()
    server = f"host={db.cluster.host} port={db.cluster.port} dbname={db.name}"
    (root / "users.txt").write_text(f'"{roles.WORKER}" ""\n"{roles.PRODUCER}" ""\n')
    ini = root / "pgbouncer.ini"
    ini.write_text(f"""
[databases]
worker = {server} user={roles.WORKER} password={roles.PASSWORDS[roles.WORKER]} pool_size={worker_pool}
producer = {server} user={roles.PRODUCER} password={roles.PASSWORDS[roles.PRODUCER]} pool_size={producer_pool}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root / "users.txt"}
pool_mode = transaction
max_client_conn = {max_client_conn}
ignore_startup_parameters = extra_float_digits,options
logfile = {root / "pgbouncer.log"}
""")
    if as_server_user():
        for path in (root, *root.iterdir()):
            shutil.chown(path, "postgres")
    # One file descriptor per client and server connection: the 1024 a login session gets (runuser
    # resets the soft limit) is under max_client_conn for a few hundred workers, and pgbouncer then
    # fails every accept() ("Too many open files"), so workers that reconnect hang on connect.
    files = max_client_conn + worker_pool + producer_pool + 100
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = files if hard == resource.RLIM_INFINITY else min(files, hard)
    limit = ["prlimit", f"--nofile={files}"] if shutil.which("prlimit") else []
    process = subprocess.Popen([*as_server_user(), *limit, binary, str(ini)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    bouncer = PgBouncer(process, port, root / "pgbouncer.log")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                probe_dsn = f"postgresql://{roles.WORKER}@127.0.0.1:{port}/worker?sslmode=disable"
                with psycopg.connect(probe_dsn, connect_timeout=2, autocommit=True) as probe:
                    probe.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {bouncer.output()}") from None
                time.sleep(0.1)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pgbouncer(db: Database) -> Iterator[PgBouncer]:
    """pgbouncer in transaction mode in front of the test database (see :func:`running_pgbouncer`)."""
    with running_pgbouncer(db) as bouncer:
        yield bouncer
