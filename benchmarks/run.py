"""Run the benchmark suite: ``python -m benchmarks.run [--quick | --scale] [--rounds N] [--dsn DSN]``.

Creates a throwaway database on the server, measures the raw-SQL ceiling and pgqueue in the
same run, drops the database, and prints markdown tables: each side's figures, then pgqueue
beside the matching ceiling as a ratio. Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from . import ceiling, pgqueue_scale, pgqueue_scenarios, pgqueue_workers
from .harness import (
    FULL,
    QUICK,
    SCALE,
    Bench,
    Result,
    Sizes,
    describe_server,
    resolve_dsn,
    throwaway_database,
)
from .tasks import NOOP, NOOP_SYNC


@dataclass(frozen=True)
class Comparison:
    """One row of the ratio table: a pgqueue figure over a baseline figure.

    Figures are ``(result key, metric)``; the metric is ``"value"`` (the headline) or a name in
    the result's metrics. ``target`` is ``(">=", 0.9)`` or ``("<=", 1.0)`` on the ratio, or on
    pgqueue's figure itself when ``absolute`` (e.g. p99 <= 5 ms). A row without a baseline
    shows pgqueue's figure alone (and is always ``absolute``).
    """

    title: str
    pgqueue: tuple[str, str]
    baseline: tuple[str, str] | None
    target: tuple[str, float] | None = None
    absolute: bool = False


def _c(
    title: str,
    pgq: str,
    base: str | None,
    target: tuple[str, float] | None = None,
    absolute: bool = False,
) -> Comparison:
    def split(ref: str) -> tuple[str, str]:
        key, _, metric = ref.partition(":")
        return key, metric or "value"

    return Comparison(title, split(pgq), split(base) if base else None, target, absolute or base is None)


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def comparisons(sizes: Sizes) -> Sequence[Comparison]:
    """The ratio table's rows (the scale rows name the run's sizes)."""
    big, small = _count(sizes.scale_big), _count(sizes.scale_small)
    retention = pgqueue_scale.SHORT_RETENTION["completed_retention"]
    return (
        _c("enqueue 1/tx, 1 client, notify on", "pgq.enqueue.c1", "raw.enqueue.c1", (">=", 0.9)),
        _c("  same, against raw INSERT + NOTIFY", "pgq.enqueue.c1", "raw.enqueue.c1.notify"),
        _c("  floor: pgqueue's INSERT on its table, no client code",
           "pgq.enqueue.floor.c1", "raw.enqueue.c1"),
        _c("  enqueue against that floor (pgqueue's client code)", "pgq.enqueue.c1", "pgq.enqueue.floor.c1"),
        _c("enqueue 1/tx, 4 clients, notify on", "pgq.enqueue.c4", "raw.enqueue.c4", (">=", 0.9)),
        _c("  same, against raw INSERT + NOTIFY", "pgq.enqueue.c4", "raw.enqueue.c4.notify"),
        _c("bulk enqueue (enqueue_many vs COPY)", "pgq.bulk", "raw.bulk.copy", (">=", 0.5)),
        _c("  same, against INSERT ... unnest", "pgq.bulk", "raw.bulk.unnest"),
        _c("drain, async no-op, 1 worker process", "pgq.drain.async.p1", "raw.drain.best", (">=", 0.45)),
        _c("drain, async no-op, 2 worker processes", "pgq.drain.async.p2", "raw.drain.best", (">=", 0.65)),
        _c("drain, sync no-op, 1 worker process", "pgq.drain.sync.p1", "raw.drain.best"),
        _c("drain, sync no-op, 2 worker processes", "pgq.drain.sync.p2", "raw.drain.best"),
        _c("  async, 1 process, default INFO logs", "pgq.drain.async.p1.info", "raw.drain.best"),
        _c("  async, 1 process, --no-claim-ahead", "pgq.drain.async.p1.no_claim_ahead", "raw.drain.best"),
        _c("  async, 1 process, --async-commit", "pgq.drain.async.p1.async_commit", "raw.drain.best"),
        _c("  async, 2 processes, --async-commit", "pgq.drain.async.p2.async_commit", "raw.drain.best"),
        _c(f"  async, 1 process, --concurrency {sizes.tuned_concurrency}",
           f"pgq.drain.async.p1.c{sizes.tuned_concurrency}", "raw.drain.best"),
        _c(f"  async, 2 processes, --concurrency {sizes.tuned_concurrency}",
           f"pgq.drain.async.p2.c{sizes.tuned_concurrency}", "raw.drain.best"),
        _c("worker peak RSS, concurrency 100 (MB)", "pgq.drain.async.p1:rss_mb", None, ("<=", 120.0)),
        _c("  RSS growth over the drain (MB)", "pgq.drain.async.p1:rss_growth_mb", None),
        _c("pick-up p50, LISTEN", "pgq.latency.listen", "raw.latency.pickup", ("<=", 1.2)),
        _c("pick-up p99, LISTEN (ms)", "pgq.latency.listen:p99", "raw.latency.pickup:p99", ("<=", 3.0), True),
        _c("pick-up p50, --no-listen", "pgq.latency.poll", "raw.latency.pickup"),
        _c("  pick-up p50, LISTEN, --async-commit", "pgq.latency.listen.async_commit", "raw.latency.pickup"),
        _c("  pick-up p99, LISTEN, --async-commit (ms)", "pgq.latency.listen.async_commit:p99",
           "raw.latency.pickup:p99", None, True),
        _c("  pick-up p50, floor: LISTEN + claim_one, no worker", "pgq.latency.floor", "raw.latency.pickup"),
        _c("8 workers x 50, 10 ms handlers", "pgq.many_workers", "raw.drain.best"),
        _c("  database connections, 8 workers (peak)", "pgq.many_workers:connections", None),
        _c(
            f"drain with {big} backlog / with {small}",
            "pgq.scale.backlog_big",
            "pgq.scale.backlog_small",
            (">=", 0.8),
        ),
        _c(
            f"claim rate with {big} finished kept / with none",
            "pgq.scale.retained",
            "pgq.scale.backlog_small",
            (">=", 0.9),
        ),
        _c(
            f"enqueue 1/tx with {big} finished kept / with none",
            "pgq.scale.enqueue_retained",
            "pgq.scale.enqueue_empty",
        ),
        _c(
            f"table + indexes after {_count(sizes.churn_jobs)} churn, defaults (MB)",
            "pgq.churn.defaults",
            None,
        ),
        _c(f"  same, completed_retention {retention:g} s (MB)", "pgq.churn.short", None),
    )


# --- formatting ---------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _figure(result: Result, metric: str = "value") -> str:
    value = result.metric(metric)
    if metric.endswith("_mb") or (metric == "value" and result.unit == "MB"):
        return f"{value:,.1f} MB"
    if metric == "connections":
        return f"{value:,.0f} connections"
    if result.unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f} jobs/s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        spread = ""
        if "p95" in r.metrics:
            spread = f"p95 {r.metrics['p95']:.2f} / p99 {r.metrics['p99']:.2f} / max {r.metrics['max']:.2f}"
        rows.append(
            [
                r.title,
                _figure(r),
                spread or "—",
                _num(r.wal_bytes_per_job),
                _num(r.wal_fpi_bytes_per_job),
                _num(r.wal_syncs_per_job, 2),
                _num(r.rows_per_job, 2),
                _num(r.client_cpu_us_per_job),
                r.note,
            ]
        )
    return _table(
        [
            "scenario",
            "result",
            "latency spread (ms)",
            "WAL B/job",
            "FPI B/job",
            "WAL flushes/job",
            "rows/job",
            "client CPU µs/job",
            "note",
        ],
        rows,
    )


def comparison_table(results: dict[str, Result], rows_of: Sequence[Comparison]) -> str:
    rows = []
    for c in rows_of:
        mine = results.get(c.pgqueue[0])
        base = results.get(c.baseline[0]) if c.baseline else None
        pgq_cell = _figure(mine, c.pgqueue[1]) if mine else "not measured"
        base_cell = "—" if c.baseline is None else _figure(base, c.baseline[1]) if base else "not measured"
        ratio_cell, met_cell = "—", "—"
        if mine and base and c.baseline:
            ratio_cell = f"{mine.metric(c.pgqueue[1]) / base.metric(c.baseline[1]):.2f}"
        if mine and c.target and (base or c.absolute):
            subject = mine.metric(c.pgqueue[1]) if c.absolute else float(ratio_cell)
            op, bound = c.target
            met_cell = "yes" if (subject >= bound if op == ">=" else subject <= bound) else "**no**"
        target_cell = "—"
        if c.target:
            op = "≥" if c.target[0] == ">=" else "≤"
            unit = (" MB" if c.pgqueue[1].endswith("_mb") else " ms") if c.absolute else " ×"
            target_cell = f"{op} {c.target[1]:g}{unit}"
        rows.append([c.title, pgq_cell, base_cell, ratio_cell, target_cell, met_cell])
    return _table(["comparison", "pgqueue", "baseline", "pgqueue / baseline", "target", "met"], rows)


def report(bench: Bench, server: str, started: float, load: tuple[float, float]) -> str:
    raw = [r for k, r in bench.results.items() if k.startswith("raw.")]
    mine = [r for k, r in bench.results.items() if k.startswith("pgq.")]
    wal = (
        "WAL bytes are this database's own (pg_walinspect)."
        if bench.walinspect
        else "WAL bytes are server-wide (pg_walinspect unavailable)."
    )
    flushes = (
        f"WAL flushes are server-wide ({bench.wal_flushes.description})."
        if bench.wal_flushes.sql
        else f"WAL flushes/job {bench.wal_flushes.description}."
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        f"## pgqueue benchmarks ({bench.sizes.name} sizes), {when}",
        "",
        (
            f"{server}. Run took {time.monotonic() - started:.0f} s; load average "
            f"{load[0]:.2f} before, {load[1]:.2f} after. {wal} {flushes}"
        ),
    ]
    if raw:
        parts += ["", "### Raw-SQL ceiling", "", results_table(raw)]
    if mine:
        parts += ["", "### pgqueue", "", results_table(mine)]
    parts += ["", "### pgqueue / ceiling", "", comparison_table(bench.results, comparisons(bench.sizes))]
    return "\n".join(parts) + "\n"


# --- entry point --------------------------------------------------------------------------

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Step(NamedTuple):
    suite: str
    """``ceiling`` or ``pgqueue``."""
    name: str
    """What ``--scenario`` matches: the key of the result the step records (or their common prefix)."""
    run: Callable[[Bench], object]
    once: bool = False
    """Run in the first round only (the long churn runs)."""


SETUP: dict[str, Callable[[Bench], None]] = {
    "ceiling": ceiling.setup,
    "pgqueue": pgqueue_scenarios.setup,
}


def plan(bench: Bench) -> list[Step]:
    """Every scenario, each pgqueue one right after the ceiling it is compared to, so both
    see the same machine weather."""
    sizes = bench.sizes
    steps: list[Step] = [
        Step("ceiling", "raw.enqueue.c1", lambda b: ceiling.enqueue(b, 1, notify=False)),
        Step("pgqueue", "pgq.enqueue.c1", lambda b: pgqueue_scenarios.enqueue(b, 1)),
        Step("ceiling", "raw.enqueue.c1.notify", lambda b: ceiling.enqueue(b, 1, notify=True)),
        Step("pgqueue", "pgq.enqueue.floor.c1", lambda b: pgqueue_scenarios.enqueue(b, 1, floor=True)),
        Step("ceiling", "raw.enqueue.c4", lambda b: ceiling.enqueue(b, 4, notify=False)),
        Step("pgqueue", "pgq.enqueue.c4", lambda b: pgqueue_scenarios.enqueue(b, 4)),
        Step("ceiling", "raw.enqueue.c4.notify", lambda b: ceiling.enqueue(b, 4, notify=True)),
        Step("ceiling", "raw.bulk.copy", ceiling.bulk_copy),
        Step("pgqueue", "pgq.bulk", pgqueue_scenarios.bulk),
        Step("ceiling", "raw.bulk.unnest", ceiling.bulk_unnest),
    ]
    for batch in sizes.drain_batches:
        for connections in sizes.drain_connections:
            steps.append(
                Step(
                    "ceiling",
                    f"raw.drain.k{batch}.c{connections}",
                    lambda b, k=batch, c=connections: ceiling.drain(b, k, c),
                )
            )
    steps += [
        Step("pgqueue", "pgq.drain.async.p1", lambda b: pgqueue_workers.drain(b, NOOP, 1)),
        Step("pgqueue", "pgq.drain.async.p2", lambda b: pgqueue_workers.drain(b, NOOP, 2)),
        Step("pgqueue", "pgq.drain.sync.p1", lambda b: pgqueue_workers.drain(b, NOOP_SYNC, 1)),
        Step("pgqueue", "pgq.drain.sync.p2", lambda b: pgqueue_workers.drain(b, NOOP_SYNC, 2)),
        Step("pgqueue", "pgq.drain.async.p1.no_claim_ahead",
             lambda b: pgqueue_workers.drain(b, NOOP, 1, claim_ahead=False)),
        Step("pgqueue", "pgq.drain.async.p1.async_commit",
             lambda b: pgqueue_workers.drain(b, NOOP, 1, async_commit=True)),
        Step("pgqueue", "pgq.drain.async.p2.async_commit",
             lambda b: pgqueue_workers.drain(b, NOOP, 2, async_commit=True)),
        Step("pgqueue", f"pgq.drain.async.p1.c{sizes.tuned_concurrency}",
             lambda b: pgqueue_workers.drain(b, NOOP, 1, concurrency=b.sizes.tuned_concurrency)),
        Step("pgqueue", f"pgq.drain.async.p2.c{sizes.tuned_concurrency}",
             lambda b: pgqueue_workers.drain(b, NOOP, 2, concurrency=b.sizes.tuned_concurrency)),
        Step(
            "pgqueue",
            "pgq.drain.async.p1.info",
            lambda b: pgqueue_workers.drain(b, NOOP, 1, log_level="info"),
            once=True,
        ),
        Step("ceiling", "raw.latency", ceiling.latency),
        Step("pgqueue", "pgq.latency.listen", lambda b: pgqueue_workers.latency(b, listen=True)),
        Step("pgqueue", "pgq.latency.poll", lambda b: pgqueue_workers.latency(b, listen=False)),
        Step(
            "pgqueue",
            "pgq.latency.listen.async_commit",
            lambda b: pgqueue_workers.latency(b, listen=True, async_commit=True),
        ),
        Step("pgqueue", "pgq.latency.floor", pgqueue_workers.latency_floor),
        Step("pgqueue", "pgq.many_workers", pgqueue_workers.many_workers),
        Step("pgqueue", "pgq.scale.backlog_small", pgqueue_scale.small_backlog),
        Step("pgqueue", "pgq.scale.backlog_big", pgqueue_scale.big_backlog),
        Step("pgqueue", "pgq.scale.retained", pgqueue_scale.retained),
        Step(
            "pgqueue",
            "pgq.churn.defaults",
            lambda b: pgqueue_scale.churn(b, short_retention=False),
            once=True,
        ),
        Step("pgqueue", "pgq.churn.short", lambda b: pgqueue_scale.churn(b, short_retention=True), once=True),
    ]
    return steps


def run(bench: Bench, suites: Sequence[str], rounds: int, scenarios: Sequence[str] = ()) -> None:
    for suite in suites:
        SETUP[suite](bench)
    steps = [
        step
        for step in plan(bench)
        if step.suite in suites and (not scenarios or any(s in step.name for s in scenarios))
    ]
    for round_ in range(1, rounds + 1):
        if rounds > 1:
            bench.log(f"round {round_} of {rounds}:")
        for step in steps:
            if round_ == 1 or not step.once:
                step.run(bench)
    ceiling.best_drain(bench)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every scenario")
    parser.add_argument(
        "--dsn",
        help="server to run on; a throwaway database is created there "
        "(default: $PGQUEUE_BENCH_DSN, else postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--only", choices=sorted(SETUP), action="append", help="run only this suite (repeatable)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="run only the scenarios whose key contains this text, e.g. pgq.churn or raw.drain (repeatable)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every scenario this many times; report the median round"
    )
    parser.add_argument(
        "--output", help="also write the markdown report here (default: benchmarks/results/<time>-<sizes>.md)"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="full sizes with the million-job scale runs (backlog, finished jobs kept, churn): "
        "several minutes more",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the throwaway database for inspection")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.quick and args.scale:
        parser.error("--quick and --scale do not go together")
    sizes = (
        QUICK if args.quick else dataclasses.replace(FULL, name="full+scale", **SCALE) if args.scale else FULL
    )
    server_dsn = resolve_dsn(args.dsn)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    server = describe_server(server_dsn)
    log(f"{server}; {sizes.name} sizes")
    with throwaway_database(server_dsn, keep=args.keep_db) as dsn:
        bench = Bench(dsn, sizes, log=log)
        try:
            run(
                bench,
                [s for s in SETUP if not args.only or s in args.only],
                max(1, args.rounds),
                args.scenario,
            )
            text = report(bench, server, started, (load_before, os.getloadavg()[0]))
        finally:
            bench.close()
    print(text)
    output = args.output or os.path.join(
        RESULTS_DIR, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{sizes.name}.md"
    )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as out:
        out.write(text)
    log(f"report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
