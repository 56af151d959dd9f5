"""``pgqueue doctor``: check a database for what makes a PostgreSQL queue slow or stuck, and say
what to do about each finding.

Each check gives a :class:`Finding`: ``ok``, ``warning`` (worth knowing, not failing) or
``problem`` (the command exits 1). Every look-up is read-only; the LISTEN check sends one
notification that workers ignore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from .db import health, ops
from .db.driver import run
from .db.sql import channel, queries
from .db.version import SCHEMA_VERSION

OK, WARNING, PROBLEM = "ok", "warning", "problem"


@dataclass(frozen=True)
class Finding:
    """One check's result: its name, its status, what was found, and what to do about it."""

    check: str
    status: str
    detail: str
    advice: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Where doctor draws its lines."""

    transaction_seconds: float = 60.0
    """A transaction open (or idle in one) longer than this holds the xmin horizon back: problem."""
    stuck_seconds: float = 60.0
    """An active job whose lease expired longer ago than this was not rescued: problem."""
    dead_ratio: float = 0.2
    """Dead tuples over this share of a table's rows (and over 10,000): problem."""
    notify_usage: float = 0.5
    """The NOTIFY queue fuller than this share: problem (at 100 % NOTIFY fails)."""
    clock_skew_seconds: float = 2.0
    """This machine's clock further than this from the database's: problem."""


def diagnose(
    url: str, schema: str, thresholds: Thresholds | None = None, listen_url: str | None = None
) -> list[Finding]:
    """Run every check on the database at ``url`` (pgqueue's ``schema``) and return the findings."""
    limits = thresholds or Thresholds()
    findings: list[Finding] = []
    with psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="pgqueue-doctor") as conn:
        version = run(conn, ops.schema_version(schema))
        findings.append(_schema(version, schema))
        before = time.time()
        info = run(conn, health.server(schema))
        after = time.time()
        usable = run(conn, health.schema_usage(schema)) if version is not None else False
        tables = run(conn, health.tables(schema)) if usable else []
        findings += _autovacuum(info, tables, limits)
        findings.append(_grants(info["role"], schema, usable, tables, version is not None))
        idle = run(conn, health.idle_in_transaction(schema, limits.transaction_seconds))
        holders = run(conn, health.xmin_holders(schema))
        findings.append(_xmin(idle, holders, limits))
        findings.append(_notify(info["notify_usage"], limits))
        findings.append(_clock(info["db_clock"], before, after, limits))
        if version is not None and usable and all(t["can_select"] for t in tables if t["name"] == "job"):
            findings.append(_stuck(run(conn, health.stuck_jobs(schema, limits.stuck_seconds)), limits))
        findings.append(_listen(conn, listen_url or url, schema))
    return findings


def healthy(findings: list[Finding]) -> bool:
    return all(f.status != PROBLEM for f in findings)


def _schema(version: str | None, schema: str) -> Finding:
    if version == SCHEMA_VERSION:
        return Finding("schema", OK, f"schema {schema!r} is at version {version}")
    if version is None:
        return Finding(
            "schema", PROBLEM, f"schema {schema!r} is not in this database", "run `pgqueue migrate`"
        )
    if version < SCHEMA_VERSION:
        return Finding(
            "schema",
            PROBLEM,
            f"schema {schema!r} is at {version}, this pgqueue needs {SCHEMA_VERSION}",
            "run `pgqueue migrate`",
        )
    return Finding(
        "schema",
        PROBLEM,
        f"schema {schema!r} is at {version}, newer than this pgqueue ({SCHEMA_VERSION})",
        "upgrade pgqueue on this machine",
    )


