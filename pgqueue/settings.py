"""Every setting once: its default, environment variable, bounds and help.

The worker's settings are the fields of :class:`WorkerConfig`; each field declares, next to its
default, the ``PGQUEUE_*`` variable and ``pgqueue work`` flag that set it, its bounds and the
flag's help text. From that one declaration come :meth:`WorkerConfig.validated`, the flags of
``pgqueue work`` (see ``pgqueue.cli.options``) and the command line of the worker processes a
supervisor starts (:func:`worker_argv`). The database URL and schema are resolved here too, and
this module is the only one that reads a ``PGQUEUE_*`` (or ``DATABASE_URL``) variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from .config import DEFAULT_SCHEMA, normalize_url, validate_schema
from .embedded import embedded_data_dir, embedded_database_url
from .errors import ConfigurationError, InvalidJob
from .job import validate_name

MAX_CONCURRENCY = 10_000
"""More jobs than this at once in one process is a typo, not a configuration: use more processes."""

TEN_YEARS = 10 * 365 * 86400

S = TypeVar("S")

FALSE_WORDS = ("0", "false", "no", "off")
"""Spellings of "no" in a boolean environment variable (any other value means yes)."""


# --- how a setting is declared -----------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a setting is besides its name and default: how it is read, bounded and explained.

    ``kind`` is ``int``, ``float``, ``bool``, ``str`` or ``list`` (a list of names, written
    comma-separated on the command line). Bounds are inclusive unless ``low_open`` or
    ``high_open``. ``flag`` is the command-line flag (``None``: none); a boolean flag whose
    ``negate`` is set turns the setting off (``--no-listen``). ``choices`` restrict a string.
    """

    kind: type
    env: str | None = None
    flag: str | None = None
    help: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    negate: bool = False
    off: str | None = None
    """For a boolean setting on by default: the flag that turns it off (``flag`` turns it on)."""
    choices: tuple[str, ...] = ()
    names: str | None = None
    """For a str or list setting: what each value names (``"queue"``), checked with validate_name."""
    optional: bool = False
    """None is a valid value (it means "not set"): true of the settings whose default is None."""


def setting(default: Any, kind: type, **declared: Any) -> Any:
    """A dataclass field with ``default`` whose :class:`Setting` is kept in the field's metadata."""
    spec = Setting(kind, optional=default is None, **declared)
    return dataclasses.field(default=default, metadata={"setting": spec})


def declared(cls: type) -> Iterator[tuple[str, Any, Setting]]:
    """(name, default, setting) of every field of the settings dataclass ``cls``, in order."""
    for field in dataclasses.fields(cls):
        yield field.name, field.default, field.metadata["setting"]


def check(name: str, spec: Setting, value: Any) -> Any:
    """Return ``value`` if it is a valid value of setting ``name``; if not, raise ConfigurationError
    naming the setting."""
    if value is None and spec.optional:
        return value
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name} must be True or False, got {value!r}")
        return value
    if spec.kind is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigurationError(f"{name} must be a list of {spec.names} names, not {value!r}")
        for item in value:
            _check_name(name, spec.names or name, item)
        return value
    if spec.kind is str:
        if not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(spec.choices)}, got {value!r}")
        if spec.names:
            _check_name(name, spec.names, value)
        return value
    number_types: tuple[type, ...] = (int,) if spec.kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_types) or not _within(spec, value):
        raise ConfigurationError(f"{name} must be {describe(spec)}, got {value!r}")
    return value


