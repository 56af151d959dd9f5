"""``pgqueue dashboard``: serve the web dashboard (the ``dashboard`` extra) with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import logs
from ..app import App
from ..config import redact
from ..errors import ConfigurationError
from ..settings import export
from .common import DatabaseUrl, Schema


def dashboard(
    host: Annotated[
        str, typer.Option("--host", envvar="PGQUEUE_DASHBOARD_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", envvar="PGQUEUE_DASHBOARD_PORT", min=1, max=65535, help="Port to listen on."),
    ] = 8080,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only", envvar="PGQUEUE_DASHBOARD_READ_ONLY", help="Show jobs; offer no actions."
        ),
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="PGQUEUE_DASHBOARD_TOKEN",
            help="Require this token (open the dashboard once with ?token=..., or send it as Bearer).",
            show_default=False,
        ),
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            "--basic-auth",
            envvar="PGQUEUE_DASHBOARD_BASIC_AUTH",
            metavar="USER:PASSWORD",
            help="Require HTTP basic auth with this user and password.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the web dashboard: queues, throughput, jobs, workers and /metrics."""
    try:
        import uvicorn

        from ..dashboard import create_app
        from ..dashboard.security import Credentials, is_loopback
    except ImportError as exc:
        raise ConfigurationError(
            f"the dashboard needs its extra ({exc.name} is missing): pip install 'pgqueue[dashboard]'"
        ) from None
    credentials = Credentials(token, basic_auth)  # refuses malformed values
    if not credentials.required and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host} without authentication: "
            "pass --token (or PGQUEUE_DASHBOARD_TOKEN) or --basic-auth USER:PASSWORD, or bind to 127.0.0.1"
        )
    export(database_url, schema)
    logs.setup("info")
    app = App()
    asgi = create_app(app, read_only=read_only, token=token, basic_auth=basic_auth)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(
        f"pgqueue dashboard on http://{shown}:{port}/ for {redact(app.database_url)}, schema {app.schema!r}"
        + (" (read-only)" if read_only else ""),
        err=True,
    )
    try:
        uvicorn.run(asgi, host=host, port=port, log_level="warning", proxy_headers=False)
    finally:
        app.close()
