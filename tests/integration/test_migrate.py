"""Migrations: from an empty database, again, concurrently, in a custom schema, offline, and back down."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

import pgqueue
from pgqueue import ConfigurationError, SchemaOutOfDate, migrate

BAD_SCHEMAS = ["Bad", "1x", 'a"b', '"; DROP TABLE x; --', "a" * 57, "", "jobs-x"]

CATALOG_SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "schema_catalog.txt"

# Everything the migrations can put in a schema, read from pg_catalog in a stable order. The
# schema's own name is written as {schema}, so that any schema name gives the same text.
CATALOG_QUERIES = {
    "type": """
        SELECT t.typname, t.typtype,
               coalesce((SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                         FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t
        WHERE t.typnamespace = %(ns)s AND t.typtype IN ('d', 'e', 'm', 'r')
        ORDER BY t.typname""",
    "relation": """
        SELECT c.relname, c.relkind, c.relpersistence, coalesce(array_to_string(c.reloptions, ', '), '')
        FROM pg_class c WHERE c.relnamespace = %(ns)s ORDER BY c.relname""",
    "column": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity, a.attgenerated,
               coalesce(co.collname, '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
        WHERE c.relnamespace = %(ns)s AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0
              AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum""",
    "constraint": """
        SELECT coalesce(c.relname, ''), k.conname, k.contype, pg_get_constraintdef(k.oid)
        FROM pg_constraint k LEFT JOIN pg_class c ON c.oid = k.conrelid
        -- PostgreSQL 18 also lists NOT NULL as constraints ('n'); the columns already say it.
        WHERE k.connamespace = %(ns)s AND k.contype <> 'n' ORDER BY c.relname, k.conname""",
    "index": """
        SELECT c.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = %(ns)s ORDER BY c.relname""",
    "sequence": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
               s.seqcache, s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        WHERE c.relnamespace = %(ns)s ORDER BY c.relname""",
    "function": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p WHERE p.pronamespace = %(ns)s ORDER BY p.proname, 2""",
    "trigger": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(ns)s AND NOT t.tgisinternal ORDER BY c.relname, t.tgname""",
    "comment": """
        SELECT c.relname, d.objsubid, d.description
        FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
        WHERE c.relnamespace = %(ns)s ORDER BY c.relname, d.objsubid""",
}


def catalog(conn: psycopg.Connection[Any], schema: str) -> str:
    """The schema's catalog as text: types, relations, columns, constraints, indexes and more."""
    row = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    assert row is not None, f"no schema {schema!r}"
    lines = []
    for kind, query in CATALOG_QUERIES.items():
        for values in conn.execute(query, {"ns": row[0]}).fetchall():
            lines.append(" | ".join([kind, *(str(value) for value in values)]))
    text = "\n".join(lines) + "\n"
    return text.replace(f'"{schema}".', "{schema}.").replace(f"{schema}.", "{schema}.")


def tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {row[0] for row in rows}


def schemas(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
    ).fetchall()
    return {row[0] for row in rows}


def version_rows(conn: psycopg.Connection[Any], schema: str = "pgqueue") -> list[tuple[Any, ...]]:
    return conn.execute(f'SELECT version_num FROM "{schema}".pgqueue_alembic_version').fetchall()


def test_upgrade_from_empty_creates_the_schema_tables_and_fetch_index(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn, "pgqueue")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert tables(conn, "pgqueue") == {"job", "worker", "queue", "schedule", "job_key", "flow_start", "flow_cursor", "dependency", "subscription",
            "pgqueue_alembic_version"}
        assert version_rows(conn) == [(migrate.SCHEMA_VERSION,)]
        indexes = dict(
            conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'pgqueue'").fetchall()
        )
        # The claim walks this index in its own order; only waiting rows are in it.
        assert "(queue, priority DESC, run_at, id) WHERE (state < 'active'" in indexes["job_fetch"]
        assert "UNIQUE" in indexes["job_unique_key"]
        assert migrate.current_version(conn, "pgqueue") == migrate.SCHEMA_VERSION
        # Nothing lands outside pgqueue's schema.
        assert tables(conn, "public") == set()


@pytest.mark.parametrize("schema", ["pgqueue", "jobs_x"])
def test_upgrade_gives_the_catalog_in_the_snapshot(empty_dsn: str, schema: str) -> None:
    migrate.upgrade(empty_dsn, schema)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        migrated = catalog(conn, schema)
    assert migrated == CATALOG_SNAPSHOT.read_text(encoding="utf-8")

    # Down to nothing and back up gives the same catalog again.
    migrate.downgrade(empty_dsn, schema, "base")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert tables(conn, schema) <= {"pgqueue_alembic_version"}
    migrate.upgrade(empty_dsn, schema)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert catalog(conn, schema) == migrated

    # The offline script, run by hand, gives it too.
    offline = "jobs_offline"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(migrate.upgrade_sql(offline))
        assert catalog(conn, offline) == migrated


def test_rerunning_upgrade_changes_nothing(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn, "pgqueue")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue.job (type, queue, data) VALUES ('t', 'q', '{}')")
        before = conn.execute(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'pgqueue' ORDER BY c.oid"
        ).fetchall()
    migrate.upgrade(empty_dsn, "pgqueue")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        after = conn.execute(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'pgqueue' ORDER BY c.oid"
        ).fetchall()
        assert after == before
        assert version_rows(conn) == [(migrate.SCHEMA_VERSION,)]
        assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (1,)


UPGRADE = "import sys; from pgqueue import migrate; migrate.upgrade(sys.argv[1], 'pgqueue'); print('done')"


def wait_for_blocked_migrations(conn: psycopg.Connection[Any], count: int, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'pgqueue-migrate' AND wait_event_type = 'Lock'"
        ).fetchone()
        if row and row[0] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} migrations never all waited on a lock")


@pytest.mark.timeout(90)
def test_concurrent_upgrades_from_separate_processes_all_succeed(empty_dsn: str) -> None:
    # An uncommitted CREATE SCHEMA holds every upgrade at its start; rolling it back releases
    # all four at the same moment, so they really race for the same DDL.
    with psycopg.connect(empty_dsn) as gate, psycopg.connect(empty_dsn, autocommit=True) as observer:
        gate.execute("CREATE SCHEMA pgqueue")
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", UPGRADE, empty_dsn],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            wait_for_blocked_migrations(observer, 4)
            gate.rollback()
            results = [process.communicate(timeout=60) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err
        assert out.strip() == "done"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert version_rows(conn) == [(migrate.SCHEMA_VERSION,)]
        assert tables(conn, "pgqueue") == {"job", "worker", "queue", "schedule", "job_key", "flow_start", "flow_cursor", "dependency", "subscription",
            "pgqueue_alembic_version"}


def test_concurrent_upgrades_from_threads_all_succeed(empty_dsn: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def upgrade() -> None:
        start.wait()
        try:
            migrate.upgrade(empty_dsn, "pgqueue")
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert version_rows(conn) == [(migrate.SCHEMA_VERSION,)]


def test_custom_schema_never_touches_the_users_alembic_version(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('users_own_head')")
        columns_before = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'alembic_version' ORDER BY column_name"
        ).fetchall()
        xmin_before = conn.execute("SELECT xmin::text FROM public.alembic_version").fetchall()

    migrate.upgrade(empty_dsn, "jobs_x")
    migrate.upgrade(empty_dsn, "jobs_x")

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [
            ("users_own_head",)
        ]
        assert conn.execute("SELECT xmin::text FROM public.alembic_version").fetchall() == xmin_before
        assert (
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'alembic_version' ORDER BY column_name"
            ).fetchall()
            == columns_before
        )
        assert schemas(conn) == {"public", "jobs_x"}
        assert tables(conn, "jobs_x") == {"job", "worker", "queue", "schedule", "job_key", "flow_start", "flow_cursor", "dependency", "subscription",
            "pgqueue_alembic_version"}
        assert tables(conn, "public") == {"alembic_version"}
        assert version_rows(conn, "jobs_x") == [(migrate.SCHEMA_VERSION,)]
        assert migrate.current_version(conn, "jobs_x") == migrate.SCHEMA_VERSION
        assert migrate.current_version(conn, "pgqueue") is None

    with pgqueue.App(empty_dsn, schema="jobs_x") as app:
        job_id = app.enqueue("t", {"a": 1})
        assert app.get_job(job_id).data == {"a": 1}
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id FROM jobs_x.job").fetchall() == [(job_id,)]


def test_two_schemas_in_one_database_are_independent(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn, "pgqueue")
    migrate.upgrade(empty_dsn, "jobs_x")
    migrate.downgrade(empty_dsn, "jobs_x", "base")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert tables(conn, "pgqueue") == {"job", "worker", "queue", "schedule", "job_key", "flow_start", "flow_cursor", "dependency", "subscription",
            "pgqueue_alembic_version"}
        assert migrate.current_version(conn, "pgqueue") == migrate.SCHEMA_VERSION
        assert migrate.current_version(conn, "jobs_x") is None
        assert "job" not in tables(conn, "jobs_x")


def test_upgrade_sql_prints_the_ddl_and_runs_nothing(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # If the offline mode connected anywhere, libpq's defaults would lead it to this empty database.
    info = psycopg.conninfo.conninfo_to_dict(empty_dsn)
    monkeypatch.setenv("PGHOST", str(info.get("host", "")))
    monkeypatch.setenv("PGPORT", str(info.get("port", "5432")))
    monkeypatch.setenv("PGUSER", str(info.get("user", "")))
    monkeypatch.setenv("PGDATABASE", str(info["dbname"]))
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", empty_dsn)
    monkeypatch.setenv("DATABASE_URL", empty_dsn)

    script = migrate.upgrade_sql("jobs_sql")

    assert 'CREATE SCHEMA IF NOT EXISTS "jobs_sql"' in script
    assert 'CREATE TABLE "jobs_sql".job' in script
    assert "CREATE TABLE jobs_sql.pgqueue_alembic_version" in script
    assert "INSERT INTO jobs_sql.pgqueue_alembic_version (version_num) VALUES ('0001')" in script
    assert "CREATE INDEX job_fetch" in script
    assert "alembic_version " not in script.replace("pgqueue_alembic_version", "")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert "jobs_sql" not in schemas(conn)
        # What a DBA runs by hand gives the same schema the online upgrade does.
        conn.execute(script)
        assert tables(conn, "jobs_sql") == {"job", "worker", "queue", "schedule", "job_key", "flow_start", "flow_cursor", "dependency", "subscription",
            "pgqueue_alembic_version"}
        assert migrate.current_version(conn, "jobs_sql") == migrate.SCHEMA_VERSION


def test_schema_version_is_the_migrations_head() -> None:
    config = migrate.alembic_config(None, "pgqueue")
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [migrate.SCHEMA_VERSION]
    assert str(migrate.migrations_dir()) == config.get_main_option("script_location")


def test_the_version_tables_name_is_written_once_in_the_package() -> None:
    package = Path(migrate.__file__).resolve().parent
    naming = [
        path.relative_to(package).as_posix()
        for path in sorted(package.rglob("*"))
        if path.suffix in (".py", ".sql", ".mako")
        and migrate.VERSION_TABLE in path.read_text(encoding="utf-8")
    ]
    assert naming == ["db/version.py"]


def test_current_version_and_check_version(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn:
        assert migrate.current_version(conn, "pgqueue") is None
        conn.execute("CREATE SCHEMA pgqueue")
        assert migrate.current_version(conn, "pgqueue") is None
        # Asking never broke the transaction.
        conn.execute("SELECT 1")
        conn.rollback()
    migrate.upgrade(empty_dsn, "pgqueue")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.current_version(conn, "pgqueue") == migrate.SCHEMA_VERSION
        conn.execute("DELETE FROM pgqueue.pgqueue_alembic_version")
        assert migrate.current_version(conn, "pgqueue") is None

    migrate.check_version(migrate.SCHEMA_VERSION, "pgqueue")
    for version in (None, "0000"):
        with pytest.raises(SchemaOutOfDate, match="pgqueue migrate"):
            migrate.check_version(version, "pgqueue")
    with pytest.raises(SchemaOutOfDate, match="upgrade pgqueue") as caught:
        migrate.check_version("9999", "pgqueue")
    assert "pgqueue migrate" not in str(caught.value)


def test_downgrade_to_base_removes_the_tables(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn, "pgqueue")
    migrate.downgrade(empty_dsn, "pgqueue", "base")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert tables(conn, "pgqueue") <= {"pgqueue_alembic_version"}
        assert conn.execute("SELECT count(*) FROM pg_type WHERE typname = 'job_state'").fetchone() == (0,)
        assert migrate.current_version(conn, "pgqueue") is None
    # And back up again.
    migrate.upgrade(empty_dsn, "pgqueue")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.current_version(conn, "pgqueue") == migrate.SCHEMA_VERSION


def test_client_on_an_unmigrated_database_says_run_migrate(empty_dsn: str) -> None:
    with pgqueue.App(empty_dsn) as app:
        with pytest.raises(SchemaOutOfDate, match="pgqueue migrate"):
            app.enqueue("t", {})
        with pytest.raises(SchemaOutOfDate, match="pgqueue migrate"):
            app.counts()
        # Once migrated, the same app works: a failed check is not remembered as a pass, nor the reverse.
        migrate.upgrade(empty_dsn, "pgqueue")
        assert app.get_job(app.enqueue("t", {})).type == "t"


def test_schema_error_leaves_the_callers_transaction_usable(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("CREATE SCHEMA pgqueue")  # the schema exists, its tables do not
    app = pgqueue.App(empty_dsn)
    try:
        with psycopg.connect(empty_dsn) as conn:
            conn.execute("INSERT INTO orders VALUES (1)")
            with pytest.raises(SchemaOutOfDate, match="pgqueue migrate"):
                app.enqueue("t", {"a": 1}, conn=conn)
            conn.execute("INSERT INTO orders VALUES (2)")
            conn.commit()
    finally:
        app.close()
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id FROM orders ORDER BY id").fetchall() == [(1,), (2,)]


async def test_schema_error_leaves_the_callers_async_transaction_usable(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
    app = pgqueue.App(empty_dsn)
    try:
        async with await psycopg.AsyncConnection.connect(empty_dsn) as aconn:
            await aconn.execute("INSERT INTO orders VALUES (1)")
            with pytest.raises(SchemaOutOfDate, match="pgqueue migrate"):
                await app.aenqueue("t", {"a": 1}, conn=aconn)
            await aconn.execute("INSERT INTO orders VALUES (2)")
            await aconn.commit()
    finally:
        await app.aclose()
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id FROM orders ORDER BY id").fetchall() == [(1,), (2,)]


@pytest.mark.parametrize("version", ["0000", "9999"])
def test_client_refuses_a_schema_at_another_version(dsn: str, version: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.pgqueue_alembic_version SET version_num = %s", (version,))
    with pgqueue.App(dsn) as app, pytest.raises(SchemaOutOfDate, match=version):
        app.enqueue("t", {})


@pytest.mark.parametrize("schema", BAD_SCHEMAS)
def test_invalid_schema_names_are_refused_everywhere(empty_dsn: str, schema: str) -> None:
    with pytest.raises(ConfigurationError):
        pgqueue.App(empty_dsn, schema=schema)
    with pytest.raises(ConfigurationError):
        migrate.upgrade(empty_dsn, schema)
    with pytest.raises(ConfigurationError):
        migrate.upgrade_sql(schema)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        with pytest.raises(ConfigurationError):
            migrate.current_version(conn, schema)
        assert schemas(conn) == {"public"}


def test_invalid_schema_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_SCHEMA", 'x"; DROP SCHEMA public; --')
    with pytest.raises(ConfigurationError):
        pgqueue.App("postgresql://localhost/unused")


def test_upgrading_a_populated_database_keeps_every_job(empty_dsn: str) -> None:
    """Each revision upgrades (and downgrades) a database in use without losing or changing a job."""
    migrate.upgrade(empty_dsn, "pgqueue", "0001")
    states = ("created", "retry", "active", "completed", "cancelled", "failed")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for n, state in enumerate(states):
            conn.execute(
                "INSERT INTO pgqueue.job (type, queue, data, state, attempts) VALUES ('t', 'q', %s, %s, %s)",
                (psycopg.types.json.Jsonb({"n": n}), state, n),
            )
        columns = [c.name for c in conn.execute("SELECT * FROM pgqueue.job LIMIT 0").description or ()]
        read = "SELECT " + ", ".join(columns) + " FROM pgqueue.job ORDER BY id"
        before = conn.execute(read).fetchall()
    migrate.upgrade(empty_dsn, "pgqueue")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute(read).fetchall() == before  # later revisions only add columns
        assert migrate.current_version(conn, "pgqueue") == migrate.SCHEMA_VERSION
    migrate.downgrade(empty_dsn, "pgqueue", "0001")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute(read).fetchall() == before


def test_uids_made_before_they_carried_the_id_keep_their_value_and_are_still_found(empty_dsn: str) -> None:
    """0008: new uids are made from the id and found through the primary key; the random uids of
    jobs already there stay as they were, unique and found through their own (partial) index,
    on the way up and back down."""
    migrate.upgrade(empty_dsn, "pgqueue", "0007")
    states = ("created", "retry", "active", "completed", "cancelled", "failed")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for state in states:
            conn.execute("INSERT INTO pgqueue.job (type, queue, data, state) VALUES ('t', 'q', '{}', %s)", (state,))
        old = dict(conn.execute("SELECT id, uid FROM pgqueue.job").fetchall())
    assert {uid.version for uid in old.values()} == {7}
    migrate.upgrade(empty_dsn, "pgqueue")
    app = pgqueue.App(empty_dsn)
    try:
        new = [app.enqueue("t", {}), *app.enqueue_many([("t", {})] * 300)]  # an INSERT and a COPY
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            stored = dict(conn.execute("SELECT id, uid FROM pgqueue.job").fetchall())
            duplicate = next(iter(old.values()))
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO pgqueue.job (type, queue, data, uid) VALUES ('t', 'q', '{}', %s)", (duplicate,))
        assert stored == old | {int(job_id): job_id.uid for job_id in new}
        assert all(job_id.uid.version == 8 for job_id in new)
        for job_id, uid in stored.items():
            assert app.get_job(uid).id == job_id and app.get_job(str(uid)).id == job_id
        # A uid of the new layout whose id is some other job's names no job.
        stranger = uuid.UUID(int=new[0].uid.int ^ 1 << 64)
        assert stranger.int & (1 << 63) - 1 == new[0] and stranger != new[0].uid
        with pytest.raises(pgqueue.JobNotFound):
            app.get_job(stranger)
    finally:
        app.close()
    migrate.downgrade(empty_dsn, "pgqueue", "0007")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert dict(conn.execute("SELECT id, uid FROM pgqueue.job").fetchall()) == stored
        added = conn.execute("INSERT INTO pgqueue.job (type, queue, data) VALUES ('t', 'q', '{}') RETURNING uid").fetchone()
        assert added is not None and added[0].version == 7
