"""The Django project of these tests (``djproject``, app ``shop``), configured once per session
and pointed at each test's fresh database (the ``dsn`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django
import djproject.settings as project_settings
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        **{name: getattr(project_settings, name) for name in dir(project_settings) if name.isupper()}
    )
    django.setup()


@pytest.fixture
def project(dsn: str) -> Iterator[Any]:
    """Django's default database is the test's; an ``orders`` table is there. Yields the App."""
    from django.db import connection, connections

    from pgqueue.contrib.django.djangoapp import get_app

    connections.close_all()
    settings.DATABASES["default"].update(project_settings.database(dsn))
    app = get_app()
    app.reconfigure()
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE orders (id int PRIMARY KEY, shipped boolean NOT NULL DEFAULT false)")
    yield app
    app.close()
    connections.close_all()


@pytest.fixture
async def aproject(project: Any) -> Any:
    """``project`` for async tests: the App's async pool is closed on the test's own event loop."""
    yield project
    await project.aclose()
