"""The Django app config of ``pgqueue.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig


class PgQueueConfig(AppConfig):  # type: ignore[misc]
    """pgqueue's Django app: its management commands (``pgqueue_migrate``, ``pgqueue_work``).
    It has no models: pgqueue's tables are migrated by pgqueue (see ``pgqueue_migrate``)."""

    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"
