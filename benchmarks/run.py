"""Run the benchmark suite: ``python -m benchmarks.run [--quick] [--dsn DSN]``.

Creates a throwaway database on the server, measures the raw-SQL ceiling and pgqueue in the
same run, drops the database, and prints markdown tables: each side's figures, then pgqueue
beside the matching ceiling as a ratio. Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import ceiling, pgqueue_scenarios
from .harness import FULL, QUICK, Bench, Result, describe_server, resolve_dsn, throwaway_database


@dataclass(frozen=True)
class Comparison:
    """One row of the ratio table: a pgqueue figure over a baseline figure.

    Figures are ``(result key, metric)``; the metric is ``"value"`` (the headline) or a name in
    the result's metrics. ``target`` is ``(">=", 0.9)`` or ``("<=", 1.0)`` on the ratio, or on
    pgqueue's figure itself when ``absolute`` (e.g. p99 <= 5 ms).
    """

    title: str
    pgqueue: tuple[str, str]
    baseline: tuple[str, str]
    target: tuple[str, float] | None = None
    absolute: bool = False


def _c(
    title: str, pgq: str, base: str, target: tuple[str, float] | None = None, absolute: bool = False
) -> Comparison:
    def split(ref: str) -> tuple[str, str]:
        key, _, metric = ref.partition(":")
        return key, metric or "value"

    return Comparison(title, split(pgq), split(base), target, absolute)


COMPARISONS: Sequence[Comparison] = (
    _c("enqueue 1/tx, 1 client, notify on", "pgq.enqueue.c1", "raw.enqueue.c1", (">=", 0.9)),
    _c("  same, against raw INSERT + NOTIFY", "pgq.enqueue.c1", "raw.enqueue.c1.notify"),
    _c("enqueue 1/tx, 4 clients, notify on", "pgq.enqueue.c4", "raw.enqueue.c4", (">=", 0.9)),
    _c("  same, against raw INSERT + NOTIFY", "pgq.enqueue.c4", "raw.enqueue.c4.notify"),
    _c("bulk enqueue (enqueue_many vs COPY)", "pgq.bulk", "raw.bulk.copy", (">=", 0.6)),
    _c("  same, against INSERT ... unnest", "pgq.bulk", "raw.bulk.unnest"),
    _c("drain, async no-op, 1 worker process", "pgq.drain.async.p1", "raw.drain.best", (">=", 0.5)),
    _c("drain, async no-op, 2 worker processes", "pgq.drain.async.p2", "raw.drain.best", (">=", 0.7)),
    _c("drain, sync no-op, 1 worker process", "pgq.drain.sync.p1", "raw.drain.best"),
    _c("drain, sync no-op, 2 worker processes", "pgq.drain.sync.p2", "raw.drain.best"),
    _c("pick-up p50, LISTEN", "pgq.latency.listen", "raw.latency.pickup", ("<=", 1.0)),
    _c(
        "pick-up p99, LISTEN (ms)",
        "pgq.latency.listen:p99",
        "raw.latency.pickup:p99",
        ("<=", 5.0),
        absolute=True,
    ),
    _c("pick-up p50, --no-listen", "pgq.latency.poll", "raw.latency.pickup"),
    _c("drain with 1M backlog / with 10k", "pgq.scale.backlog_1m", "pgq.scale.backlog_10k", (">=", 0.8)),
    _c(
        "claim rate with 1M retained / with none",
        "pgq.scale.retained_1m",
        "pgq.scale.backlog_10k",
        (">=", 0.9),
    ),
    _c("8 workers x 50, 10 ms handlers", "pgq.many_workers", "raw.drain.best"),
)

# --- formatting ---------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _figure(result: Result, metric: str = "value") -> str:
    value = result.metric(metric)
    return f"{value:,.2f} ms" if result.unit == "ms" else f"{value:,.0f} jobs/s"


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


def comparison_table(results: dict[str, Result]) -> str:
    rows = []
    for c in COMPARISONS:
        mine, base = results.get(c.pgqueue[0]), results.get(c.baseline[0])
        pgq_cell = _figure(mine, c.pgqueue[1]) if mine else "not measured yet"
        base_cell = _figure(base, c.baseline[1]) if base else "not measured yet"
        ratio_cell, met_cell = "—", "—"
        if mine and base:
            ratio = mine.metric(c.pgqueue[1]) / base.metric(c.baseline[1])
            ratio_cell = f"{ratio:.2f}"
            if c.target:
                subject = mine.metric(c.pgqueue[1]) if c.absolute else ratio
                op, bound = c.target
                met_cell = "yes" if (subject >= bound if op == ">=" else subject <= bound) else "**no**"
        target_cell = "—"
        if c.target:
            op = "≥" if c.target[0] == ">=" else "≤"
            target_cell = f"{op} {c.target[1]:g}" + (" ms" if c.absolute else " ×")
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
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        f"## pgqueue benchmarks ({bench.sizes.name} sizes), {when}",
        "",
        (
            f"{server}. Run took {time.monotonic() - started:.0f} s; load average "
            f"{load[0]:.2f} before, {load[1]:.2f} after. {wal} WAL flushes are server-wide."
        ),
    ]
    if raw:
        parts += ["", "### Raw-SQL ceiling", "", results_table(raw)]
    if mine:
        parts += ["", "### pgqueue", "", results_table(mine)]
    parts += ["", "### pgqueue / ceiling", "", comparison_table(bench.results)]
    return "\n".join(parts) + "\n"


# --- entry point --------------------------------------------------------------------------

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

Step = tuple[str, Callable[[Bench], object]]
"""``(suite, scenario)``: the suite is ``ceiling`` or ``pgqueue``."""

SETUP: dict[str, Callable[[Bench], None]] = {
    "ceiling": ceiling.setup,
    "pgqueue": pgqueue_scenarios.setup,
}


def plan(bench: Bench) -> list[Step]:
    """Every scenario, each pgqueue one right after the ceiling it is compared to, so both
    see the same machine weather."""
    sizes = bench.sizes
    steps: list[Step] = [
        ("ceiling", lambda b: ceiling.enqueue(b, 1, notify=False)),
        ("pgqueue", lambda b: pgqueue_scenarios.enqueue(b, 1)),
        ("ceiling", lambda b: ceiling.enqueue(b, 1, notify=True)),
        ("ceiling", lambda b: ceiling.enqueue(b, 4, notify=False)),
        ("pgqueue", lambda b: pgqueue_scenarios.enqueue(b, 4)),
        ("ceiling", lambda b: ceiling.enqueue(b, 4, notify=True)),
        ("ceiling", ceiling.bulk_copy),
        ("pgqueue", pgqueue_scenarios.bulk),
        ("ceiling", ceiling.bulk_unnest),
    ]
    for batch in sizes.drain_batches:
        for connections in sizes.drain_connections:
            steps.append(("ceiling", lambda b, k=batch, c=connections: ceiling.drain(b, k, c)))
    # pgqueue's drain scenarios go here (they compare with the best cell above).
    steps.append(("ceiling", ceiling.latency))
    # pgqueue's pick-up latency scenarios go here; then scale and many workers.
    return steps


def run(bench: Bench, suites: Sequence[str], rounds: int) -> None:
    for suite in suites:
        SETUP[suite](bench)
    steps = [step for suite, step in plan(bench) if suite in suites]
    for round_ in range(1, rounds + 1):
        if rounds > 1:
            bench.log(f"round {round_} of {rounds}:")
        for step in steps:
            step(bench)
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
        "--rounds", type=int, default=1, help="run every scenario this many times; report the median round"
    )
    parser.add_argument(
        "--output", help="also write the markdown report here (default: benchmarks/results/<time>-<sizes>.md)"
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the throwaway database for inspection")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    sizes = QUICK if args.quick else FULL
    server_dsn = resolve_dsn(args.dsn)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    server = describe_server(server_dsn)
    log(f"{server}; {sizes.name} sizes")
    with throwaway_database(server_dsn, keep=args.keep_db) as dsn:
        bench = Bench(dsn, sizes, log=log)
        try:
            run(bench, [s for s in SETUP if not args.only or s in args.only], max(1, args.rounds))
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