def _check_name(setting_name: str, what: str, value: Any) -> None:
    try:
        validate_name(what, value)
    except (InvalidJob, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{setting_name}: {exc}") from None


def _within(spec: Setting, value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        return False
    if spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high):
        return False
    return True


def describe(spec: Setting) -> str:
    """The values a numeric setting takes, in words: "an integer at least 1 and at most 10,000"."""
    what = "an integer" if spec.kind is int else "a number of seconds"
    parts = []
    if spec.low is not None:
        parts.append(f"{'above' if spec.low_open else 'at least'} {spec.low:,g}")
    if spec.high is not None:
        parts.append(f"{'below' if spec.high_open else 'at most'} {spec.high:,g}")
    return f"{what} {' and '.join(parts)}".rstrip()


# --- the worker's settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process runs. ``pgqueue work`` sets each field but ``worker_id`` from a flag
    or its ``PGQUEUE_*`` environment twin (``listen_database_url``: ``PGQUEUE_LISTEN_DATABASE_URL``).

    >>> app.run_worker(queues=["emails"], concurrency=20)   # the fields, as keywords
    """

    queues: Sequence[str] | None = setting(
        None,
        list,
        names="queue",
        env="PGQUEUE_QUEUES",
        flag="--queues",
        help="Comma-separated queues to work on. Default: all the app's queues.",
    )
    """Queues to take jobs from; None means every queue of the app's registered tasks."""
    concurrency: int = setting(
        10,
        int,
        low=1,
        high=MAX_CONCURRENCY,
        env="PGQUEUE_CONCURRENCY",
        flag="--concurrency",
        help="Jobs run at once by each worker process.",
    )
    """Jobs this process runs at once, across all task types (tasks may set a lower cap of their own)."""
    burst: bool = setting(
        False, bool, env="PGQUEUE_BURST", flag="--burst", help="Exit 0 once nothing is left to run."
    )
    """Exit (normally) once nothing is running and nothing is runnable, instead of waiting for more."""
    poll_interval: float = setting(
        1.0,
        float,
        low=0,
        low_open=True,
        high=86400,
        high_open=True,
        env="PGQUEUE_POLL_INTERVAL",
        flag="--poll-interval",
        help="Seconds between polls (NOTIFY only shortens them).",
    )
    """Seconds between polls when no notification arrives. Polling never stops; NOTIFY only shortens
    the wait."""
    shutdown_grace: float = setting(
        30.0,
        float,
        low=0,
        high=86400,
        env="PGQUEUE_SHUTDOWN_GRACE",
        flag="--shutdown-grace",
        help="Seconds running jobs get to finish after SIGTERM.",
    )
    """Seconds running jobs get to finish after SIGTERM; then they are handed back to the queue at once."""
    listen: bool = setting(
        True,
        bool,
        negate=True,
        env="PGQUEUE_NO_LISTEN",
        flag="--no-listen",
        help="Poll only: no LISTEN/NOTIFY (poolers).",
    )
    """Wake on LISTEN/NOTIFY. False polls only (for poolers that cannot LISTEN)."""
    lease_seconds: float = setting(
        15.0,
        float,
        low=1,
        high=86400,
        env="PGQUEUE_LEASE_SECONDS",
        flag="--lease-seconds",
        help="Seconds a claim holds a job without a heartbeat; a dead worker's jobs run again after it.",
    )
    """How long a claim holds a job without a heartbeat; heartbeats renew it every third of that."""
    rescue_interval: float = setting(
        5.0,
        float,
        low=0.05,
        high=3600,
        env="PGQUEUE_RESCUE_INTERVAL",
        flag="--rescue-interval",
        help="Seconds between sweeps for jobs whose lease expired.",
    )
    """Seconds between sweeps that hand back jobs whose lease expired (their worker died)."""
    prune_interval: float = setting(
        60.0,
        float,
        low=0.1,
        high=86400,
        env="PGQUEUE_PRUNE_INTERVAL",
        flag="--prune-interval",
        help="Seconds between deletions of finished jobs past their retention.",
    )
    """Seconds between deletions of finished jobs older than their retention."""
    completed_retention: float = setting(
        86400.0,
        float,
        low=0,
        high=TEN_YEARS,
        env="PGQUEUE_COMPLETED_RETENTION",
        flag="--completed-retention",
        help="Seconds completed jobs are kept before workers delete them.",
    )
    """Seconds a completed job is kept (for get_job, results and the history) before it is deleted:
    a day, unless its queue sets its own (``App.set_queue_retention``)."""
    failed_retention: float = setting(
        7 * 86400.0,
        float,
        low=0,
        high=TEN_YEARS,
        env="PGQUEUE_FAILED_RETENTION",
        flag="--failed-retention",
        help="Seconds failed and cancelled jobs are kept before workers delete them.",
    )
    """Seconds a failed or cancelled job is kept before it is deleted: a week, unless its queue sets
    its own (``App.set_queue_retention``)."""
    worker_id: str | None = setting(None, str, names="worker")
    """A name for this worker in the worker table and job rows; default host:pid:random."""
    xmin_warning: float = setting(
        300.0,
        float,
        low=1,
        high=TEN_YEARS,
        env="PGQUEUE_XMIN_WARNING",
        flag="--xmin-warning",
        help="Warn when a transaction holds the xmin horizon back this many seconds.",
    )
    """Seconds a transaction (or replication slot, or prepared transaction) may hold the xmin
    horizon back before workers warn: meanwhile dead job rows pile up and claims slow down."""
    vacuum_interval: float | None = setting(
        None,
        float,
        low=1,
        high=86400,
        env="PGQUEUE_VACUUM_INTERVAL",
        flag="--vacuum-interval",
        help="Seconds between checks that VACUUM (ANALYZE) the job table once its dead rows pile up "
        "(for servers running without autovacuum; needs the table's owner and a direct connection).",
    )
    """Seconds between turns of the vacuum duty, for servers where autovacuum is off: each turn, one
    worker of the cluster at a time runs ``VACUUM (ANALYZE)`` on the job table if it has more than
    1,000 dead rows and more than 10 % of its live ones. None (the default) leaves vacuuming to
    autovacuum. The duty needs a role that owns the table, and holds a session-level advisory lock
    on a connection of its own: give it a direct URL (``listen_database_url``), not a pooler in
    transaction mode."""
    claim_ahead: bool = setting(
        True,
        bool,
        env="PGQUEUE_CLAIM_AHEAD",
        flag="--claim-ahead",
        off="--no-claim-ahead",
        help="Claim jobs ahead: a worker of jobs shorter than a round trip to the database claims "
        "the next ones while its jobs run (they wait in the worker for a slot).",
    )
    """Let a worker whose jobs finish faster than a round trip to the database claim about as
    many jobs as its running ones will have freed by the time the claim returns (at most
    ``concurrency``), so that its slots never wait for the database. Those jobs are active and
    leased (the heartbeat renews them) while they wait in the worker, at most about one round
    trip; shutdown hands them back at once, and a lost connection drops them (the server may have
    failed over, forgetting their claims). Jobs that run longer than a round trip are never
    claimed ahead."""
    async_commit: bool = setting(
        False,
        bool,
        env="PGQUEUE_ASYNC_COMMIT",
        flag="--async-commit",
        help="Commit the worker's claims and outcomes without waiting for the WAL flush: about "
        "twice the throughput; a database crash may then forget the last fraction of a "
        "second of them, and those jobs run again (enqueues are never affected).",
    )
    """Commit claims and outcomes without waiting for the WAL flush (``synchronous_commit=off``
    on the worker's connections). It halves the cost of each exchange; a database crash (not a
    worker crash) may then forget the last fraction of a second of claims and outcomes, and
    those jobs run again: at-least-once still holds, and enqueues, made by producers, are never
    affected."""
    metrics_port: int | None = setting(
        None,
        int,
        low=1,
        high=65535,
        env="PGQUEUE_METRICS_PORT",
        flag="--metrics-port",
        help="Serve Prometheus metrics over HTTP on this port (worker process i of --processes uses "
        "port + i). Needs the metrics extra.",
    )
    """The TCP port on which the worker serves its Prometheus metrics (``pgqueue.metrics``); None
    serves none. Under ``--processes N`` worker process ``i`` serves on this port + ``i``."""
    event_loop: str = setting(
        "auto",
        str,
        choices=("auto", "asyncio", "uvloop"),
        env="PGQUEUE_EVENT_LOOP",
        flag="--event-loop",
        help="The worker's event loop: asyncio's own, or uvloop (pip install 'pgqueue[uvloop]'), "
        "which spends less CPU on each job; auto: uvloop when it is installed.",
    )
    """The event loop the worker process runs on: ``asyncio`` (the standard library's), ``uvloop``
    (the ``uvloop`` extra: the loop's own work costs less, so 5 to 15 % more no-op jobs a second
    from one process and a slightly quicker pick-up), or ``auto``: uvloop when it is installed,
    else asyncio. It applies to :meth:`App.run_worker` and :meth:`App.drain`, which start a loop;
    a worker run inside a loop of the caller's (:meth:`App.arun_worker`) uses that loop."""
    listen_database_url: str | None = setting(None, str, env="PGQUEUE_LISTEN_DATABASE_URL")
    """A direct connection for LISTEN when the app's URL goes through a pooler in transaction mode
    (where LISTEN cannot work). Default: $PGQUEUE_LISTEN_DATABASE_URL, else the app's URL."""

    def __post_init__(self) -> None:
        # A setting without a flag is read from its environment variable here, when not given.
        for name, _, spec in declared(type(self)):
            if spec.flag is None and spec.env and getattr(self, name) is None:
                value = os.environ.get(spec.env)
                if value:
                    object.__setattr__(self, name, value)

    def validated(self) -> WorkerConfig:
        """This config, once every field is within its bounds; if one is not, ConfigurationError
        naming the field."""
        return validated(self)


@dataclass(frozen=True)
class ProcessSettings:
    """The settings of ``pgqueue work`` that are not a worker's: how many processes, how they log."""

    processes: int = setting(
        1,
        int,
        low=1,
        env="PGQUEUE_PROCESSES",
        flag="--processes",
        help="Worker processes to run (uses several cores).",
    )
    """Worker processes to run; more than one runs them under a supervisor."""
    log_level: str = setting(
        "info",
        str,
        choices=("debug", "info", "warning", "error"),
        env="PGQUEUE_LOG_LEVEL",
        flag="--log-level",
    )
    """The least severe log records printed."""
    log_format: str = setting(
        "text",
        str,
        choices=("text", "json"),
        env="PGQUEUE_LOG_FORMAT",
        flag="--log-format",
        help="text or json (one object a line).",
    )
    """``text``, or ``json`` for one object a line."""

    def validated(self) -> ProcessSettings:
        """These settings, once each is within its bounds; ConfigurationError, naming it, if not."""
        return validated(self)


def validated(values: S) -> S:
    """``values`` (a settings dataclass) once every field passes :func:`check`."""
    for name, _, spec in declared(type(values)):
        check(name, spec, getattr(values, name))
    return values


def flag_settings() -> Iterator[tuple[str, Any, Setting]]:
    """Every setting ``pgqueue work`` takes as a flag: the worker's, then the processes'."""
    for cls in (WorkerConfig, ProcessSettings):
        for name, default, spec in declared(cls):
            if spec.flag is not None:
                yield name, default, spec


def parse_list(name: str, spec: Setting, text: str | None) -> list[str] | None:
    """A comma-separated list flag's value: its names (duplicates dropped), or None if it is blank."""
    if text is None or not text.strip():
        return None
    names = [item.strip() for item in text.split(",")]
    for item in names:
        _check_name(name, spec.names or name, item)
    return list(dict.fromkeys(names))


def worker_argv(config: WorkerConfig, process: ProcessSettings) -> list[str]:
    """The ``pgqueue work`` flags that give back ``config`` and ``process``: a supervisor's child
    command line. Every value is written but a false switch and an unset list or number, which the child,
    given its parent's environment, reads as its parent did."""
    argv: list[str] = []
    for cls, values in ((WorkerConfig, config), (ProcessSettings, process)):
        for name, _, spec in declared(cls):
            value = getattr(values, name)
            if spec.flag is None or value is None:
                continue
            if spec.kind is bool and spec.off is not None:
                argv += [spec.flag if value else spec.off]
            elif spec.kind is bool:
                argv += [spec.flag] if value != spec.negate else []
            elif spec.kind is list:
                argv += [spec.flag, ",".join(value)] if value else []
            elif spec.kind is str:
                argv += [spec.flag, value]
            else:
                argv += [spec.flag, repr(value)]
    return argv


# --- job options -------------------------------------------------------------------------------


def resolve_option(name: str, job_value: Any, task_options: Any, app_defaults: Any) -> Any:
    """A job option's value: the job's own if set, else its task's, else the app's default (None: unset).

    ``task_options`` and ``app_defaults`` are :class:`pgqueue.job.JobOptions` (``task_options``
    may be None for a job type no task is registered for).
    """
    if job_value is not None:
        return job_value
    for options in (task_options, app_defaults):
        value = None if options is None else getattr(options, name)
        if value is not None:
            return value
    return None


# --- the database and the schema ---------------------------------------------------------------


def resolve_schema(schema: str | None = None) -> str:
    """The schema to use: argument > ``PGQUEUE_SCHEMA`` > ``pgqueue``."""
    if schema is None:
        schema = os.environ.get("PGQUEUE_SCHEMA") or DEFAULT_SCHEMA
    return validate_schema(schema)


def configured_database_url() -> str | None:
    """``PGQUEUE_DATABASE_URL``, else ``DATABASE_URL``, as set (None when neither is)."""
    return os.environ.get("PGQUEUE_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def resolve_database_url(url: str | None = None) -> str:
    """The database to use: argument > ``PGQUEUE_DATABASE_URL`` > ``DATABASE_URL`` > the embedded server.

    ``postgres://`` is accepted as a synonym of ``postgresql://``; so are SQLAlchemy-style
    ``postgresql+psycopg://`` URLs.
    """
    url = url or configured_database_url()
    if not url:
        return embedded_database_url(embedded_pgdata())
    return normalize_url(url)


def export(database_url: str | None = None, schema: str | None = None) -> str:
    """Validate a database URL and schema given on the command line and export them as
    ``PGQUEUE_DATABASE_URL`` and ``PGQUEUE_SCHEMA``, for a user's app module and child processes.
    Returns the schema (argument > ``PGQUEUE_SCHEMA`` > ``pgqueue``)."""
    if database_url is not None:
        export_database_url(normalize_url(database_url))
    resolved = resolve_schema(schema)
    export_schema(resolved)
    return resolved


def export_database_url(url: str) -> None:
    """Make ``url`` the database of this process's later ``App()`` and of the processes it starts."""
    os.environ["PGQUEUE_DATABASE_URL"] = url


def export_schema(schema: str) -> None:
    """Make ``schema`` the schema of this process's later ``App()`` and of the processes it starts."""
    os.environ["PGQUEUE_SCHEMA"] = validate_schema(schema)


def known_passwords(environ: Mapping[str, str] | None = None) -> list[str]:
    """The passwords in the database settings of the environment, to scrub from messages."""
    environ = os.environ if environ is None else environ
    secrets = []
    for name in ("PGQUEUE_DATABASE_URL", "DATABASE_URL", "PGPASSWORD"):
        value = environ.get(name)
        if not value:
            continue
        if name == "PGPASSWORD":
            secrets.append(value)
            continue
        try:
            password = psycopg.conninfo.conninfo_to_dict(value).get("password")
        except Exception:  # noqa: BLE001 - not a URL libpq can read: it cannot leak a password either
            continue
        if password:
            secrets.append(str(password))
    return secrets


def prepared_statements_default() -> bool:
    """``PGQUEUE_PREPARED_STATEMENTS``: False when set to 0, false, no or off; True otherwise."""
    return os.environ.get("PGQUEUE_PREPARED_STATEMENTS", "true").lower() not in FALSE_WORDS


ENQUEUE_TIMEOUT = 10.0
"""Default of ``App(enqueue_timeout=...)``, in seconds."""


def enqueue_timeout_default() -> float | None:
    """``PGQUEUE_ENQUEUE_TIMEOUT``: seconds (``none`` or ``off``: no limit), else ``ENQUEUE_TIMEOUT``."""
    text = os.environ.get("PGQUEUE_ENQUEUE_TIMEOUT", "").strip().lower()
    if not text:
        return ENQUEUE_TIMEOUT
    if text in ("none", "off"):
        return None
    return validate_enqueue_timeout(text, "PGQUEUE_ENQUEUE_TIMEOUT")


def validate_enqueue_timeout(value: Any, name: str = "enqueue_timeout") -> float | None:
    """``value`` as a number of seconds greater than 0 (None stays None: no limit)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not seconds > 0 or math.isinf(seconds):
        raise ConfigurationError(f"{name} must be a number of seconds greater than 0, or None for no limit")
    return seconds


def worker_index() -> int:
    """This worker process's index under a supervisor (``PGQUEUE_WORKER_INDEX``), 0 without one."""
    try:
        return int(os.environ.get("PGQUEUE_WORKER_INDEX", "0"))
    except ValueError:
        return 0


def listen_database_url() -> str | None:
    """``PGQUEUE_LISTEN_DATABASE_URL``: a direct connection for LISTEN behind a pooler, when set."""
    return os.environ.get("PGQUEUE_LISTEN_DATABASE_URL") or None


def testing_server_url() -> str | None:
    """``PGQUEUE_TEST_DATABASE_URL``: the server the pytest plugin makes test databases on, when set."""
    return os.environ.get("PGQUEUE_TEST_DATABASE_URL") or None


def embedded_pgdata() -> Path:
    """Where the embedded server keeps its data: ``PGQUEUE_EMBEDDED_DIR``, else a per-user data directory."""
    return embedded_data_dir(os.environ.get("PGQUEUE_EMBEDDED_DIR") or None)
