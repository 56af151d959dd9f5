"""``pgqueue doctor`` against a deliberately unhealthy database, and a healthy one."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from test_cli import output, pgqueue_cli

pytestmark = pytest.mark.timeout(90)


def doctor(dsn: str, *args: str):
    return pgqueue_cli("doctor", "--database-url", dsn, *args)


def checks(result) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for finding in json.loads(result.stdout)["findings"]:
        found.setdefault(finding["check"], []).append(finding)
    return found


def test_an_unhealthy_database_reports_each_problem_and_exits_1(dsn, conn):
    job_id = conn.execute(
        "INSERT INTO pgqueue.job (type, queue, data, state, attempts, lease_id, lease_expires_at, worker_id) "
        "VALUES ('sync-crm', 'default', '{}', 'active', 1, gen_random_uuid(), now() - interval '10 minutes', "
        "'host:1:dead') RETURNING id"
    ).fetchone()[0]
    with psycopg.connect(dsn, application_name="forgotten-tx") as idle:
        idle.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # its snapshot holds the xmin
        idle.execute("SELECT count(*) FROM pgqueue.job")  # opens a transaction, then sits idle in it
        time.sleep(1.5)
        result = doctor(dsn, "--max-transaction-age", "1", "--json")
        text = doctor(dsn, "--max-transaction-age", "1")
    assert result.returncode == 1, output(result)
    found = checks(result)
    assert json.loads(result.stdout)["healthy"] is False
    xmin = found["xmin horizon"][0]
    assert xmin["status"] == "problem" and "forgotten-tx" in xmin["detail"] and "idle in transaction" in xmin["detail"]
    assert xmin["detail"].count("forgotten-tx") == 1
    stuck = found["stuck jobs"][0]
    assert stuck["status"] == "problem" and str(job_id) in stuck["detail"] and "pgqueue work" in stuck["advice"]
    with psycopg.connect(dsn) as check:
        autovacuum_on = check.execute("SHOW autovacuum").fetchone()[0] == "on"
    if not autovacuum_on:  # the suite's server runs without it: reported, as a warning
        assert any(f["status"] == "warning" and "whole server" in f["detail"] for f in found["autovacuum"])
    assert found["schema"][0]["status"] == "ok"
    assert found["grants"][0]["status"] == "ok"
    assert found["listen"][0]["status"] == "ok"
    assert text.returncode == 1
    assert "PROBLEM  xmin horizon" in text.stdout and "PROBLEM  stuck jobs" in text.stdout
    print(text.stdout)


def test_a_healthy_database_exits_0_and_a_disabled_table_autovacuum_is_a_problem(dsn, conn):
    result = doctor(dsn, "--json")
    assert result.returncode == 0, output(result)
    assert json.loads(result.stdout)["healthy"] is True
    conn.execute("ALTER TABLE pgqueue.job SET (autovacuum_enabled = false)")
    result = doctor(dsn)
    assert result.returncode == 1, output(result)
    assert "PROBLEM  autovacuum: autovacuum is disabled on table(s) job" in result.stdout


def test_missing_grants_are_reported(dsn, conn):
    conn.execute("DROP ROLE IF EXISTS doctor_reader")
    conn.execute("CREATE ROLE doctor_reader LOGIN")
    try:
        conn.execute("GRANT USAGE ON SCHEMA pgqueue TO doctor_reader")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA pgqueue TO doctor_reader")
        dbname = conn.info.dbname
        reader = psycopg.conninfo.make_conninfo(dsn, user="doctor_reader", dbname=dbname)
        result = doctor(reader, "--json")
        assert result.returncode == 1, output(result)
        grants = checks(result)["grants"][0]
        assert grants["status"] == "problem", grants
        assert "lacks UPDATE, DELETE on job; INSERT, UPDATE, DELETE on worker" in grants["detail"]
        assert "may not enqueue" in grants["detail"]
        conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA pgqueue FROM doctor_reader")
        conn.execute("GRANT INSERT ON pgqueue.job TO doctor_reader")
        conn.execute("GRANT SELECT ON pgqueue.pgqueue_alembic_version TO doctor_reader")
        producer = checks(doctor(reader, "--json"))["grants"][0]
        assert producer["status"] == "ok" and "a producer role" in producer["detail"], producer
    finally:
        conn.execute("DROP OWNED BY doctor_reader")
        conn.execute("DROP ROLE doctor_reader")
