"""Helpers of the Django tests (a module of the project, so that test modules import it by a name
no other conftest shadows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
"""The project's directory, where manage.py is."""


def jobs(conn: Any, type_: str | None = None) -> list[tuple[Any, ...]]:
    """(id, type, queue, state, priority, data) of the jobs, oldest first."""
    where = "WHERE type = %s" if type_ else ""
    return conn.execute(
        f"SELECT id, type, queue, state::text, priority, data FROM pgqueue.job {where} ORDER BY id",
        (type_,) if type_ else None,
    ).fetchall()
