"""The ``pgqueue`` command, run as a real subprocess against real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

import pgqueue
import pgqueue.migrate

SECRET = "s3cret"


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any database or pgqueue setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k != "DATABASE_URL"}
    env.update(extra)
    return env


def pgqueue_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        env=clean_env(**(env or {})),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def write_tasks(directory: Path) -> None:
    (directory / "cli_tasks.py").write_text(
        textwrap.dedent("""
        import pgqueue

        app = pgqueue.App()
        not_an_app = 42

        @app.task("add", queue="math")
        def add(a, b):
            return {"sum": a + b}

        @app.task("explode", queue="math", max_attempts=1)
        def explode():
            raise RuntimeError("the handler blew up")
    """)
    )


def enqueue_adds(dsn: str, count: int) -> list[int | None]:
    app = pgqueue.App(dsn)
    try:
        return app.enqueue_many([("add", {"a": i, "b": 1}, {"queue": "math"}) for i in range(count)])
    finally:
        app.close()


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0] == 1
        )


# --- migrate ---------------------------------------------------------------------------------


def test_migrate_an_empty_database_then_check_it(empty_dsn):
    first = pgqueue_cli("migrate", "--database-url", empty_dsn)
    assert first.returncode == 0, output(first)
    assert f"version {pgqueue.migrate.SCHEMA_VERSION}" in first.stdout
    assert " s]" in first.stdout  # how long it took
    check = pgqueue_cli("migrate", "--check", env={"PGQUEUE_DATABASE_URL": empty_dsn})
    assert check.returncode == 0, output(check)
    assert "up to date" in check.stdout
    again = pgqueue_cli("migrate", env={"DATABASE_URL": empty_dsn})
    assert again.returncode == 0, output(again)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT version_num FROM pgqueue.pgqueue_alembic_version").fetchall() == [
            (pgqueue.migrate.SCHEMA_VERSION,)
        ]


def test_check_fails_on_an_unmigrated_database(empty_dsn):
    result = pgqueue_cli("migrate", "--check", "--database-url", empty_dsn)
    assert result.returncode == 1
    assert "pgqueue migrate" in output(result)
    assert "Traceback" not in output(result)
    assert not schema_exists(empty_dsn, "pgqueue")


def test_sql_prints_the_ddl_and_touches_no_database(empty_dsn):
    result = pgqueue_cli("migrate", "--sql", "--schema", "jobs_here", env={"PGQUEUE_DATABASE_URL": empty_dsn})
    assert result.returncode == 0, output(result)
    assert 'CREATE TABLE "jobs_here".job' in result.stdout
    assert "CREATE INDEX job_fetch" in result.stdout
    assert not schema_exists(empty_dsn, "jobs_here")
    # No database is needed at all: an unreachable one is never contacted.
    offline = pgqueue_cli("migrate", "--sql", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert offline.returncode == 0, output(offline)
    assert 'CREATE TABLE "pgqueue".job' in offline.stdout


@pytest.mark.timeout(120)
def test_concurrent_migrations_all_succeed(empty_dsn):
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "migrate"],
            env=clean_env(PGQUEUE_DATABASE_URL=empty_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=90), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT version_num FROM pgqueue.pgqueue_alembic_version").fetchall() == [
            (pgqueue.migrate.SCHEMA_VERSION,)
        ]
        assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)


# --- status, show, retry, cancel ------------------------------------------------------------------


def test_status_show_cancel_and_retry_real_jobs(dsn, conn, tmp_path):
    write_tasks(tmp_path)
    env = {"PGQUEUE_DATABASE_URL": dsn}
    app = pgqueue.App(dsn)
    try:
        added = app.enqueue("add", {"a": 2, "b": 3}, queue="math")
        exploding = app.enqueue("explode", {}, queue="math", max_attempts=1)
        waiting = app.enqueue_many([("mail", {"to": "a@example.com"}, {"queue": "emails"})] * 3)
    finally:
        app.close()

    worked = pgqueue_cli("work", "cli_tasks:app", "--burst", "--queues", "math", env=env, cwd=tmp_path)
    assert worked.returncode == 0, output(worked)

    conn.execute(
        "INSERT INTO pgqueue.worker (id, hostname, pid, queues, concurrency) "
        "VALUES ('box:123:abc', 'box', 123, '{emails}', 7)"
    )
    status = pgqueue_cli("status", env=env)
    assert status.returncode == 0, output(status)
    lines = status.stdout.splitlines()
    header = next(line for line in lines if line.startswith("queue"))
    assert header.split()[:8] == [
        "queue",
        "created",
        "retry",
        "active",
        "completed",
        "cancelled",
        "failed",
        "total",
    ]
    assert next(line for line in lines if line.startswith("emails")).split()[:8] == [
        "emails",
        "3",
        "0",
        "0",
        "0",
        "0",
        "0",
        "3",
    ]
    assert next(line for line in lines if line.startswith("math")).split()[:8] == [
        "math",
        "0",
        "0",
        "0",
        "1",
        "0",
        "1",
        "2",
    ]
    assert any(line.startswith("box:123:abc") and " 7 " in line for line in lines)

    as_json = json.loads(pgqueue_cli("status", "--json", env=env).stdout)
    assert as_json["queues"]["emails"] == {"created": 3}
    assert [w["pid"] for w in as_json["workers"]] == [123]

    shown = pgqueue_cli("show", str(added), env=env)
    assert shown.returncode == 0, output(shown)
    assert "state      completed" in shown.stdout
    assert "attempts   1 of" in shown.stdout
    assert '{"sum": 5}' in shown.stdout

    failed = pgqueue_cli("show", str(exploding), env=env)
    assert "state      failed" in failed.stdout
    assert "RuntimeError: the handler blew up" in failed.stdout

    retried = pgqueue_cli("retry", str(exploding), env=env)
    assert retried.returncode == 0, output(retried)
    assert "state      retry" in retried.stdout
    not_retryable = pgqueue_cli("retry", str(added), env=env)
    assert not_retryable.returncode == 1
    assert "completed" in not_retryable.stderr

    cancelled = pgqueue_cli("cancel", str(waiting[0]), env=env)
    assert cancelled.returncode == 0, output(cancelled)
    assert "state      cancelled" in cancelled.stdout
    again = pgqueue_cli("cancel", str(waiting[0]), env=env)
    assert again.returncode == 1
    assert "already cancelled" in again.stderr
    states = dict(conn.execute("SELECT id, state::text FROM pgqueue.job").fetchall())
    assert (
        states[waiting[0]] == "cancelled" and states[exploding] == "retry" and states[waiting[1]] == "created"
    )

    missing = pgqueue_cli("show", "987654", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no job with id 987654"

    # A job is also named by its uid: show, cancel and retry take it; show and jobs --json print it.
    by_uid = pgqueue_cli("show", str(added.uid), env=env)
    assert by_uid.returncode == 0, output(by_uid)
    assert by_uid.stdout.startswith(f"job {added}: add") and f"uid        {added.uid}" in by_uid.stdout
    assert json.loads(pgqueue_cli("show", str(added.uid), "--json", env=env).stdout)["uid"] == str(added.uid)
    cancelled = pgqueue_cli("cancel", str(waiting[1].uid), env=env)
    assert cancelled.returncode == 0, output(cancelled)
    assert f"job {waiting[1]} cancelled" in cancelled.stdout
    assert pgqueue_cli("retry", str(waiting[1].uid), env=env).returncode == 0
    listed = json.loads(pgqueue_cli("jobs", "--json", env=env).stdout)["jobs"]
    assert {row["id"]: row["uid"] for row in listed}[waiting[2]] == str(waiting[2].uid)
    missing = pgqueue_cli("show", "00000000-0000-7000-8000-000000000000", env=env)
    assert missing.returncode == 1 and "00000000-0000-7000-8000-000000000000" in missing.stderr


# --- work (single process) ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_work_burst_logs_each_job(dsn, conn, tmp_path, fmt):
    write_tasks(tmp_path)
    ids = enqueue_adds(dsn, 20)
    result = pgqueue_cli(
        "work",
        "cli_tasks:app",
        "--burst",
        "--concurrency",
        "4",
        env={"PGQUEUE_DATABASE_URL": dsn, "PGQUEUE_LOG_FORMAT": fmt},
        cwd=tmp_path,
    )
    assert result.returncode == 0, output(result)
    assert conn.execute("SELECT count(*) FROM pgqueue.job WHERE state = 'completed'").fetchone() == (20,)
    lines = result.stderr.splitlines()
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        done = [e for e in entries if e.get("outcome") == "completed"]
        assert sorted(e["job_id"] for e in done) == sorted(ids)
        assert all(e["type"] == "add" and e["attempt"] == 1 and e["duration"] >= 0 for e in done)
        assert {e["level"] for e in entries} <= {"info", "warning"}
    else:
        done = [line for line in lines if "outcome=completed" in line]
        assert len(done) == 20
        assert all(" INFO " in line and "type=add" in line and "attempt=1" in line for line in done)


# --- bad input ---------------------------------------------------------------------------------------

HOSTILE = [
    (["status", "--schema", '"; DROP TABLE x; --'], 2, "invalid schema name"),
    (["migrate", "--schema", "Robert'); DROP TABLE students;--"], 2, "invalid schema name"),
    (["migrate", "--sql", "--schema", "x" * 80], 2, "invalid schema name"),
    (["work", "cli_tasks:app", "--queues", ","], 2, "queue name is empty"),
    (["work", "cli_tasks:app", "--queues", "math, ,pdf"], 2, "queue name is empty"),
    (["work", "cli_tasks:app", "--queues", "q" * 200], 2, "longer than 128"),
    (["work", "cli_tasks:app", "--queues", "bell\x07"], 2, "malformed"),
    (["work", "cli_tasks:app", "--concurrency", "-1"], 2, "--concurrency"),
    (["work", "cli_tasks:app", "--concurrency", "many"], 2, "--concurrency"),
    (["work", "cli_tasks:app", "--processes", "0"], 2, "--processes"),
    (["work", "cli_tasks:app", "--poll-interval", "0"], 2, "--poll-interval"),
    (["work", "cli_tasks:app", "--poll-interval", "nan"], 2, "--poll-interval"),
    (["work", "cli_tasks:app", "--shutdown-grace", "-5"], 2, "--shutdown-grace"),
    (["work", "cli_tasks:app", "--log-format", "xml"], 2, "--log-format"),
    (["work", "cli_tasks:app", "--log-level", "loud"], 2, "--log-level"),
    (["status", "--database-url", f"mysql://root:{SECRET}@localhost/db"], 2, "unsupported URL scheme"),
    (["migrate", "--database-url", f"{SECRET}@somewhere"], 2, "not a PostgreSQL URL"),
    (["status", "--database-url", ""], 2, "empty"),
    (["work", "no_such_module:app"], 2, "cannot import 'no_such_module'"),
    (["work", "cli_tasks:missing"], 2, "has no attribute 'missing'"),
    (["work", "cli_tasks:not_an_app"], 2, "not a pgqueue.App"),
    (["work", "../etc/passwd:app"], 2, "expected MODULE:APP"),
    (["work", "cli_tasks"], 2, "expected MODULE:APP"),
    (["show", "abc"], 2, "ID"),
    (["migrate", "--sql", "--check"], 2, "do not go together"),
    (["demo", "--users", "0"], 2, "--users"),
]


@pytest.mark.parametrize(("args", "code", "message"), HOSTILE, ids=[" ".join(a)[:60] for a, _, _ in HOSTILE])
def test_hostile_flags_give_a_clear_error(server_dsn, tmp_path, args, code, message):
    write_tasks(tmp_path)
    # Refused before any connection: a database that does not exist would fail differently (code 1).
    nowhere = psycopg.conninfo.make_conninfo(server_dsn, dbname="pgqueue_no_such_database")
    result = pgqueue_cli(*args, env={"PGQUEUE_DATABASE_URL": nowhere}, cwd=tmp_path, timeout=30)
    text = output(result)
    assert result.returncode == code, text
    assert message in text
    assert "Traceback" not in text
    assert SECRET not in text


def test_a_database_that_does_not_answer_is_one_line(server_dsn):
    host = str(psycopg.conninfo.conninfo_to_dict(server_dsn).get("host") or "127.0.0.1")
    if host.startswith("/"):  # a Unix socket (the embedded server): 127.0.0.1:1 answers no more
        host = "127.0.0.1"
    url = f"postgresql://postgres:{SECRET}@{host}:1/postgres"
    for args in (["status"], ["migrate"], ["migrate", "--check"], ["show", "1"]):
        result = pgqueue_cli(*args, "--database-url", url, timeout=30)
        assert result.returncode == 1, output(result)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in output(result)
        assert SECRET not in output(result)


# --- passwords ---------------------------------------------------------------------------------------


def with_password(dsn: str) -> tuple[list[str], str]:
    """URLs for the test database that carry a password, and that password.

    Under trust authentication any password works; where the server checks them, the real one is used.
    """
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    secret = str(info.get("password") or SECRET)
    urls = [psycopg.conninfo.make_conninfo(dsn, password=secret)]
    host = str(info.get("host", ""))
    if host and not host.startswith("/"):
        urls.append(
            f"postgresql://{info.get('user', 'postgres')}:{secret}@{host}:{info.get('port', 5432)}"
            f"/{info['dbname']}"
        )
    return urls, secret


@pytest.mark.timeout(120)
def test_a_password_is_never_printed(dsn, tmp_path):
    write_tasks(tmp_path)
    urls, secret = with_password(dsn)
    app = pgqueue.App(dsn)
    try:
        app.enqueue("add", {"a": 1, "b": 2}, queue="math")
        app.enqueue("explode", {}, queue="math")
    finally:
        app.close()
    for url in urls:
        bad_port = url.replace(":5432", ":1").replace("port=5432", "port=1")
        runs = [
            ["migrate", "--database-url", url],
            ["migrate", "--check", "--database-url", url],
            ["status", "--database-url", url],
            ["show", "1", "--database-url", url],
            ["show", "424242", "--database-url", url],
            ["work", "cli_tasks:app", "--burst", "--log-level", "debug", "--database-url", url],
            [
                "work",
                "cli_tasks:app",
                "--burst",
                "--log-format",
                "json",
                "--processes",
                "2",
                "--database-url",
                url,
            ],
            ["status", "--database-url", bad_port],
            ["migrate", "--database-url", bad_port],
        ]
        for args in runs:
            if args[0] == "work":
                # Work to do, so that the worker runs (and logs) more than its start and stop.
                enqueue_adds(dsn, 10)
            result = pgqueue_cli(*args, cwd=tmp_path, timeout=60)
            assert secret not in output(result), (args, output(result))
            assert "Traceback" not in output(result), (args, output(result))
        shown = pgqueue_cli("status", env={"PGQUEUE_DATABASE_URL": url})
        assert shown.returncode == 0, output(shown)
        if "://" in url:
            assert "postgres:***@" in shown.stdout


# --- the embedded default ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_embedded_default_starts_is_shared_and_stops(tmp_path):
    env = {"PGQUEUE_EMBEDDED_DIR": str(tmp_path / "pgdata")}
    try:
        url = pgqueue_cli("embedded", "url", env=env, timeout=90)
        assert url.returncode == 0, output(url)
        assert str(tmp_path / "pgdata") in url.stdout
        migrated = pgqueue_cli("migrate", env=env, timeout=90)
        assert migrated.returncode == 0, output(migrated)
        assert "using the embedded PostgreSQL server in" in migrated.stderr
        checked = pgqueue_cli("migrate", "--check", env=env, timeout=60)
        assert checked.returncode == 0, output(checked)
    finally:
        stopped = pgqueue_cli("embedded", "stop", env=env, timeout=60)
    assert stopped.returncode == 0, output(stopped)
    assert "stopped the embedded PostgreSQL server" in stopped.stdout
    again = pgqueue_cli("embedded", "stop", env=env, timeout=60)
    assert "not running" in again.stdout