def _autovacuum(info: dict[str, Any], tables: list[dict[str, Any]], limits: Thresholds) -> list[Finding]:
    found = []
    off = [t["name"] for t in tables if str(t["autovacuum_enabled"]).lower() in ("false", "off", "0", "no")]
    if not info["autovacuum"]:
        found.append(
            Finding(
                "autovacuum",
                WARNING,
                "autovacuum is off for the whole server: nothing vacuums the job table, whose dead rows "
                "(every completed, retried or deleted job leaves some) then slow every claim",
                "turn it on (autovacuum = on in postgresql.conf, then reload), or run "
                "`VACUUM (ANALYZE)` on pgqueue's tables every minute or so from cron",
            )
        )
    if off:
        found.append(
            Finding(
                "autovacuum",
                PROBLEM,
                f"autovacuum is disabled on table(s) {', '.join(off)}",
                "ALTER TABLE <schema>.<table> RESET (autovacuum_enabled)",
            )
        )
    elif info["autovacuum"]:
        found.append(Finding("autovacuum", OK, "autovacuum is on for the server and pgqueue's tables"))
    for table in tables:
        live, dead = table["live"], table["dead"]
        ratio = dead / (live + dead) if live + dead else 0.0
        if dead > 10_000 and ratio > limits.dead_ratio:
            found.append(
                Finding(
                    "dead tuples",
                    PROBLEM,
                    f"{table['name']}: {dead:,} dead rows, {ratio:.0%} of the table (last vacuum: "
                    f"{table['last_vacuum'] or 'never'})",
                    "VACUUM (ANALYZE) the table; if it does not shrink, look at the xmin horizon check",
                )
            )
    if not any(f.check == "dead tuples" for f in found) and tables:
        worst = max(tables, key=lambda t: t["dead"])
        found.append(Finding("dead tuples", OK, f"most dead rows: {worst['name']}, {worst['dead']:,}"))
    return found


WORKER_NEEDS = {"job": ("select", "update", "delete"), "worker": ("select", "insert", "update", "delete")}
"""What a worker role needs (``pgqueue grants --worker``); a producer role needs INSERT on job."""


def _grants(role: str, schema: str, usable: bool, tables: list[dict[str, Any]], migrated: bool) -> Finding:
    advice = "run `pgqueue grants --worker ROLE --producer ROLE --apply` as the schema's owner"
    if not migrated:
        return Finding("grants", WARNING, "not checked: the schema is missing")
    if not usable:
        return Finding("grants", PROBLEM, f"role {role!r} may not use schema {schema!r}", advice)
    by_name = {t["name"]: t for t in tables}
    missing = []
    for name, needed in WORKER_NEEDS.items():
        table = by_name.get(name, {})
        lacking = [p.upper() for p in needed if not table.get(f"can_{p}")]
        if lacking:
            missing.append(f"{', '.join(lacking)} on {name}")
    can_enqueue = bool(by_name.get("job", {}).get("can_insert"))
    can_work = not missing
    if can_work:
        also = "and enqueue" if can_enqueue else "(not enqueue: a worker role)"
        return Finding("grants", OK, f"role {role!r} may run workers {also}")
    held = sum(bool(t.get(f"can_{p}")) for name, t in by_name.items() for p in WORKER_NEEDS.get(name, ()))
    if can_enqueue and held == 0:
        return Finding("grants", OK, f"role {role!r} may enqueue (a producer role), not run workers")
    return Finding(
        "grants",
        PROBLEM,
        f"role {role!r} has some of a worker's privileges but lacks {'; '.join(missing)}"
        + ("" if can_enqueue else ", and may not enqueue (INSERT on job)"),
        advice,
    )


def _xmin(idle: list[dict[str, Any]], holders: list[dict[str, Any]], limits: Thresholds) -> Finding:
    old = [h for h in holders if h["held_for"] is not None and h["held_for"] > limits.transaction_seconds]
    slots = [h for h in holders if h["holder"].startswith("replication slot")]
    parts = [f"{h['holder']} for {h['held_for']:.0f}s" for h in old]
    # A session idle in transaction without a snapshot holds no xmin, but it will as soon as it
    # runs a statement, and it keeps its locks meanwhile: reported too, once per session.
    parts += [
        f"backend {s['pid']} ({s['role']}, {s['application']}) idle in transaction for {s['idle_for']:.0f}s"
        for s in idle
        if not any(h["holder"].startswith(f"backend {s['pid']} ") for h in old)
    ]
    parts += [f"{s['holder']} (xmin {s['xmin']})" for s in slots]
    if parts:
        return Finding(
            "xmin horizon",
            PROBLEM,
            "held back by "
            + "; ".join(dict.fromkeys(parts))
            + ": dead job rows cannot be vacuumed meanwhile",
            "end long transactions (commit, or pg_terminate_backend(pid)); set "
            "idle_in_transaction_session_timeout; drop unused replication slots; COMMIT PREPARED or "
            "ROLLBACK PREPARED forgotten prepared transactions",
        )
    return Finding(
        "xmin horizon",
        OK,
        f"no transaction, slot or prepared transaction older than {limits.transaction_seconds:g}s",
    )


