"""The plugin's fixtures, pointed at the suite's server (the plugin itself is loaded by its entry point)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pgqueue_server_url(server_dsn: str) -> str:
    return server_dsn
