"""The dashboard's ASGI app: pages, actions and ``/metrics`` on a :class:`pgqueue.App`'s database.

Pages are rendered on the server (Jinja2, autoescaped); every action is a POST with a CSRF
token, and none is offered or accepted in read-only mode. Statements run on the App's own
async pool.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import logs
from ..cron import next_tick
from ..db import admin, inspect, ops, queues, schedules
from ..db.operation import Operation
from ..errors import InvalidJob, JobNotFound, PgQueueError
from ..job import Job
from ..settings import known_passwords
from .chart import throughput_chart
from .metrics import CONTENT_TYPE, exposition
from .security import CSRF_FIELD, Credentials, Guard, csrf_ok

if TYPE_CHECKING:
    from ..app import App

HERE = Path(__file__).parent
PAGE_SIZE = 50
REFRESH_SECONDS = 5
ACTIONS = {
    # action: (past tense, the states it acts on)
    "retry": ("retried", ["failed", "cancelled"]),
    "cancel": ("cancelled", ["created", "retry", "active"]),
    "delete": ("deleted", None),
}
FILTER_FIELDS = ("queue", "type", "state", "error")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "-"
    seconds = (datetime.now(UTC) - value).total_seconds()
    return _duration(abs(seconds)) + (" ago" if seconds >= 0 else " from now")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _when(value: datetime | None) -> str:
    return value.astimezone().isoformat(sep=" ", timespec="seconds") if value else "-"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def _safe_message(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    for secret in known_passwords():
        text = text.replace(secret, "***")
    return logs.scrub(text)


class Dashboard:
    """The request handlers, bound to one App and one configuration."""

    def __init__(self, app: App, read_only: bool, base_path: str) -> None:
        self.app = app
        self.read_only = read_only
        self.base_path = base_path.rstrip("/")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
        )
        env.filters.update(ago=_ago, duration=_duration, when=_when, pretty=_pretty)
        self.templates = Jinja2Templates(env=env)

    async def run(self, operation: Operation[Any]) -> Any:
        return await self.app._aexecute(operation, None)

    def prefix(self, request: Request) -> str:
        return self.base_path or str(request.scope.get("root_path", "")).rstrip("/")

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.update(
            base=self.prefix(request),
            read_only=self.read_only,
            csrf=request.state.csrf,
            csrf_field=CSRF_FIELD,
            schema=self.app.schema,
            refresh=REFRESH_SECONDS,
            current=name.removesuffix(".html"),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def redirect(self, request: Request, path: str) -> Response:
        return RedirectResponse(self.prefix(request) + path, status_code=303)

    # --- pages ---------------------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        overview = await self.run(inspect.queue_overview(self.app.schema))
        settings = await self.run(queues.queue_settings(self.app.schema))
        minutes = await self.run(inspect.throughput(self.app.schema, 60))
        paused = {name for name, queue in settings.items() if queue["paused"]}
        idle = sorted(paused - {q.queue for q in overview})  # paused queues with no jobs yet
        return self.render(
            request,
            "queues.html",
            queues=overview,
            paused=paused,
            idle_paused=idle,
            chart=throughput_chart(minutes),
        )

    async def jobs(self, request: Request) -> Response:
        where, form = _filter(request.query_params)
        before = _int_param(request.query_params.get("before"))
        after = _int_param(request.query_params.get("after"))
        page = await self.run(
            inspect.list_jobs(self.app.schema, where, before=before, after=after, limit=PAGE_SIZE)
        )
        types = await self.run(inspect.job_types(self.app.schema))
        done = request.query_params.get("done")
        notice = None
        if done in ACTIONS:
            count = _int_param(request.query_params.get("count")) or 0
            notice = f"{ACTIONS[done][0].capitalize()} {count} job{'s' if count != 1 else ''}."
        return self.render(
            request,
            "jobs.html",
            page=page,
            form=form,
            query=_query(form),
            queues=sorted(types),
            types=sorted({t for names in types.values() for t in names}),
            states=inspect.STATES,
            notice=notice,
        )

    async def job(self, request: Request) -> Response:
        params = request.path_params
        job_id = params["job_id"] if "job_id" in params else params["job_uid"]
        try:
            job: Job = await self.run(ops.get_job(self.app.schema, job_id))
        except JobNotFound:
            return self.render(request, "error.html", 404, title="No such job", message=f"No job {job_id}.")
        notice = {
            "retry": "The job will run again.",
            "cancel": "The job was cancelled.",
            "refused": "Nothing changed: the job is not in a state that allows it.",
        }.get(request.query_params.get("done", ""))
        return self.render(request, "job.html", job=job, notice=notice)

    async def workers(self, request: Request) -> Response:
        workers = await self.run(inspect.worker_list(self.app.schema))
        return self.render(request, "workers.html", workers=workers, gone_after=inspect.GONE_AFTER)

    async def schedules(self, request: Request) -> Response:
        found, now = await self.run(schedules.list_schedules(self.app.schema))
        rows = [(spec, next_tick(spec, now)) for spec in found]
        return self.render(request, "schedules.html", schedules=rows, now=now)

    async def dead_letters(self, request: Request) -> Response:
        found = await self.run(admin.dead_letter_overview(self.app.schema))
        count = _int_param(request.query_params.get("redriven"))
        notice = None if count is None else f"Redrove {count} job{'s' if count != 1 else ''}."
        return self.render(request, "dead_letters.html", groups=found, notice=notice)

    async def metrics(self, request: Request) -> Response:
        counts = await self.run(ops.counts(self.app.schema))
        overview = await self.run(inspect.queue_overview(self.app.schema))
        return Response(exposition(lambda: (counts, overview)), media_type=CONTENT_TYPE)

    async def confirm(self, request: Request) -> Response:
        self.writable()
        action = request.query_params.get("action", "")
        if action not in ACTIONS:
            raise HTTPException(400, "unknown action")
        where, form = _filter(request.query_params)
        count = await self.run(inspect.count_jobs(self.app.schema, where, ACTIONS[action][1]))
        return self.render(request, "confirm.html", action=action, form=form, query=_query(form), count=count)

    # --- actions -------------------------------------------------------------------------

    def writable(self) -> None:
        if self.read_only:
            raise HTTPException(403, "this dashboard is read-only")

    async def checked_form(self, request: Request) -> Any:
        self.writable()
        form = await request.form()
        if not csrf_ok(request.state.csrf, form.get(CSRF_FIELD)):
            raise HTTPException(
                403, "the form's CSRF token is missing or wrong: reload the page and try again"
            )
        return form

    async def act_on_job(self, request: Request) -> Response:
        await self.checked_form(request)
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        schema = self.app.schema
        try:
            if action == "delete":
                await self.run(admin.delete_job(schema, job_id))
                return self.redirect(request, "/jobs?done=delete&count=1")
            if action == "retry":
                changed = await self.run(ops.retry_job(schema, job_id, self.app.notify))
            elif action == "cancel":
                changed = await self.run(ops.cancel_job(schema, job_id))
            else:
                raise HTTPException(404, "unknown action")
        except JobNotFound:
            raise HTTPException(404, f"no job {job_id}") from None
        return self.redirect(request, f"/jobs/{job_id}?done={action if changed else 'refused'}")

    async def act_on_queue(self, request: Request) -> Response:
        """Pause or resume the queue named in the form: workers check it in every claim."""
        form = await self.checked_form(request)
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            raise HTTPException(404, "unknown action")
        name = str(form.get("queue", ""))
        await self.run(queues.pause_queue(self.app.schema, name, action == "pause", self.app.notify))
        return self.redirect(request, "/")

    async def act_on_filter(self, request: Request) -> Response:
        form = await self.checked_form(request)
        action = form.get("action")
        if action not in ACTIONS:
            raise HTTPException(400, "unknown action")
        where, fields = _filter(form)
        schema = self.app.schema
        if action == "retry":
            count = await self.run(admin.retry_jobs(schema, where, self.app.notify))
        elif action == "cancel":
            count = await self.run(admin.cancel_jobs(schema, where))
        else:
            count = await self.run(admin.delete_jobs(schema, where))
        query = _query(fields)
        return self.redirect(request, f"/jobs?{query}{'&' if query else ''}done={action}&count={count}")

    async def redrive(self, request: Request) -> Response:
        """Redrive the dead letters of the queue (and type, if given) named in the form."""
        form = await self.checked_form(request)
        where = inspect.JobFilter(str(form.get("queue", "")), str(form.get("type") or "") or None)
        count = await self.run(admin.redrive(self.app.schema, where, self.app.notify))
        return self.redirect(request, f"/dead-letters?redriven={count}")

    # --- errors --------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if not hasattr(request.state, "csrf"):
            return Response(exc.detail, exc.status_code)
        return self.render(
            request, "error.html", exc.status_code, title=f"{exc.status_code}", message=exc.detail
        )

    async def bad_input(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "error.html", 400, title="Bad filter", message=_safe_message(exc))

    async def database_error(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "error.html", 503, title="Database error", message=_safe_message(exc))


def _int_param(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _filter(params: Any) -> tuple[inspect.JobFilter, dict[str, str]]:
    """The job filter in a query string or form, and its fields as given (empty ones left out)."""
    fields = {name: str(params.get(name) or "").strip() for name in FILTER_FIELDS}
    fields = {name: value for name, value in fields.items() if value}
    older = _int_param(params.get("older_than"))
    if older is not None:
        fields["older_than"] = str(older)
    where = inspect.JobFilter(
        queue=fields.get("queue"),
        type=fields.get("type"),
        state=fields.get("state"),
        error=fields.get("error"),
        older_than=timedelta(seconds=older) if older is not None else None,
    )
    return where, fields


def _query(fields: dict[str, str]) -> str:
    return urlencode(fields)


def create_app(
    app: App,
    *,
    read_only: bool = False,
    token: str | None = None,
    basic_auth: str | None = None,
    base_path: str = "",
) -> Guard:
    """The dashboard of ``app``'s queues as an ASGI app, to serve or mount.

    ``token`` or ``basic_auth`` (``"user:password"``) make every request authenticate; without
    either, anyone who can reach it may use it (``pgqueue dashboard`` binds to 127.0.0.1 then).
    ``read_only`` hides and refuses every action. ``base_path``: the URL prefix it is served
    under, when a proxy strips it (when mounted, the mount's own prefix is used).

    >>> from fastapi import FastAPI
    >>> api = FastAPI()
    >>> api.mount("/pgqueue", pgqueue.dashboard.create_app(app, token=os.environ["DASHBOARD_TOKEN"]))
    """
    credentials = Credentials(token, basic_auth)
    dashboard = Dashboard(app, read_only, base_path)
    routes = [
        Route("/", dashboard.queues, name="queues"),
        Route("/jobs", dashboard.jobs, name="jobs"),
        Route("/jobs/confirm", dashboard.confirm, name="confirm"),
        Route("/jobs/bulk", dashboard.act_on_filter, methods=["POST"], name="bulk"),
        Route("/jobs/{job_id:int}", dashboard.job, name="job"),
        Route("/jobs/{job_uid:uuid}", dashboard.job, name="job_by_uid"),
        Route("/jobs/{job_id:int}/{action:str}", dashboard.act_on_job, methods=["POST"], name="act"),
        Route("/queues/{action:str}", dashboard.act_on_queue, methods=["POST"], name="queue"),
        Route("/workers", dashboard.workers, name="workers"),
        Route("/schedules", dashboard.schedules, name="schedules"),
        Route("/dead-letters", dashboard.dead_letters, name="dead_letters"),
        Route("/dead-letters/redrive", dashboard.redrive, methods=["POST"], name="redrive"),
        Route("/metrics", dashboard.metrics, name="metrics"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    web = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: dashboard.http_error,
            InvalidJob: dashboard.bad_input,
            PgQueueError: dashboard.database_error,
            psycopg.Error: dashboard.database_error,
        },
    )
    return Guard(web, credentials, base_path)
