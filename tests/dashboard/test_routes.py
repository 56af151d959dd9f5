"""Every route of the dashboard over real HTTP (uvicorn), on a real database: pages, escaping,
authentication, CSRF, read-only mode, actions, /metrics."""

from __future__ import annotations

import base64
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

import pgqueue
from pgqueue.dashboard import create_app
from pgqueue.dashboard.security import CSRF_COOKIE

from .conftest import XSS, serving

pytestmark = pytest.mark.timeout(60)


def _failed_jobs(app, conn, n, error="Traceback...\nConnectionError: SMTP timeout"):
    ids = app.enqueue_many(
        [("send-email", {"to": f"u{i}@example.com"}, {"queue": "emails"}) for i in range(n)]
    )
    conn.execute(
        "UPDATE pgqueue.job SET state = 'failed', attempts = 2, max_attempts = 2, finished_at = now(), "
        "error = %s, errors = jsonb_build_array("
        "    jsonb_build_object('attempt', 1, 'error', 'first: ' || %s::text),"
        "    jsonb_build_object('attempt', 2, 'error', %s::text)) "
        "WHERE id = ANY(%s)",
        (error, error, error, ids),
    )
    return ids


def _csrf(client: httpx.Client, url: str) -> str:
    client.get(url).raise_for_status()
    return client.cookies[CSRF_COOKIE]


def test_every_page_renders_and_job_text_is_escaped(app, conn, serve):
    failed = _failed_jobs(app, conn, 3)
    evil = app.enqueue("render", {"html": XSS}, queue=XSS)
    conn.execute("UPDATE pgqueue.job SET error = %s, state = 'failed' WHERE id = %s", (XSS, evil))
    conn.execute(
        "INSERT INTO pgqueue.worker (id, hostname, pid, queues, concurrency) VALUES (%s, 'h', 1, %s, 3)",
        (XSS, [XSS]),
    )
    base = serve()
    with httpx.Client(base_url=base) as client:
        pages = {
            path: client.get(path)
            for path in ("/", "/jobs", f"/jobs/{evil}", f"/jobs/{failed[0]}", "/workers")
        }
        for path, response in pages.items():
            assert response.status_code == 200, path
            assert XSS not in response.text, path
            assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[f"/jobs/{evil}"].text
        detail = pages[f"/jobs/{failed[0]}"].text
        assert "first: Traceback" in detail and "SMTP timeout" in detail  # every attempt's error
        assert re.search(
            r'data-queue="emails">\s*<td>.*?</td>\s*<td>.*?</td>\s*<td>0</td>', pages["/"].text, re.S
        )
        assert client.get("/static/style.css").status_code == 200
        assert client.get("/static/refresh.js").status_code == 200
        assert client.get("/jobs/999999").status_code == 404
        by_uid = client.get(f"/jobs/{evil.uid}")  # a job's page by its uid too
        assert by_uid.status_code == 200 and f"Job {evil}" in by_uid.text and str(evil.uid) in by_uid.text
        assert client.get("/jobs/00000000-0000-7000-8000-000000000000").status_code == 404
        assert client.get("/jobs?state=sleeping").status_code == 400


def test_filters_and_keyset_pages(app, conn, serve):
    _failed_jobs(app, conn, 3)
    app.enqueue_many([("resize", {"i": i}, {"queue": "images"}) for i in range(120)])
    base = serve()
    with httpx.Client(base_url=base) as client:
        shown = lambda r: [int(i) for i in re.findall(r'<tr data-id="(\d+)"', r.text)]  # noqa: E731
        first = client.get("/jobs", params={"queue": "images"})
        assert len(shown(first)) == 50 and shown(first) == sorted(shown(first), reverse=True)
        older = re.search(r'id="older" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
        second = client.get(older)
        assert shown(second)[0] == shown(first)[-1] - 1
        newer = re.search(r'id="newer" href="([^"]+)"', second.text).group(1).replace("&amp;", "&")
        assert shown(client.get(newer)) == shown(first)
        assert len(shown(client.get("/jobs", params={"state": "failed", "error": "smtp TIME"}))) == 3
        assert shown(client.get("/jobs", params={"state": "failed", "error": "nothing like it"})) == []
        assert len(shown(client.get("/jobs", params={"type": "send-email"}))) == 3


def test_token_is_required_and_works(app, serve):
    base = serve(token="t0ken-42")
    with httpx.Client(base_url=base) as client:
        for path in ("/", "/jobs", "/workers", "/metrics", "/static/style.css"):
            assert client.get(path).status_code == 401, path
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer t0ken-42"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer t0ken-42"}).status_code == 200
        # A browser trades ?token= for a cookie that is not the token, and the URL loses it.
        swap = client.get("/jobs?state=failed&token=t0ken-42")
        assert swap.status_code == 303 and swap.headers["location"] == "/jobs?state=failed"
        assert "t0ken-42" not in swap.headers["set-cookie"] and "HttpOnly" in swap.headers["set-cookie"]
        assert client.get("/jobs?state=failed").status_code == 200
    with httpx.Client(base_url=base, cookies={"pgqueue_auth": "forged"}) as client:
        assert client.get("/").status_code == 401


