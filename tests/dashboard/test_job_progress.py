"""A running job's progress on the dashboard's job page."""

from __future__ import annotations

import httpx
import pytest

from .conftest import XSS

pytestmark = pytest.mark.timeout(60)


def test_job_page_shows_progress_escaped(app, conn, serve):
    job_id = app.enqueue("render", {"doc": 7})
    conn.execute(
        "UPDATE pgqueue.job SET state = 'active', progress = jsonb_build_object('value', 0.4, 'message', %s::text) "
        "WHERE id = %s",
        (f"page 4 of 10 {XSS}", job_id),
    )
    plain = app.enqueue("render", {"doc": 8})
    with httpx.Client(base_url=serve()) as client:
        page = client.get(f"/jobs/{job_id}").text
        assert 'id="progress"' in page and "40%" in page and "page 4 of 10" in page
        assert XSS not in page
        assert 'id="progress"' not in client.get(f"/jobs/{plain}").text
