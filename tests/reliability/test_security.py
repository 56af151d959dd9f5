"""Security: least privilege, secrets kept out of sight, JSON only, hostile flags.

tests/acceptance/test_cli.py covers most flags with hostile values and the CLI's logs for
a password; here: the flags it leaves out, process command lines, logs under faults, API
errors, and what the worker and producer roles may and may not do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
import reliability_app
import roles
import scoreboard
from fault_proxy import every
from fleet import HERE, wait_for

PACKAGE = Path(pgqueue.__file__).resolve().parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k != "DATABASE_URL"}
    env.update(extra)
    return env


def pgqueue_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgqueue", *args], cwd=HERE, capture_output=True, text=True,
                          timeout=timeout, env=clean_env(**(env or {})))


# --- JSON only ------------------------------------------------------------------------------------

UNSAFE = re.compile(r"\b(pickle|cPickle|cloudpickle|dill|marshal|shelve|jsonpickle)\b|\byaml\.load\(|"
                    r"\beval\(|\bexec\(|__import__\(")


def test_no_pickle_eval_or_exec_anywhere_in_the_package():
    sources = sorted(PACKAGE.rglob("*.py"))  # the migrations are inside the package
    assert len(sources) > 10
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
             for path in sources
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if UNSAFE.search(line) and not line.lstrip().startswith("#")]
    assert not found, "\n".join(found)
    # Process handlers get their job over a pipe as JSON, and are looked up by the parent's registry.
    executors = (PACKAGE / "worker" / "executors.py").read_text()
    assert "send_bytes(json.dumps" in executors and "json.loads(conn.recv_bytes())" in executors


# --- least privilege --------------------------------------------------------------------------------

DDL = [
    "CREATE TABLE pgqueue.evil (x int)",
    "ALTER TABLE pgqueue.job ADD COLUMN evil int",
    "DROP TABLE pgqueue.job",
    "TRUNCATE pgqueue.job",
    "CREATE INDEX evil ON pgqueue.job (id)",
    "DROP TYPE pgqueue.job_state CASCADE",
    "ALTER SEQUENCE pgqueue.job_id_seq RESTART",
    "CREATE SCHEMA evil",
    "CREATE TABLE public.evil (x int)",
    "UPDATE pgqueue.pgqueue_alembic_version SET version_num = 'evil'",
    "CREATE TRIGGER evil AFTER INSERT ON pgqueue.job FOR EACH ROW EXECUTE FUNCTION log_final_transition()",
]
PRODUCER_FORBIDDEN = [
    "SELECT data FROM pgqueue.job",
    "SELECT output, error FROM pgqueue.job",
    "UPDATE pgqueue.job SET state = 'completed'",
    "DELETE FROM pgqueue.job",
    "DELETE FROM pgqueue.worker",
]


def refused(dsn: str, statement: str) -> str | None:
    """None if ``statement`` is refused for lack of privilege, else what happened."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return None
        except psycopg.Error as exc:
            return f"{statement}: {type(exc).__name__}: {exc}"
        return f"{statement}: allowed"


@pytest.mark.timeout(120)
def test_worker_and_producer_roles_do_their_work_and_no_ddl(db, producer, fleet):
    started = time.monotonic()
    ids = [producer.enqueue("work", {"n": 0})]                                     # one INSERT
    ids += producer.enqueue_many([("work", {"n": n}) for n in range(10)])           # INSERT ... unnest
    ids += producer.enqueue_many([("work", {"n": n}) for n in range(100)])          # COPY
    ids += producer.enqueue_many([("work", {"n": n}, {"unique_key": f"k{n}"}) for n in range(3)])
    assert producer.enqueue("work", {"n": 0}, unique_key="k0") is None             # ON CONFLICT DO NOTHING
    fleet.start("--concurrency", "8")
    scoreboard.wait_finished(db.conn, ids, timeout=30)
    status = pgqueue_cli("status", "--database-url", db.worker)
    codes = fleet.stop()
    problems = [p for role in (db.worker, db.producer) for p in (refused(role, s) for s in DDL) if p]
    problems += [p for p in (refused(db.producer, s) for s in PRODUCER_FORBIDDEN) if p]
    as_worker = pgqueue_cli("migrate", "--database-url", db.worker)
    score = scoreboard.measure(db.conn, "security least privilege", ids, started=started, recovery=None,
                               ddl_refused=2 * len(DDL) - len(problems))
    scoreboard.assert_sound(score)
    assert not problems, "\n".join(problems)
    assert status.returncode == 0, status.stdout + status.stderr
    assert set(codes.values()) == {0}
    assert as_worker.returncode != 0 and "permission denied" in as_worker.stderr, as_worker.stdout + as_worker.stderr
    assert as_worker.stderr.count("\n") == 1 and "Traceback" not in as_worker.stderr, as_worker.stderr


