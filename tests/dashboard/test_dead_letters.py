"""The dashboard's dead-letter page: dead letters per queue, failed-on queue and type, escaped,
and redriven by a form that needs the CSRF token (and is absent when read-only)."""

from __future__ import annotations

import httpx
import pytest

import pgqueue
from pgqueue.dashboard.security import CSRF_COOKIE

from .conftest import XSS

pytestmark = pytest.mark.timeout(60)


def test_dead_letters_are_listed_and_redriven(app: pgqueue.App, conn, serve) -> None:
    ids = app.enqueue_many(
        [("charge", {"n": n}, {"queue": "billing", "dead_letter": "billing-dead"}) for n in range(3)]
    )
    app.enqueue(XSS, {}, queue="other", dead_letter=XSS)
    evil = app.enqueue(XSS, {}, queue="other", dead_letter=XSS)
    conn.execute(
        "UPDATE pgqueue.job SET state = 'failed', finished_at = now() WHERE id = ANY(%s)", ([*ids, evil],)
    )
    base = serve()
    with httpx.Client(base_url=base) as client:
        page = client.get("/dead-letters")
        assert page.status_code == 200 and XSS not in page.text
        assert 'data-queue="billing-dead" data-type="charge"' in page.text and "Redrive 3" in page.text
        token = client.cookies[CSRF_COOKIE]
        refused = client.post("/dead-letters/redrive", data={"queue": "billing-dead"})
        assert refused.status_code == 403
        done = client.post(
            "/dead-letters/redrive", data={"csrf": token, "queue": "billing-dead", "type": "charge"}
        )
        assert done.status_code == 303 and done.headers["location"] == "/dead-letters?redriven=3"
        assert "Redrove 3 jobs." in client.get("/dead-letters?redriven=3").text
    assert app.counts()["billing"] == {"failed": 3, "created": 3}
    with httpx.Client(base_url=serve(read_only=True)) as client:
        page = client.get("/dead-letters")
        assert page.status_code == 200 and "Redrive" not in page.text.replace("Redrive puts", "")
        assert client.post("/dead-letters/redrive", data={"queue": XSS}).status_code == 403
