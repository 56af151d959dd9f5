"""Database URL spellings, password redaction and the schema name rule: pure helpers, no settings read.

Which database and schema to use is decided in :mod:`pgqueue.settings`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_PATTERN", "normalize_url", "redact", "validate_schema"]

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,55}$")
DEFAULT_SCHEMA = "pgqueue"


def validate_schema(schema: str) -> str:
    """Return ``schema`` if it is a safe, unquoted-style identifier; raise ConfigurationError otherwise.

    The limit of 56 characters leaves room for the notification channel name (``<schema>_jobs``) within
    PostgreSQL's 63-byte identifiers.
    """
    if not isinstance(schema, str) or not SCHEMA_PATTERN.match(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use 1-56 characters of a-z, 0-9 and _, "
            "not starting with a digit"
        )
    return schema


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
        raise ConfigurationError(f"unsupported URL scheme {scheme!r}: use postgresql:// (or postgres://)")
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