def _notify(usage: float, limits: Thresholds) -> Finding:
    if usage > limits.notify_usage:
        return Finding(
            "notify queue",
            PROBLEM,
            f"the NOTIFY queue is {usage:.1%} full (at 100% every NOTIFY fails)",
            "find the session that LISTENs but never reads (a long transaction in a listening session "
            "stops the queue from draining) and end it",
        )
    return Finding("notify queue", OK, f"the NOTIFY queue is {usage:.2%} full")


def _clock(db_clock: datetime, before: float, after: float, limits: Thresholds) -> Finding:
    # The database's clock was read between before and after: compare with the midpoint.
    skew = db_clock.timestamp() - (before + after) / 2
    where = f"this machine's clock is {abs(skew):.3f}s {'behind' if skew > 0 else 'ahead of'} the database's"
    note = (
        " (measured from this machine only: worker rows record the database's time, so run doctor "
        "on each worker host)"
    )
    if abs(skew) > limits.clock_skew_seconds + (after - before):
        return Finding(
            "clock skew",
            PROBLEM,
            where + note,
            "run NTP (chrony, systemd-timesyncd) on this host and the database's; pgqueue's own timing "
            "uses the database's now(), but your handlers' and logs' times do not",
        )
    return Finding("clock skew", OK, where + note)


def _stuck(stuck: dict[str, Any], limits: Thresholds) -> Finding:
    if stuck["jobs"]:
        return Finding(
            "stuck jobs",
            PROBLEM,
            f"{stuck['jobs']} active job(s) whose lease expired over {limits.stuck_seconds:g}s ago "
            f"(first: {stuck['first_id']}, oldest expired {stuck['oldest_expired_for']:.0f}s ago): "
            "no worker is rescuing them",
            "start a worker (`pgqueue work`): its rescue sweep hands them back within seconds; if workers "
            "run, check their logs for rescue errors and that they use this schema",
        )
    return Finding("stuck jobs", OK, "no active job past its lease")


def _listen(conn: psycopg.Connection[Any], listen_url: str, schema: str) -> Finding:
    """LISTEN on a connection of its own, NOTIFY from ``conn``, and expect the notification.

    Through a pooler in transaction mode the LISTEN's server session is handed to other clients
    after the statement, and the probe is (almost always) lost. Limits: a pooler in session
    mode passes (LISTEN works there); a transaction pooler with a single idle server connection
    might deliver the probe by luck.
    """
    probe = f" doctor probe {time.time_ns()}"  # never a queue name: workers ignore it
    try:
        with psycopg.connect(
            listen_url, autocommit=True, connect_timeout=10, application_name="pgqueue-doctor-listen"
        ) as listener:
            listener.execute(queries(schema).listen)
            conn.execute(queries(schema).notify, {"channel": channel(schema), "queues": [probe]})
            heard = any(n.payload == probe for n in listener.notifies(timeout=3.0, stop_after=1))
    except psycopg.Error as exc:
        return Finding(
            "listen",
            PROBLEM,
            f"LISTEN failed: {exc}".strip(),
            "give workers a direct connection for LISTEN (PGQUEUE_LISTEN_DATABASE_URL)",
        )
    if heard:
        return Finding(
            "listen", OK, "LISTEN/NOTIFY works on this connection (no transaction pooler in between)"
        )
    return Finding(
        "listen",
        PROBLEM,
        "a NOTIFY sent here was not heard by a LISTEN on another connection within 3s: a pooler in "
        "transaction mode (pgbouncer) is in between, or notifications are delayed",
        "set PGQUEUE_LISTEN_DATABASE_URL to a direct connection for workers (or run them with "
        "--no-listen: they then poll)",
    )


def render(findings: list[Finding], echo: Callable[[str], None]) -> None:
    """The findings as text, one block each."""
    marks = {OK: "ok     ", WARNING: "WARNING", PROBLEM: "PROBLEM"}
    for f in findings:
        echo(f"{marks[f.status]}  {f.check}: {f.detail}")
        if f.advice and f.status != OK:
            echo(f"         -> {f.advice}")
    problems = sum(f.status == PROBLEM for f in findings)
    warnings = sum(f.status == WARNING for f in findings)
    echo(
        f"\n{problems} problem(s), {warnings} warning(s) at {datetime.now(UTC).isoformat(timespec='seconds')}"
    )
