"""A PostgreSQL cluster of the suite's own, which it may crash and restart at will.

PostgreSQL refuses to run as root, so as root every server command runs as the
``postgres`` OS user (``runuser -u postgres --``) on a data directory that user owns.
The server listens on 127.0.0.1 only, on a free port, with password (SCRAM) authentication
for every role but the ``postgres`` superuser, so that the suite's DSNs carry real passwords.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 200
shared_buffers = 64MB
# The suite crashes the server on purpose, never the machine: skipping fsync keeps the
# disk quiet for other work, and crash recovery replays the WAL all the same.
fsync = off
full_page_writes = off
synchronous_commit = on
log_min_messages = warning
log_connections = off
log_disconnections = off
max_wal_size = 1GB
"""

HBA = """
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def find_bindir() -> Path:
    """PostgreSQL's server programs: ``PGQUEUE_PG_BINDIR``, else the newest /usr/lib/postgresql/*/bin."""
    explicit = os.environ.get("PGQUEUE_PG_BINDIR")
    candidates = [explicit] if explicit else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    for candidate in candidates:
        if candidate and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise RuntimeError(
        "no PostgreSQL server programs found (initdb, pg_ctl): install postgresql "
        "or set PGQUEUE_PG_BINDIR to their directory"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_server_user() -> list[str]:
    """The command prefix that runs a program as the OS user owning the cluster."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise RuntimeError("running as root needs runuser to start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--"]


class Cluster:
    """One throwaway cluster: ``start``, ``stop(mode)``, ``restart(mode)``, ``destroy``."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="pgqueue-reliability-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        conf = self.data / "postgresql.conf"
        self._append(conf, SERVER_SETTINGS.format(port=self.port))
        self._write(self.data / "pg_hba.conf", HBA)

    def _run(self, program: str, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [*as_server_user(), str(self.bindir / program), *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}\n{self.log_tail()}")
        return result.stdout

    def _append(self, path: Path, text: str) -> None:
        subprocess.run([*as_server_user(), "sh", "-c", f"cat >> '{path}'"], input=text, text=True, check=True)

    def _write(self, path: Path, text: str) -> None:
        subprocess.run([*as_server_user(), "sh", "-c", f"cat > '{path}'"], input=text, text=True, check=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- server state --------------------------------------------------------------------

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """``mode``: ``immediate`` (a crash: no checkpoint, recovery at start), ``fast`` or ``smart``."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> float:
        """Stop with ``mode``, stay down ``down_for`` seconds, start; return the seconds it was down."""
        stopped = time.monotonic()
        self.stop(mode)
        time.sleep(down_for)
        self.start()
        return time.monotonic() - stopped

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    # --- addresses -----------------------------------------------------------------------

    def dsn(self, dbname: str, user: str = "postgres", password: str | None = None,
            host: str | None = None, port: int | None = None) -> str:
        """A libpq URL; ``host``/``port`` default to the server's (override them for a proxy)."""
        auth = user if password is None else f"{user}:{password}"
        return (f"postgresql://{auth}@{host or self.host}:{port or self.port}/{dbname}"
                "?sslmode=disable&connect_timeout=5")