@pytest.mark.timeout(60)
def test_a_worker_whose_role_cannot_claim_says_so_and_stops(db, fleet):
    """A missing grant is not a passing fault: retrying it forever hides it."""
    producer_job = reliability_app.make_app(db.producer)
    try:
        producer_job.enqueue("work", {"n": 1})
    finally:
        producer_job.close()
    worker = fleet.start("--concurrency", "2", dsn=db.producer)
    try:
        worker.wait(15)
    except subprocess.TimeoutExpired:
        pass
    said = worker.output()
    assert not worker.alive(), f"a worker without the privileges to claim kept running:\n{said[-1500:]}"
    assert worker.process.returncode != 0 and "permission denied" in said, said


# --- secrets ------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children started from any thread), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


@pytest.mark.timeout(90)
def test_the_password_is_not_on_the_command_line_of_worker_processes(db, producer, fleet):
    secret = roles.PASSWORDS[roles.WORKER]
    ids = producer.enqueue_many([("echo_process", {"n": 1})] * 2 + [("work", {"n": n}) for n in range(20)])
    supervisor = fleet.start(command=[sys.executable, "-m", "pgqueue", "work", "reliability_app:app",
                                      "--processes", "2", "--database-url", db.worker, "--poll-interval", "0.2"],
                             env={"PGQUEUE_DATABASE_URL": ""})
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    wait_for(lambda: len(descendants(supervisor.pid)) >= 3, 20, "2 workers and a process-handler child")
    processes = descendants(supervisor.pid)
    lines = {pid: cmdline(pid) for pid in processes}
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0, supervisor.output()
    leaked = {pid: line for pid, line in lines.items() if secret in line}
    assert not leaked, leaked
    assert secret not in supervisor.output()
    # What the user typed stays on the supervisor's own command line: pass the URL in
    # PGQUEUE_DATABASE_URL rather than --database-url to keep it out of `ps` entirely.


@pytest.mark.timeout(120)
def test_the_password_never_reaches_worker_logs_even_when_the_network_fails(db, producer, fleet, proxy):
    secret = roles.PASSWORDS[roles.WORKER]
    through_proxy = db.dsn(roles.WORKER, port=proxy.port)
    worker = fleet.start("--concurrency", "4", "--log-level", "debug", "--log-format", "json", *(),
                         dsn=through_proxy)
    text = fleet.start("--concurrency", "4", "--log-level", "debug", dsn=through_proxy)
    ids = producer.enqueue_many([("work", {"n": n}) for n in range(50)])
    scoreboard.wait_finished(db.conn, ids, timeout=30)
    proxy.refuse = True
    proxy.reset(every)
    time.sleep(3)
    proxy.refuse = False
    more = producer.enqueue_many([("work", {"n": n}) for n in range(50)])
    scoreboard.wait_finished(db.conn, more, timeout=60)
    fleet.stop()
    for one in (worker, text):
        output = one.output()
        assert "connection" in output.lower(), "the fault left no trace in the log"
        assert secret not in output, [line for line in output.splitlines() if secret in line][:3]