def test_basic_auth_is_required_and_works(app, serve):
    base = serve(basic_auth="admin:pa55word")
    with httpx.Client(base_url=base) as client:
        refused = client.get("/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/", auth=("admin", "wrong")).status_code == 401
        assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert client.get("/", auth=("admin", "pa55word")).status_code == 200
        assert client.get("/metrics", auth=("admin", "pa55word")).status_code == 200
        assert "pa55word" not in client.get("/", auth=("admin", "pa55word")).text
        assert (
            base64.b64encode(b"admin:pa55word").decode()
            not in client.get("/", auth=("admin", "pa55word")).text
        )


def test_actions_need_the_csrf_token(app, conn, serve):
    (job,) = _failed_jobs(app, conn, 1)
    base = serve()
    with httpx.Client(base_url=base) as client:
        token = _csrf(client, f"/jobs/{job}")
        assert client.post(f"/jobs/{job}/retry").status_code == 403
        assert client.post(f"/jobs/{job}/retry", data={"csrf": "0" * 64}).status_code == 403
        assert app.get_job(job).state is pgqueue.JobState.FAILED
        # Another site's form: the browser would not send the SameSite cookie; the field alone fails.
        with httpx.Client(base_url=base) as stranger:
            assert stranger.post(f"/jobs/{job}/retry", data={"csrf": token}).status_code == 403
        done = client.post(f"/jobs/{job}/retry", data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job}?done=retry"
        assert app.get_job(job).state is pgqueue.JobState.RETRY
        assert client.post(f"/jobs/{job}/cancel", data={"csrf": token}).status_code == 303
        assert app.get_job(job).state is pgqueue.JobState.CANCELLED
        assert (
            client.post(f"/jobs/{job}/cancel", data={"csrf": token})
            .headers["location"]
            .endswith("done=refused")
        )
        assert client.post(f"/jobs/{job}/delete", data={"csrf": token}).status_code == 303
        assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()[0] == 0
        assert client.post(f"/jobs/{job}/retry", data={"csrf": token}).status_code == 404


def test_actions_by_filter_confirm_the_count_first(app, conn, serve):
    _failed_jobs(app, conn, 4)
    _failed_jobs(app, conn, 2, error="disk full")
    app.enqueue_many([("send-email", {"i": i}, {"queue": "emails"}) for i in range(5)])
    base = serve()
    with httpx.Client(base_url=base) as client:
        confirm = client.get("/jobs/confirm", params={"action": "retry", "queue": "emails", "error": "smtp"})
        assert confirm.status_code == 200 and 'data-count="4"' in confirm.text
        token = client.cookies[CSRF_COOKIE]
        assert client.post("/jobs/bulk", data={"action": "retry", "queue": "emails"}).status_code == 403
        done = client.post(
            "/jobs/bulk", data={"csrf": token, "action": "retry", "queue": "emails", "error": "smtp"}
        )
        assert done.status_code == 303 and done.headers["location"].endswith("done=retry&count=4")
        assert "Retried 4 jobs." in client.get(done.headers["location"]).text
        states = dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall())
        assert states == {"retry": 4, "failed": 2, "created": 5}
        cancel = client.get("/jobs/confirm", params={"action": "cancel", "type": "send-email"})
        assert 'data-count="9"' in cancel.text  # the unfinished ones only
        client.post("/jobs/bulk", data={"csrf": token, "action": "delete", "state": "failed"})
        assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()[0] == 9


def test_read_only_hides_and_refuses_actions(app, conn, serve):
    (job,) = _failed_jobs(app, conn, 1)
    base = serve(read_only=True)
    with httpx.Client(base_url=base) as client:
        page = client.get(f"/jobs/{job}")
        assert page.status_code == 200 and "read-only" in page.text
        assert '<form method="post"' not in page.text and 'id="bulk"' not in client.get("/jobs").text
        token = client.cookies[CSRF_COOKIE]
        for action in ("retry", "cancel", "delete"):
            assert client.post(f"/jobs/{job}/{action}", data={"csrf": token}).status_code == 403
        assert client.post("/jobs/bulk", data={"csrf": token, "action": "delete"}).status_code == 403
        assert client.get("/jobs/confirm", params={"action": "delete"}).status_code == 403
    assert app.get_job(job).state is pgqueue.JobState.FAILED


def test_metrics_are_read_from_the_table(app, conn, serve):
    _failed_jobs(app, conn, 2)
    app.enqueue_many([("resize", {"i": i}, {"queue": "images"}) for i in range(3)])
    conn.execute("UPDATE pgqueue.job SET run_at = now() - interval '100 seconds' WHERE queue = 'images'")
    base = serve()
    with httpx.Client(base_url=base) as client:
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("pgqueue_jobs", (("queue", "emails"), ("state", "failed")))] == 2
    assert samples[("pgqueue_jobs", (("queue", "images"), ("state", "created")))] == 3
    assert samples[("pgqueue_jobs", (("queue", "images"), ("state", "active")))] == 0
    assert 99 < samples[("pgqueue_oldest_waiting_seconds", (("queue", "images"),))] < 200
    assert samples[("pgqueue_oldest_waiting_seconds", (("queue", "emails"),))] == 0


