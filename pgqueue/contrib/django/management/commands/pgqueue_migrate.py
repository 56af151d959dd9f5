"""``manage.py pgqueue_migrate``: create or upgrade pgqueue's tables in the project's database.

pgqueue's schema is versioned by pgqueue itself (alembic, its own version table inside the
schema), not by a Django migration: the same tables serve producers and workers that are not
Django (``pgqueue work``, other services), and each pgqueue release knows which version it
needs. This runs the very migration ``pgqueue migrate`` runs, on ``DATABASES[PGQUEUE["DATABASE"]]``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pgqueue import migrate
from pgqueue.contrib.django.djangoapp import get_app
from pgqueue.errors import SchemaOutOfDate


class Command(BaseCommand):  # type: ignore[misc]
    help = "Create or upgrade pgqueue's tables (idempotent; safe to run from several processes at once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sql", action="store_true", help="Print the DDL instead of running it.")
        parser.add_argument(
            "--check", action="store_true", help="Exit 0 if the schema is up to date, 1 if it is not."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        app = get_app()
        if options["sql"]:
            self.stdout.write(migrate.upgrade_sql(app.schema), ending="")
            return
        if options["check"]:
            with app.connect("pgqueue-migrate") as conn:
                version = migrate.current_version(conn, app.schema)
            try:
                migrate.check_version(version, app.schema)
            except SchemaOutOfDate as exc:
                self.stderr.write(str(exc))
                raise SystemExit(1) from None
            self.stdout.write(f"schema {app.schema!r} is up to date (version {version})")
            return
        migrate.upgrade(app.database_url, app.schema)
        self.stdout.write(f"schema {app.schema!r} is at version {migrate.SCHEMA_VERSION}")
