"""The FastAPI example under load: ``POST /register`` (jobs enqueued in the request's
transaction) against ``POST /register-inline`` (the same work before answering), same run.

    python -m benchmarks.fastapi_register                      # 20 clients, 15 s per endpoint (~1 minute)
    python -m benchmarks.fastapi_register --clients 5 --seconds 3

It creates a throwaway database on the server (``--dsn``, ``$PGQUEUE_BENCH_DSN``, else the local
5432), starts ``python -m examples.fastapi_app`` (uvicorn and a worker) on it, loads each endpoint
with httpx clients in turn (inline first, while the worker is idle), then waits for the worker
to finish and counts, for every committed user, its three effects: missing must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.harness import describe_server, percentile, resolve_dsn, throwaway_database

ROOT = Path(__file__).resolve().parent.parent
KINDS = 3  # welcome-email, slack, crm


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_up(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the example app did not come up")
            await asyncio.sleep(0.1)


async def load(base: str, path: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` concurrent clients posting registrations for ``seconds``; latencies and errors."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            started = time.perf_counter()
            try:
                response = await client.post(path, json={"email": f"c{index}-{n}{path[1:]}@example.com"})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        await asyncio.gather(*(client_loop(i, client) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "path": path,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) if latencies else float("nan"),
        "p99": percentile(latencies, 99) if latencies else float("nan"),
    }


def effects_missing(dsn: str) -> tuple[int, int, int]:
    """(users, effects, missing): missing counts the effects committed users still lack."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM effects),"
            "       (SELECT coalesce(sum(%s - coalesce(e.n, 0)), 0) FROM users AS u"
            "        LEFT JOIN (SELECT user_id, count(*) AS n FROM effects GROUP BY user_id) AS e"
            "        ON e.user_id = u.id)",
            (KINDS,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def job_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall()
    return {state: int(n) for state, n in rows}


async def measure(dsn: str, clients: int, seconds: float, drain_timeout: float) -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PGQUEUE_SCHEMA": "pgqueue"}
    server = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_app", "--port", str(port), "--log-level", "error"],
        cwd=ROOT,
        env=env,
    )
    try:
        await wait_up(base)
        print(f"{clients} clients, {seconds:g} s per endpoint", file=sys.stderr)
        inline = await load(base, "/register-inline", clients, seconds)
        queued = await load(base, "/register", clients, seconds)
        print("waiting for the worker to finish the queued jobs...", file=sys.stderr)
        started = time.monotonic()
        while True:
            users, effects, missing = effects_missing(dsn)
            if missing == 0 or time.monotonic() - started > drain_timeout:
                break
            await asyncio.sleep(0.5)
        drained_in = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    counts = job_counts(dsn)

    print(f"\nserver: {describe_server(dsn)}")
    print(f"load: {clients} concurrent clients, {seconds:g} s per endpoint\n")
    print("| endpoint | requests | errors | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in (inline, queued):
        print(
            f"| POST {r['path']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
            f"{r['p50'] * 1000:.1f} | {r['p99'] * 1000:.1f} |"
        )
    print(
        f"\nqueued vs inline: {queued['rps'] / inline['rps']:.1f}x the requests/s, "
        f"p50 {inline['p50'] / queued['p50']:.0f}x lower, p99 {inline['p99'] / queued['p99']:.0f}x lower"
    )
    print(
        f"delivery: {users} committed users, {effects} effects of {users * KINDS} expected, "
        f"missing = {missing} (worker finished {drained_in:.1f} s after the load ended); "
        f"jobs: {counts}"
    )
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fastapi_register")
    parser.add_argument("--dsn", help="server (default $PGQUEUE_BENCH_DSN, else local 5432)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0, help="load per endpoint")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    with throwaway_database(resolve_dsn(args.dsn), keep=args.keep_db) as dsn:
        missing = asyncio.run(measure(dsn, args.clients, args.seconds, args.drain_timeout))
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
