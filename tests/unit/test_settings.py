"""The settings declared once in pgqueue.settings, and the ``pgqueue work`` flags built from them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pgqueue import ConfigurationError, WorkerConfig
from pgqueue.cli.options import param_name, with_work_options
from pgqueue.cli.work import child_command
from pgqueue.job import JobOptions
from pgqueue.settings import ProcessSettings, declared, flag_settings, resolve_option, worker_argv

ALL_SETTINGS = [spec for cls in (WorkerConfig, ProcessSettings) for _, _, spec in declared(cls)]
NO_FLAG = {"worker_id", "listen_database_url"}
"""WorkerConfig fields ``pgqueue work`` does not set: a worker id is generated per process; the
LISTEN URL comes from its environment variable (read by WorkerConfig itself)."""


def parse(args: list[str], env: dict[str, str] | None = None) -> tuple[WorkerConfig, ProcessSettings]:
    """The settings the generated ``pgqueue work`` flags give for ``args`` (and ``env``)."""
    seen: list[tuple[WorkerConfig, ProcessSettings]] = []
    app = typer.Typer()

    @app.command()
    @with_work_options
    def work(target: str, *, config: WorkerConfig, process: ProcessSettings) -> None:
        seen.append((config, process))

    clean = {spec.env: None for spec in ALL_SETTINGS if spec.env}
    result = CliRunner().invoke(app, ["tasks:app", *args], env={**clean, **(env or {})})
    if result.exit_code != 0:
        raise ValueError(f"exit {result.exit_code}: {result.output}")
    return seen[0]


# --- declarations ------------------------------------------------------------------------------------


def test_every_worker_config_field_is_a_flag_or_deliberately_not() -> None:
    flagged = {name for name, _, spec in declared(WorkerConfig) if spec.flag}
    fields = {f.name for f in dataclasses.fields(WorkerConfig)}
    assert flagged == fields - NO_FLAG
    for name, _, spec in declared(WorkerConfig):
        if name in NO_FLAG:
            continue
        expected = ("--no-" if spec.negate else "--") + name.replace("_", "-")
        assert spec.flag == expected
        assert spec.env == "PGQUEUE_" + param_name(spec).upper()
        assert spec.help


def test_the_defaults_are_those_of_the_public_api() -> None:
    assert WorkerConfig() == WorkerConfig(
        queues=None, concurrency=10, burst=False, poll_interval=1.0, shutdown_grace=30.0, listen=True,
        lease_seconds=15.0, rescue_interval=5.0, prune_interval=60.0, completed_retention=86400.0,
        failed_retention=7 * 86400.0, worker_id=None, xmin_warning=300.0, async_commit=False,
        listen_database_url=None, claim_ahead=True, event_loop="auto",
    )


def test_no_flags_give_the_defaults() -> None:
    config, process = parse([])
    assert config == WorkerConfig()
    assert process == ProcessSettings()


# --- environment variables ----------------------------------------------------------------------------

NON_DEFAULT = {
    "queues": ("a,b", ["a", "b"]),
    "concurrency": ("7", 7),
    "burst": ("1", True),
    "poll_interval": ("0.5", 0.5),
    "shutdown_grace": ("3", 3.0),
    "listen": ("true", False),
    "lease_seconds": ("20", 20.0),
    "rescue_interval": ("0.25", 0.25),
    "prune_interval": ("9", 9.0),
    "completed_retention": ("10", 10.0),
    "failed_retention": ("11", 11.0),
    "xmin_warning": ("12", 12.0),
    "async_commit": ("yes", True),
    "claim_ahead": ("false", False),
    "event_loop": ("asyncio", "asyncio"),
    "metrics_port": ("9100", 9100),
    "vacuum_interval": ("30", 30.0),
    "processes": ("3", 3),
    "log_level": ("DEBUG", "debug"),
    "log_format": ("json", "json"),
}


def test_every_flag_setting_has_a_value_to_test() -> None:
    assert set(NON_DEFAULT) == {name for name, _, _ in flag_settings()}


@pytest.mark.parametrize(("name", "spec"), [(n, s) for n, _, s in flag_settings()], ids=lambda x: str(x)[:20])
def test_every_setting_is_read_from_its_environment_variable(name: str, spec: Any) -> None:
    text, expected = NON_DEFAULT[name]
    config, process = parse([], env={spec.env: text})
    value = getattr(config if hasattr(config, name) else process, name)
    assert value == expected


def test_claiming_ahead_is_on_unless_turned_off() -> None:
    assert parse([])[0].claim_ahead is True
    assert parse(["--no-claim-ahead"])[0].claim_ahead is False
    assert parse(["--claim-ahead"], env={"PGQUEUE_CLAIM_AHEAD": "0"})[0].claim_ahead is True
    off = WorkerConfig(claim_ahead=False)
    assert "--no-claim-ahead" in worker_argv(off, ProcessSettings())
    assert parse(worker_argv(off, ProcessSettings()))[0] == off


def test_a_flag_overrides_its_environment_variable() -> None:
    config, _ = parse(["--concurrency", "3"], env={"PGQUEUE_CONCURRENCY": "9"})
    assert config.concurrency == 3


def test_the_listen_url_is_read_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_LISTEN_DATABASE_URL", "postgresql://direct/db")
    assert WorkerConfig().listen_database_url == "postgresql://direct/db"
    assert WorkerConfig(listen_database_url="postgresql://given/db").listen_database_url == "postgresql://given/db"
    monkeypatch.delenv("PGQUEUE_LISTEN_DATABASE_URL")
    assert WorkerConfig().listen_database_url is None


# --- bad values --------------------------------------------------------------------------------------

BAD = [
    ("concurrency", 0), ("concurrency", 10_001), ("concurrency", 2.5), ("concurrency", True),
    ("poll_interval", 0), ("poll_interval", float("nan")), ("poll_interval", float("inf")),
    ("shutdown_grace", -1), ("shutdown_grace", 86401), ("lease_seconds", 0.5), ("lease_seconds", "15"),
    ("rescue_interval", 0), ("prune_interval", 0.01), ("completed_retention", -1),
    ("metrics_port", 0), ("metrics_port", 65536), ("metrics_port", "9100"),
    ("failed_retention", float("nan")), ("xmin_warning", 0), ("burst", "yes"), ("listen", None),
    ("queues", "emails"), ("queues", [""]), ("queues", ["ok", "bell\x07"]), ("worker_id", ""),
    ("worker_id", "x" * 500), ("event_loop", "trio"), ("event_loop", None),
]


@pytest.mark.parametrize(("name", "value"), BAD, ids=[f"{n}={v!r}"[:40] for n, v in BAD])
def test_a_bad_value_is_refused_naming_the_setting(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        WorkerConfig(**{name: value}).validated()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--poll-interval", "nan"], "--poll-interval"),
        (["--shutdown-grace", "nan"], "--shutdown-grace"),
        (["--lease-seconds", "inf"], "--lease-seconds"),
        (["--queues", "a,,b"], "--queues"),
        (["--processes", "0"], "--processes"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_a_bad_flag_is_refused_naming_the_flag(args: list[str], flag: str) -> None:
    with pytest.raises(ValueError, match=f"(?s)exit 2: .*{flag}"):
        parse(args)


# --- the supervisor's child command line ----------------------------------------------------------------

CONFIGS = [
    (WorkerConfig(), ProcessSettings()),
    (
        WorkerConfig(
            queues=["emails", "pdf"], concurrency=123, burst=True, poll_interval=0.125, shutdown_grace=0,
            listen=False, lease_seconds=2.5, rescue_interval=0.05, prune_interval=86400,
            completed_retention=0, failed_retention=1e-3, xmin_warning=315360000, async_commit=True,
            event_loop="uvloop",
        ),
        ProcessSettings(processes=4, log_level="warning", log_format="json"),
    ),
]


@pytest.mark.parametrize(("config", "process"), CONFIGS)
def test_the_child_argv_round_trips(config: WorkerConfig, process: ProcessSettings) -> None:
    assert parse(worker_argv(config, process)) == (config, process)


def test_the_child_argv_does_not_depend_on_the_environment() -> None:
    config = WorkerConfig(queues=["a"], concurrency=3)
    # An unset optional number (metrics_port, vacuum_interval) is, like an unset list, left to the
    # inherited environment.
    noisy = {
        spec.env: "garbage"
        for _, _, spec in flag_settings()
        if spec.env and spec.kind is not bool and not (spec.optional and spec.kind in (int, float))
    }
    with pytest.raises(ValueError):
        parse([], env=noisy)
    assert parse(worker_argv(config, ProcessSettings()), env=noisy) == (config, ProcessSettings())


def test_a_child_runs_one_process() -> None:
    command = child_command("tasks:app", WorkerConfig(), ProcessSettings(processes=8))
    assert command[1:5] == ["-m", "pgqueue", "work", "tasks:app"]
    assert parse(command[5:])[1].processes == 1


# --- job options: job, then task, then app ---------------------------------------------------------


def test_resolve_option_takes_the_job_then_the_task_then_the_app() -> None:
    task = JobOptions(retry_delay=2.0, timeout=5.0)
    app = JobOptions(retry_delay=1.0, max_attempts=5)
    assert resolve_option("retry_delay", 3.0, task, app) == 3.0
    assert resolve_option("retry_delay", None, task, app) == 2.0
    assert resolve_option("max_attempts", None, task, app) == 5
    assert resolve_option("max_attempts", None, None, app) == 5
    assert resolve_option("retry_backoff", None, task, app) is None
    assert resolve_option("retry_backoff", False, task, JobOptions(retry_backoff=True)) is False
