"""The schema version this code expects, and where alembic records the version a database is at."""

from __future__ import annotations

from ..errors import SchemaOutOfDate

SCHEMA_VERSION = "0008"
"""The alembic revision this pgqueue's code expects; a test keeps it equal to the migrations' head."""

VERSION_TABLE = "pgqueue_alembic_version"
"""alembic's version table, inside pgqueue's schema (never the user's own ``alembic_version``)."""


def check_version(version: str | None, schema: str) -> None:
    """Raise SchemaOutOfDate unless ``version`` is the one this code expects."""
    if version == SCHEMA_VERSION:
        return
    if version is None:
        raise SchemaOutOfDate(f"pgqueue's schema {schema!r} is not in this database: run `pgqueue migrate`")
    if version < SCHEMA_VERSION:
        raise SchemaOutOfDate(
            f"pgqueue's schema {schema!r} is at version {version}, this pgqueue needs {SCHEMA_VERSION}: "
            "run `pgqueue migrate`"
        )
    raise SchemaOutOfDate(
        f"pgqueue's schema {schema!r} is at version {version}, newer than this pgqueue knows "
        f"({SCHEMA_VERSION}): upgrade pgqueue here"
    )
