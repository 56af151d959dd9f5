"""``pgqueue doctor``: check the database for what makes a queue slow or stuck (see :mod:`pgqueue.doctor`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .. import logs
from ..doctor import Thresholds, diagnose, healthy, render
from ..settings import export, listen_database_url, resolve_database_url
from .common import DatabaseUrl, Schema

Seconds = Annotated[
    float,
    typer.Option(
        "--max-transaction-age",
        min=0,
        help="Seconds a transaction (open, or idle in transaction) may hold the xmin horizon back "
        "before doctor calls it a problem.",
    ),
]


def doctor(
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    max_transaction_age: Seconds = 60.0,
) -> None:
    """Check the database's health for pgqueue; exit 0 if healthy, 1 if problems were found."""
    schema = export(database_url, schema)
    logs.setup("warning")
    url = resolve_database_url()
    listen_url = listen_database_url()
    findings = diagnose(url, schema, Thresholds(transaction_seconds=max_transaction_age), listen_url)
    ok = healthy(findings)
    if as_json:
        typer.echo(json.dumps({"healthy": ok, "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        render(findings, typer.echo)
    raise typer.Exit(0 if ok else 1)
