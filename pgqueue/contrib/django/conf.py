"""The ``PGQUEUE`` setting of a Django project, and the database it names.

>>> PGQUEUE = {"SCHEMA": "pgqueue", "QUEUES": ["emails"], "CONCURRENCY": 20, "DATABASE": "default"}

Every key is optional. ``DATABASE`` is an alias of ``DATABASES`` (default ``"default"``): pgqueue
connects where Django does, with the same settings. ``SCHEMA`` defaults to ``$PGQUEUE_SCHEMA``,
else ``pgqueue``. Any other key is a :class:`pgqueue.WorkerConfig` field in capitals
(``QUEUES``, ``CONCURRENCY``, ``POLL_INTERVAL``...): the default of ``manage.py pgqueue_work``'s
flag of that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from ...settings import WorkerConfig, check, declared

DEFAULT_ALIAS = "default"
_OWN_KEYS = ("SCHEMA", "DATABASE", "PREPARED_STATEMENTS")


def pgqueue_settings() -> Mapping[str, Any]:
    """The project's ``PGQUEUE`` dict (empty when unset), with its keys checked."""
    value = getattr(settings, "PGQUEUE", None) or {}
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured("settings.PGQUEUE must be a dict")
    fields = {f.name.upper() for f in dataclasses.fields(WorkerConfig)}
    unknown = sorted(set(value) - fields - set(_OWN_KEYS))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.PGQUEUE has unknown keys {unknown}: use {', '.join(_OWN_KEYS)} or worker settings "
            "such as QUEUES and CONCURRENCY"
        )
    return value


def database_alias() -> str:
    """The alias of the Django database pgqueue uses: ``PGQUEUE["DATABASE"]``, else ``"default"``."""
    alias = pgqueue_settings().get("DATABASE", DEFAULT_ALIAS)
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(f"PGQUEUE['DATABASE'] is {alias!r}, which is not in settings.DATABASES")
    return str(alias)


def worker_defaults() -> dict[str, Any]:
    """The :class:`pgqueue.WorkerConfig` fields ``PGQUEUE`` sets (``CONCURRENCY`` -> ``concurrency``),
    each checked as its flag would be."""
    given = pgqueue_settings()
    defaults = {}
    for name, _, spec in declared(WorkerConfig):
        if name.upper() in given:
            try:
                defaults[name] = check(name, spec, given[name.upper()])
            except Exception as exc:  # noqa: BLE001 - reported as the setting Django users wrote
                raise ImproperlyConfigured(f"settings.PGQUEUE[{name.upper()!r}]: {exc}") from None
    return defaults


# Keys of Django's connection parameters that are Python objects or Django's own, not libpq's.
_NOT_LIBPQ = {"context", "cursor_factory", "prepare_threshold", "client_encoding"}


def database_url(alias: str) -> str:
    """A libpq connection string for the Django database ``alias``, built from the parameters
    Django's own psycopg backend connects with (NAME, USER, PASSWORD, HOST, PORT and libpq
    OPTIONS such as ``sslmode`` or ``service``)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"pgqueue needs a PostgreSQL database; DATABASES[{alias!r}] uses Django's "
            f"{connection.vendor!r} backend"
        )
    libpq = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key in libpq and key not in _NOT_LIBPQ and value is not None and value != ""
    }
    return psycopg.conninfo.make_conninfo("", **params)