BAD_URLS = [
    "postgresql://pgq_worker:{secret}%zz@127.0.0.1:{port}/{db}",       # libpq echoes a bad %-escape
    "postgresql://pgq_worker:{secret}@127.0.0.1:1/{db}",                # nothing listens
    "postgresql://pgq_worker:{secret}@127.0.0.1:{port}/{db}?sslmode=bogus",
    "postgresql://pgq_worker:{secret}@127.0.0.1:{port}/{db}?port=notaport",
    "host=127.0.0.1 port={port} dbname={db} user=pgq_worker password={secret}x",  # wrong password
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("template", BAD_URLS, ids=["bad-escape", "refused", "bad-sslmode", "bad-port", "wrong-password"])
def test_the_password_is_not_in_errors_from_the_api_or_the_cli(db, template):
    secret = "Zq9s3cret"
    url = template.format(secret=secret, port=db.cluster.port, db=db.name)
    shown: list[str] = []
    app = pgqueue.App(url)
    try:
        app.connect().close()
    except Exception as exc:  # noqa: BLE001 - whatever it is, its text must not carry the password
        shown.append(f"App.connect: {exc!r}")
    finally:
        app.close()
    # (tests/acceptance/test_cli.py runs the other commands with a password in the URL)
    result = pgqueue_cli("status", "--database-url", url, timeout=30)
    assert result.returncode != 0
    shown.append(f"pgqueue status: {result.stdout}{result.stderr}")
    leaked = [line for line in shown if secret in line]
    assert not leaked, leaked


# --- flags test_cli.py leaves out -------------------------------------------------------------------

HOSTILE_FLAGS = [
    (["--lease-seconds", "0"], "--lease-seconds"),
    (["--lease-seconds", "nan"], "--lease-seconds"),
    (["--lease-seconds", "1; DROP TABLE pgqueue.job"], "--lease-seconds"),
    (["--rescue-interval", "0"], "--rescue-interval"),
    (["--rescue-interval", "-inf"], "--rescue-interval"),
    (["--poll-interval", "inf"], "--poll-interval"),
    (["--shutdown-grace", "nan"], "--shutdown-grace"),
    (["--concurrency", "0"], "--concurrency"),
    (["--concurrency", "100000000000000000000"], "--concurrency"),
    (["--processes", "-3"], "--processes"),
    (["--completed-retention", "nan"], "--completed-retention"),
    (["--failed-retention", "-1"], "--failed-retention"),
    (["--queues", "rel,'; DROP TABLE pgqueue.job; --,\u202e"], "malformed"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("flags", "message"), HOSTILE_FLAGS, ids=[" ".join(f)[:40] for f, _ in HOSTILE_FLAGS])
def test_hostile_worker_flags_are_refused_before_any_work(db, flags, message):
    try:
        result = pgqueue_cli("work", "reliability_app:app", *flags, "--database-url", db.worker, timeout=15)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"accepted: the worker started and was still running after 15 s:\n"
                             f"{(exc.stderr or b'')[-1500:].decode(errors='replace')}") from None
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert message in output, output
    assert "Traceback" not in output
    assert roles.PASSWORDS[roles.WORKER] not in output
    assert db.scalar("SELECT count(*) FROM pgqueue.worker") == 0
    assert db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'") == 10  # job, worker, queue, schedule, job_key, flow_start, flow_cursor, dependency, subscription, version


@pytest.mark.timeout(60)
def test_hostile_values_in_the_environment_twins_are_refused_too(db):
    for name, value, message in [("PGQUEUE_CONCURRENCY", "-4", "--concurrency"),
                                 ("PGQUEUE_LEASE_SECONDS", "nan", "--lease-seconds"),
                                 ("PGQUEUE_QUEUES", "a,,b", "queue name is empty"),
                                 ("PGQUEUE_SCHEMA", "x; DROP SCHEMA pgqueue CASCADE", "invalid schema name")]:
        result = pgqueue_cli("work", "reliability_app:app", env={"PGQUEUE_DATABASE_URL": db.worker, name: value},
                             timeout=20)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and message in output, (name, output)
        assert "Traceback" not in output
    assert db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'") == 10  # job, worker, queue, schedule, job_key, flow_start, flow_cursor, dependency, subscription, version


HOSTILE_WORKER_IDS = ["a\x00b", "\udcff", "x" * 10_000, "host:1:'); DROP TABLE pgqueue.worker; --"]

WORKER_WITH_ID = """
import sys
import pgqueue, reliability_app
worker_id = [{ids}][int(sys.argv[1])]
try:
    reliability_app.app.run_worker(worker_id=worker_id, burst=True, poll_interval=0.1)
except pgqueue.ConfigurationError as exc:
    print("refused:", exc)
    raise SystemExit(2)
print("accepted")
"""


def run_with_worker_id(db: Any, index: int) -> str:
    """How a worker given ``HOSTILE_WORKER_IDS[index]`` ends: refused, accepted, or hung (10 s)."""
    script = WORKER_WITH_ID.format(ids=", ".join(map(repr, HOSTILE_WORKER_IDS)))
    try:
        result = subprocess.run([sys.executable, "-c", script, str(index)], cwd=HERE, capture_output=True,
                                text=True, timeout=10, env=clean_env(PGQUEUE_DATABASE_URL=db.worker))
    except subprocess.TimeoutExpired:
        return "hung"
    if result.returncode == 2 and "refused" in result.stdout:
        return "refused"
    if result.returncode == 0 and "accepted" in result.stdout:
        return "accepted"
    return f"exit {result.returncode}: {(result.stdout + result.stderr)[-300:]}"


@pytest.mark.timeout(90)
def test_hostile_worker_ids_are_refused_or_harmless(db):
    outcomes = {HOSTILE_WORKER_IDS[i][:24]: run_with_worker_id(db, i) for i in range(len(HOSTILE_WORKER_IDS))}
    # Text PostgreSQL cannot store must be refused up front; the rest is only a bound value.
    assert outcomes["a\x00b"] == "refused" and outcomes["\udcff"] == "refused", outcomes
    assert outcomes["x" * 24] == "refused", outcomes  # longer than a name may be
    assert outcomes[HOSTILE_WORKER_IDS[3][:24]] == "accepted", outcomes
    assert db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'") == 10  # job, worker, queue, schedule, job_key, flow_start, flow_cursor, dependency, subscription, version