def test_no_password_is_ever_rendered(dsn):
    """An App whose URL has a password, on a schema never migrated: the error page names neither."""
    secret_url = f"{dsn} password=hunter2-secret"  # trust auth: the password is ignored, not refused
    app = pgqueue.App(secret_url, schema="not_migrated")
    with serving(app) as base, httpx.Client(base_url=base) as client:
        for path in ("/", "/jobs", "/workers", "/metrics"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "hunter2" not in response.text
        assert "pgqueue migrate" in client.get("/").text
    app.close()


def test_mounted_under_a_prefix_links_stay_inside_it(app, conn):
    (job,) = _failed_jobs(app, conn, 1)
    outer = Starlette(
        routes=[
            Mount("/ops/pgqueue", app=create_app(app)),
            Mount("/ops/locked", app=create_app(app, token="tk-1")),
            Mount("/proxied", app=create_app(app, token="tk-1", base_path="/outside/prefix/")),
        ]
    )
    with serving(app, outer) as base, httpx.Client(base_url=base) as client:
        page = client.get(f"/ops/pgqueue/jobs/{job}")
        assert page.status_code == 200
        assert 'href="/ops/pgqueue/static/style.css"' in page.text
        assert f'action="/ops/pgqueue/jobs/{job}/retry"' in page.text
        assert "Path=/ops/pgqueue" in page.headers["set-cookie"]
        token = client.cookies[CSRF_COOKIE]
        done = client.post(f"/ops/pgqueue/jobs/{job}/retry", data={"csrf": token})
        assert done.headers["location"] == f"/ops/pgqueue/jobs/{job}?done=retry"
        assert app.get_job(job).state is pgqueue.JobState.RETRY
        assert client.get("/ops/pgqueue/static/refresh.js").status_code == 200
        swap = client.get("/ops/locked/jobs?token=tk-1&state=failed")
        assert swap.headers["location"] == "/ops/locked/jobs?state=failed"
        assert "Path=/ops/locked;" in swap.headers["set-cookie"]
        assert client.get("/ops/locked/jobs?state=failed").status_code == 200
        swap = client.get("/proxied/jobs?token=tk-1")
        assert swap.headers["location"] == "/outside/prefix/jobs"
        page = client.get("/proxied/jobs", headers={"Authorization": "Bearer tk-1"})
        assert 'href="/outside/prefix/static/style.css"' in page.text


def test_queues_pause_and_resume_from_the_queues_page(app, conn, serve):
    _failed_jobs(app, conn, 1)
    base = serve()
    with httpx.Client(base_url=base) as client:
        token = _csrf(client, "/")
        assert client.post("/queues/pause", data={"queue": "emails"}).status_code == 403
        assert app.queue_settings() == {}
        done = client.post("/queues/pause", data={"csrf": token, "queue": "emails"})
        assert done.status_code == 303 and app.queue_settings()["emails"]["paused"] is True
        page = client.get("/").text
        assert "paused" in page and 'action="/queues/resume"' in page
        # A paused queue with no jobs is still listed, so it can be resumed.
        assert client.post("/queues/pause", data={"csrf": token, "queue": "reports"}).status_code == 303
        assert 'data-queue="reports"' in client.get("/").text
        assert client.post("/queues/resume", data={"csrf": token, "queue": "emails"}).status_code == 303
        assert app.queue_settings()["emails"]["paused"] is False
        assert client.post("/queues/stop", data={"csrf": token, "queue": "emails"}).status_code == 404
    with httpx.Client(base_url=serve(read_only=True)) as client:
        token = _csrf(client, "/")
        assert "/queues/pause" not in client.get("/").text
        assert client.post("/queues/pause", data={"csrf": token, "queue": "emails"}).status_code == 403
    assert app.queue_settings()["emails"]["paused"] is False


def test_schedules_page_lists_schedules_with_their_next_tick(app, serve):
    @app.task("nightly-report")
    def nightly_report(kind: str) -> None: ...

    app.schedule("nightly", "nightly-report", {"kind": "<script>alert(1)</script>"}, cron="30 2 * * *",
                 tz="Europe/Berlin")
    app.schedule("often", "nightly-report", {"kind": "x"}, every=30)
    with httpx.Client(base_url=serve()) as client:
        page = client.get("/schedules")
        assert page.status_code == 200
        assert 'data-schedule="nightly"' in page.text and 'data-schedule="often"' in page.text
        assert "30 2 * * *" in page.text and "Europe/Berlin" in page.text
        assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
        assert 'href="/schedules"' in client.get("/").text
